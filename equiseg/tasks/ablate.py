"""Ablation runner (paper Tab. 2 and Tab. 3): train every row of an ablation table
with the same seed and schedule, evaluate it, and write one combined table laid out like the paper's.

Rows. The tables, their rows and the paper's numbers are :mod:`equiseg.studies.ablation`: every row
starts from the user's config, sets the switches of the paper's full model (:data:`FULL_MODEL`), then
applies its override file in ``equiseg/configs/ablations/``. So the config can be any experiment --
``configs/demo.yaml`` or ``configs/deliver_b0.yaml`` -- and a row differs from the first only by its
ablated switch.

Per row: training (``OUT/<row id>/``: checkpoints, log, config), then on the val split (the first
``max_samples`` samples) the clean mIoU and EMM Avg of the robustness protocol
(:func:`~equiseg.robustness.run_benchmark` with ``tests=("emm",)``, batch 1) and the per-modality
cosine similarity with the fused feature (:func:`~equiseg.analysis.modality_contributions`,
last stage). The checkpoint evaluated is ``best.pt`` (best validation mIoU during training, the
practice of the published numbers), else ``last.pt``. Deltas are against the first row run. The
benchmark predicts as ``equiseg eval`` does under the config's ``eval`` section (whole image or sliding
windows, scales, flip), so a row's clean mIoU is its validation mIoU; each row records its
``inference``, ``precision`` and ``num_eval_samples``.

Folders. Every row folder is checked before the first row trains (:func:`.records.check_run_folder`).
A row killed before its first checkpoint (``config.yaml`` and ``log.jsonl`` only) starts afresh, its
files moved aside to ``<row>.replaced-<time>/``; with ``resume`` an unfinished row continues from its
``last.pt``, and a finished row scored otherwise than asked (another number of samples, inference or
precision) is re-scored from its checkpoint, not retrained.

Outputs: ``OUT/ablation_<table>.md`` (the paper's layout, then every measurement, then the paper's own
numbers), ``OUT/ablation_<table>.json`` and a bar chart ``OUT/ablation_<table>.png``
(:mod:`equiseg.reports.ablation`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from equiseg.analysis import modality_contributions
from equiseg.config import ExperimentConfig, load_experiment
from equiseg.engine.eval_setup import subset
from equiseg.engine.inference import inference_record
from equiseg.reports.ablation import ablation_chart, ablation_markdown
from equiseg.reports.analysis import write_analysis
from equiseg.reports.tables import config_line, display_name
from equiseg.studies.ablation import (
    FULL_MODEL,
    TABLES,
    AblationRow,
    ablation_dir,
    row_config,
    row_model_overrides,
    row_train_overrides,
    table_rows,
)
from equiseg.studies.schedules import (
    QUICK_BATCH,
    QUICK_ITERS,
    QUICK_MAX_SAMPLES,
    QUICK_OVERRIDES,
    SCHEDULES,
    STANDARD_BATCH,
    STANDARD_ITERS,
    STANDARD_OVERRIDES,
    Schedule,
    resolve_schedule,
    short_schedule,
)
from equiseg.utils import to_jsonable, write_json_atomic

# The tables, their rows and schedules live in equiseg.studies, the writers in equiseg.reports; their
# names stay importable from here.
__all__ = [
    "FULL_MODEL",
    "QUICK_BATCH",
    "QUICK_ITERS",
    "QUICK_MAX_SAMPLES",
    "QUICK_OVERRIDES",
    "SCHEDULES",
    "STANDARD_BATCH",
    "STANDARD_ITERS",
    "STANDARD_OVERRIDES",
    "TABLES",
    "AblationRow",
    "Schedule",
    "ablation_dir",
    "ablation_markdown",
    "config_line",
    "display_name",
    "resolve_schedule",
    "row_config",
    "row_model_overrides",
    "row_train_overrides",
    "run_ablation",
    "short_schedule",
    "table_rows",
]


def _score_row(
    model: Any,
    cfg: ExperimentConfig,
    val: Any,
    val_eval: Any,
    mods: Sequence[str],
    device: Any,
    work: Path,
    label: str,
    progress: bool,
) -> dict[str, Any]:
    """A row's measurements on ``val_eval``: the clean mIoU and EMM Avg of the benchmark (predicted as
    ``eval`` predicts under ``cfg.eval``, in the validation's precision, so the clean mIoU is the
    validation mIoU) and the last-stage similarities; with what they were scored on."""
    from equiseg.engine.inference import forward_crop
    from equiseg.engine.precision import resolve_precision, with_precision
    from equiseg.robustness import run_benchmark

    precision = resolve_precision(
        cfg.eval.precision, device, model=model, data=val_eval, crop=forward_crop(cfg.eval)
    )
    rob = run_benchmark(
        with_precision(model, precision, device),
        val_eval,
        tests=("emm",),
        convention=cfg.eval.convention,
        device=device,
        progress=progress,
        modality_names=list(mods),
        class_names=list(val.classes),
        ignore_index=val.ignore_index,
        out_dir=work / "robustness",
        model_name=label,
        eval_cfg=cfg.eval,
        split=cfg.data.val_split,
    )
    ana = modality_contributions(
        model, val_eval, device=device, progress=progress, modality_names=list(mods), precision=precision
    )
    ana["split"] = cfg.data.val_split
    write_analysis(ana, work / "analysis", title=f"Modality contributions: {label}")
    return {
        "mIoU": rob["summary"]["clean"],
        "emm_avg": rob["summary"]["emm_avg"],
        "similarity": ana["similarity"]["last_stage"],
        "pixel_similarity": ana["pixel_similarity"]["last_stage"],
        "num_eval_samples": len(val_eval),
        "precision": precision,
        "inference": rob["inference"],
    }


def run_ablation(
    config: ExperimentConfig | str | Path | dict[str, Any],
    table: str,
    overrides: Iterable[str] = (),
    *,
    out_dir: str | Path = "runs/ablation",
    quick: bool = False,
    schedule: str | None = None,
    rows: Sequence[str] | None = None,
    max_samples: int | None = None,
    resume: bool = False,
    reuse_from: Sequence[str | Path] = (),
    records: str | Path | None = None,
    record_roots: Sequence[str | Path] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train and evaluate every row of ``table`` and write the combined table.

    Args:
        config: The experiment to ablate (config object, YAML path or dict).
        table: ``"tab2"`` (CMTB), ``"tab3"`` (SGM), ``"sgm_convention"``, ``"sgm_features"`` (the SGM's
            feature readings) or ``"modality_dropout"`` (training on random modality subsets).
        overrides: Dotted ``a.b=c`` overrides applied to ``config`` (after the ``quick`` settings).
        out_dir: Gets one work dir per row and the ``ablation_<table>.*`` files.
        quick: A short schedule (:data:`QUICK_OVERRIDES`: ``QUICK_ITERS`` iterations, one validation
            at the end) and the first :data:`QUICK_MAX_SAMPLES` val samples for the evaluation. On the
            demo setting (``configs/demo.yaml``, 96 px data of ``equiseg demo --quick``) a row takes
            well under a minute on 2 CPU cores. The same as ``schedule="quick"``.
        schedule: A named schedule of :data:`SCHEDULES` (``"quick"``, ``"standard"``); None: the
            config's own.
        rows: Only these row ids (table order kept); default all.
        max_samples: Evaluate on the first ``max_samples`` val samples (default: all; quick: 16).
        resume: Reuse rows already finished in ``out_dir`` (their ``row.json``) when their config is
            unchanged (re-scored when only their scoring differs), continue unfinished ones from their
            ``last.pt``; a row trained with another config is an error (use another ``out_dir``).
            Without it, a row folder holding a finished row or a checkpoint is refused up front.
        reuse_from: Other ablation output folders (e.g. another table's, same seed): a row not finished
            here whose training config (all but ``work_dir``) and evaluation subset equal a finished
            row there is taken from it instead of being trained again -- the first rows of Tab. 2 and
            Tab. 3 are the same model. The record says ``reused_from``. Rows of this same table with
            identical configs are also trained once.
        records: Save each finished row's record (:mod:`.records`: no checkpoints) to
            ``records/<row id>/``.
        record_roots: Record trees searched (recursively) for a finished row before training one
            (default: ``[records]``).
        progress: Progress bars.

    Returns:
        The content of ``ablation_<table>.json``: ``table``, ``title``, ``config``, ``overrides``,
        ``quick``, ``split``, ``num_eval_samples``, ``inference``, ``convention``, ``modalities``,
        ``full_model``, ``files`` and ``rows`` -- per row ``id``, ``label``, ``model_overrides``,
        ``work_dir``, ``checkpoint``, ``iterations``, ``best_val_mIoU``, ``mIoU``, ``emm_avg``,
        ``similarity`` and ``pixel_similarity`` (last stage, per modality), ``num_eval_samples``,
        ``precision``, ``inference``, ``delta_mIoU``, ``delta_emm_avg``, ``seconds``, ``paper``
        (``rescored`` when a row was scored again, ``reused_from`` when taken from a record).
    """
    from equiseg.api import load_model
    from equiseg.engine.builders import build_val_dataset
    from equiseg.engine.device import resolve_device
    from equiseg.engine.rundir import holds_run
    from equiseg.engine.train import train

    from .records import (
        check_run_folder,
        find_record,
        finished_record,
        machine_info,
        run_checkpoint,
        save_record,
        set_aside,
    )

    selected = table_rows(table, rows)
    user_overrides = list(overrides)
    sched = resolve_schedule(schedule, quick)
    base = load_experiment(config, [*(sched.overrides if sched else ()), *user_overrides])
    if sched is not None and max_samples is None:
        max_samples = sched.max_samples
    roots = [Path(r) for r in (record_roots if record_roots is not None else [records] if records else [])]
    out = Path(out_dir)
    device = resolve_device(base.train.device)
    val = build_val_dataset(base.data)
    val_eval = subset(val, max_samples)
    n_eval = len(val_eval)
    mods = list(base.data.modalities)

    # every row's config and folder is checked before the first row trains
    plan = [(row, out / row.id, row_config(base, row, out / row.id)) for row in selected]
    for _, work, cfg in plan:
        check_run_folder(work, "row.json", cfg, n_eval, reuse=resume, device=device)
    out.mkdir(parents=True, exist_ok=True)

    def keep(work: Path, row: AblationRow, record: dict[str, Any]) -> None:
        write_json_atomic(work / "row.json", record)  # a killed write never leaves half a record
        if records is not None:
            save_record(work, Path(records) / row.id, "row.json")
        done_rows.append(record)

    done_rows: list[dict[str, Any]] = []
    for row, work, cfg in plan:
        found = finished_record(work / "row.json", cfg, n_eval, device=device) if resume else None
        if found is not None and not found.stale:
            done_rows.append(found.record)
            continue
        ckpt = run_checkpoint(work)
        if found is not None:
            moved = set_aside(work / "row.json")
            if ckpt is not None:  # the same training, scored another way: score its checkpoint again
                why = "; ".join(found.stale)
                print(f"note: {work}: re-scoring {ckpt.name} ({why}); the old record is now {moved.name}")
                t1 = time.perf_counter()
                model = load_model(ckpt, device=device)
                scores = _score_row(model, cfg, val, val_eval, mods, device, work, row.label, progress)
                old = {k: v for k, v in found.record.items() if k != "reused_from"}
                seconds = {**old.get("seconds", {}), "eval": round(time.perf_counter() - t1, 1)}
                rescored = {"because": found.stale, "machine": machine_info()}
                keep(work, row, {**old, "checkpoint": str(ckpt), **scores, "seconds": seconds,
                                 "rescored": rescored, "config": cfg.to_dict()})  # fmt: skip
                del model
                continue
        # a record of the same run (a committed record tree, another table, an earlier row here)
        others = [out / r.id for r in selected if r.id != row.id]
        done = find_record([*roots, *reuse_from, *others], cfg, n_eval, "row.json", device=device)
        if done is not None:
            work.mkdir(parents=True, exist_ok=True)
            keep(work, row, {**done, "id": row.id, "label": row.label, "config": cfg.to_dict(),
                             "model_overrides": row_model_overrides(row)})  # fmt: skip
            continue
        t0 = time.perf_counter()
        # an unfinished row (killed mid-training) continues from its last.pt under --resume; one killed
        # before its first checkpoint starts afresh (its files are moved aside, never deleted)
        resuming = resume and (work / "last.pt").is_file()
        restart = not resuming and bool(holds_run(work))
        trained = train(cfg, work_dir=work, progress=progress, resume=resuming, overwrite=restart)
        if trained.interrupted:
            raise KeyboardInterrupt
        t1 = time.perf_counter()
        ckpt = run_checkpoint(work)
        model = load_model(ckpt, device=device)
        scores = _score_row(model, cfg, val, val_eval, mods, device, work, row.label, progress)
        keep(work, row, {
            "id": row.id,
            "label": row.label,
            "model_overrides": row_model_overrides(row),
            "work_dir": str(work),
            "checkpoint": str(ckpt),
            "iterations": trained.iterations,
            "best_val_mIoU": trained.best_miou,
            **scores,
            "seconds": {"train": round(t1 - t0, 1), "eval": round(time.perf_counter() - t1, 1)},
            "machine": machine_info(),
            "config": cfg.to_dict(),
        })  # fmt: skip
        del model

    for rec, row in zip(done_rows, selected, strict=True):
        rec["delta_mIoU"] = rec["mIoU"] - done_rows[0]["mIoU"]
        rec["delta_emm_avg"] = rec["emm_avg"] - done_rows[0]["emm_avg"]
        rec["paper"] = dict(row.paper)
    result: dict[str, Any] = {
        "table": table,
        "title": TABLES[table][0],
        "config": str(config) if isinstance(config, (str, Path)) else None,
        "overrides": user_overrides,
        "quick": sched is not None and sched.name == "quick",
        "schedule": sched.name if sched else None,
        "split": base.data.val_split,
        "num_eval_samples": n_eval,
        "inference": inference_record(base.eval),
        "convention": base.eval.convention,
        "modalities": mods,
        "full_model": dict(FULL_MODEL),
        "rows": [{k: v for k, v in r.items() if k != "config"} for r in done_rows],
    }
    stem = f"ablation_{table}"
    files = {"json": out / f"{stem}.json", "markdown": out / f"{stem}.md", "chart": out / f"{stem}.png"}
    result["files"] = {k: str(v) for k, v in files.items()}
    ablation_chart(result, files["chart"])
    files["markdown"].write_text(ablation_markdown(result))
    files["json"].write_text(json.dumps(to_jsonable(result), indent=2, allow_nan=False) + "\n")
    return result
