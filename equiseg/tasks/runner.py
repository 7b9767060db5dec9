"""The runs of ``equiseg ablate`` and ``compare`` (and so of ``study``, which calls both): each run is
trained, or taken from where it already finished, then scored -- one flow, so that both commands reuse,
re-score, resume and record their runs alike.

A run is a folder (a training run: ``config.yaml``, ``log.jsonl``, checkpoints) and its record file
there (``row.json`` of ``ablate``, ``result.json`` of ``compare``; the format and the matching of
records is :mod:`.records`). :func:`finish_run` takes, in this order:

1. the run's own finished record (:func:`.records.finished_record`) when it was scored as asked;
2. when it was scored otherwise: its checkpoint, scored again (the old record moved aside, never
   deleted; the new one says ``rescored``, why and where);
3. a record of the same run elsewhere (:func:`.records.find_record`: a record tree, another table's
   folder), taken with ``reused_from``;
4. otherwise it trains: an unfinished run continues from its ``last.pt``, one killed before its first
   checkpoint starts afresh (its files moved aside to ``<folder>.replaced-<time>/``); then its
   checkpoint (``best.pt``, else ``last.pt``) is scored.

Every record is written whole or not at all and, with a record tree, copied there
(:func:`.records.save_record`). What a command measures and how its record is laid out are the
command's: it passes them in. :func:`measure` is the scoring both share: the robustness benchmark and
the contribution analysis, their reports written beside the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from equiseg.analysis import modality_contributions
from equiseg.config import ExperimentConfig
from equiseg.reports.analysis import write_analysis
from equiseg.reports.robustness import write_report
from equiseg.studies.schedules import Schedule
from equiseg.utils import write_json_atomic

from .records import (
    find_record,
    finished_record,
    machine_info,
    run_checkpoint,
    save_record,
    set_aside,
)

__all__ = ["Measured", "Outcome", "Run", "finish_run", "measure", "search_roots", "with_schedule"]

Record = dict[str, Any]


def with_schedule(
    overrides: Sequence[str], schedule: Schedule | None, max_samples: int | None
) -> tuple[list[str], int | None]:
    """The overrides every run of a command gets (the schedule's first, the user's on top) and the number
    of val samples it scores (the schedule's unless given)."""
    if schedule is None:
        return list(overrides), max_samples
    return [*schedule.overrides, *overrides], schedule.max_samples if max_samples is None else max_samples


def search_roots(records: str | Path | None, roots: Sequence[str | Path] | None) -> list[Path]:
    """The record trees searched for a finished run: ``roots`` when given, else the tree the command
    saves its records to (if any)."""
    return [Path(r) for r in (roots if roots is not None else [records] if records else [])]


@dataclass(frozen=True)
class Run:
    """One run: its folder, its resolved config, its record file's name (a key of
    :data:`.records.RECORD_NAMES`) and where the record is copied (a folder of a record tree; None: not
    copied)."""

    work: Path
    cfg: ExperimentConfig
    record: str
    record_copy: Path | None = None


@dataclass(frozen=True)
class Outcome:
    """A finished run's ``record`` and how it was had: ``"finished"`` (its own, as it was),
    ``"rescored"``, ``"reused"`` (a record elsewhere) or ``"trained"``."""

    record: Record
    how: str


def _keep(run: Run, record: Record) -> Record:
    write_json_atomic(run.work / run.record, record)  # a killed write never leaves half a record
    if run.record_copy is not None:
        save_record(run.work, run.record_copy, run.record)
    return record


def finish_run(
    run: Run,
    *,
    num_samples: int,
    device: Any,
    score: Callable[[Any], Record],
    trained: Callable[[Any, Path, Record, float, float], Record],
    rescored: Callable[[Record, Record, float], Record],
    reused: Callable[[Record], Record],
    roots: Sequence[Path] = (),
    own: bool = True,
    resume: bool = True,
    progress: bool = True,
) -> Outcome:
    """Finish ``run`` (see the module docstring for the order) and return its record.

    Args:
        run: The run.
        num_samples: The number of val samples it is scored on (a record scored on another number is
            not taken as it is).
        device: Where the model is loaded and scored.
        score: ``score(model)``: the command's measurements of a loaded model.
        trained: ``trained(train_result, checkpoint, scores, train_seconds, eval_seconds)``: the record
            of a run trained here (``machine`` and ``config`` are added after it).
        rescored: ``rescored(old, scores, eval_seconds)``: what a re-scored run's record changes; the
            record is the old one (without ``reused_from``) updated with it, with ``checkpoint``,
            ``rescored`` and ``config``.
        reused: ``reused(found)``: the record of a run taken from a record elsewhere (``config`` is
            added after it).
        roots: Where a record of the same run may be found (searched recursively).
        own: Take the run's own finished record (``compare`` always; ``ablate`` under ``--resume``).
        resume: Continue an unfinished run from its ``last.pt``.
        progress: Progress bars while training.
    """
    from equiseg.api import load_model
    from equiseg.engine.rundir import holds_run
    from equiseg.engine.train import train

    work, cfg = run.work, run.cfg
    found = finished_record(work / run.record, cfg, num_samples, device=device) if own else None
    if found is not None and not found.stale:
        return Outcome(found.record, "finished")
    ckpt = run_checkpoint(work)
    if found is not None:
        moved = set_aside(work / run.record)
        if ckpt is not None:  # the same training, scored another way: score its checkpoint again
            why = "; ".join(found.stale)
            print(f"note: {work}: re-scoring {ckpt.name} ({why}); the old {run.record} is now {moved.name}")
            t0 = time.perf_counter()
            model = load_model(ckpt, device=device)
            scores = score(model)
            del model
            old = {k: v for k, v in found.record.items() if k != "reused_from"}
            update = rescored(old, scores, round(time.perf_counter() - t0, 1))
            why_rescored = {"because": found.stale, "machine": machine_info()}
            record = {
                **old,
                **update,
                "checkpoint": str(ckpt),
                "rescored": why_rescored,
                "config": cfg.to_dict(),
            }
            return Outcome(_keep(run, record), "rescored")
    done = find_record(roots, cfg, num_samples, run.record, device=device)
    if done is not None:
        work.mkdir(parents=True, exist_ok=True)
        return Outcome(_keep(run, {**reused(done), "config": cfg.to_dict()}), "reused")
    t0 = time.perf_counter()
    # an unfinished run (killed mid-training) continues from its last.pt; one killed before its first
    # checkpoint starts afresh (train moves its files aside, nothing is deleted)
    resuming = resume and (work / "last.pt").is_file()
    restart = not resuming and bool(holds_run(work))
    result = train(cfg, work_dir=work, progress=progress, resume=resuming or None, overwrite=restart)
    if result.interrupted:
        raise KeyboardInterrupt
    t1 = time.perf_counter()
    ckpt = run_checkpoint(work)
    model = load_model(ckpt, device=device)
    scores = score(model)
    del model
    record = trained(result, ckpt, scores, round(t1 - t0, 1), round(time.perf_counter() - t1, 1))
    return Outcome(_keep(run, {**record, "machine": machine_info(), "config": cfg.to_dict()}), "trained")


@dataclass(frozen=True)
class Measured:
    """What :func:`measure` measured: the benchmark's result, the analysis (None where the model has no
    per-modality features) and the precision the network ran in."""

    robustness: Record
    analysis: Record | None
    precision: str


def measure(
    model: Any,
    val: Any,
    cfg: ExperimentConfig,
    *,
    device: Any,
    out_dir: Path,
    name: str,
    tests: Sequence[str],
    progress: bool = True,
) -> Measured:
    """The robustness benchmark (``tests``, docs/design.md §6) and, where the model has per-modality
    features, the contribution analysis (docs/design.md §7) of ``model`` on ``val``.

    Predicted as ``equiseg eval`` predicts under ``cfg.eval`` (whole image or sliding windows, scales,
    flip), in the precision ``eval.precision`` resolves to for this model and these samples (as the
    trainer's validation: the same cached verdict), so the clean mIoU is the validation's. The reports
    go beside the run: ``out_dir/robustness/robustness.json``/``.md`` and
    ``out_dir/analysis/analysis.json``/``.md``/``.png``.
    """
    from equiseg.engine.inference import forward_crop
    from equiseg.engine.precision import resolve_precision, with_precision
    from equiseg.robustness import run_benchmark

    base = getattr(val, "dataset", val)  # a Subset's data set knows the classes
    mods = list(cfg.data.modalities)
    precision = resolve_precision(
        cfg.eval.precision, device, model=model, data=val, crop=forward_crop(cfg.eval)
    )
    rob = run_benchmark(
        with_precision(model, precision, device),
        val,
        tests=tuple(tests),
        convention=cfg.eval.convention,
        device=device,
        progress=progress,
        modality_names=mods,
        class_names=list(base.classes),
        ignore_index=base.ignore_index,
        model_name=name,
        eval_cfg=cfg.eval,
        split=cfg.data.val_split,
    )
    write_report(rob, out_dir / "robustness", name)
    ana = None
    if getattr(model, "has_modality_features", False):
        ana = modality_contributions(
            model, val, device=device, progress=progress, modality_names=mods, precision=precision
        )
        ana["split"] = cfg.data.val_split
        write_analysis(ana, out_dir / "analysis", title=f"Modality contributions: {name}")
    return Measured(rob, ana, precision)
