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

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from equiseg.config import ExperimentConfig, load_experiment
from equiseg.engine.eval_setup import subset
from equiseg.engine.inference import inference_record
from equiseg.reports.ablation import ablation_chart, ablation_markdown
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
from equiseg.utils import write_json_atomic

from .runner import Run, finish_run, measure, search_roots, with_schedule

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
    model: Any, cfg: ExperimentConfig, val_eval: Any, device: Any, work: Path, label: str, progress: bool
) -> dict[str, Any]:
    """A row's measurements on ``val_eval`` (:func:`.runner.measure`, EMM only): the clean mIoU and EMM
    Avg of the benchmark and the last-stage similarities; with what they were scored on."""
    m = measure(
        model, val_eval, cfg, device=device, out_dir=work, name=label, tests=("emm",), progress=progress
    )
    rob, ana = m.robustness, m.analysis
    return {
        "mIoU": rob["summary"]["clean"],
        "emm_avg": rob["summary"]["emm_avg"],
        "similarity": ana["similarity"]["last_stage"],
        "pixel_similarity": ana["pixel_similarity"]["last_stage"],
        "num_eval_samples": len(val_eval),
        "precision": m.precision,
        "inference": rob["inference"],
    }


def _finish_row(
    row: AblationRow,
    run: Run,
    val_eval: Any,
    roots: Sequence[Path],
    *,
    device: Any,
    resume: bool,
    progress: bool,
) -> dict[str, Any]:
    """The record of one row (:func:`.runner.finish_run`): its own when finished (under ``resume``),
    re-scored, taken from a record in ``roots``, or trained and scored here."""
    work = run.work

    def trained(result: Any, ckpt: Path, scores: dict, train_s: float, eval_s: float) -> dict[str, Any]:
        return {
            "id": row.id,
            "label": row.label,
            "model_overrides": row_model_overrides(row),
            "work_dir": str(work),
            "checkpoint": str(ckpt),
            "iterations": result.iterations,
            "best_val_mIoU": result.best_miou,
            **scores,
            "seconds": {"train": train_s, "eval": eval_s},
        }

    def rescored(old: dict, scores: dict, eval_s: float) -> dict[str, Any]:
        return {**scores, "seconds": {**old.get("seconds", {}), "eval": eval_s}}

    def reused(found: dict) -> dict[str, Any]:
        return {**found, "id": row.id, "label": row.label, "model_overrides": row_model_overrides(row)}

    return finish_run(
        run,
        num_samples=len(val_eval),
        device=device,
        score=lambda model: _score_row(model, run.cfg, val_eval, device, work, row.label, progress),
        trained=trained,
        rescored=rescored,
        reused=reused,
        roots=roots,
        own=resume,
        resume=resume,
        progress=progress,
    ).record


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
    from equiseg.engine.builders import build_val_dataset
    from equiseg.engine.device import resolve_device

    from .records import check_run_folder

    selected = table_rows(table, rows)
    user_overrides = list(overrides)
    sched = resolve_schedule(schedule, quick)
    run_overrides, max_samples = with_schedule(user_overrides, sched, max_samples)
    base = load_experiment(config, run_overrides)
    roots = search_roots(records, record_roots)
    out = Path(out_dir)
    device = resolve_device(base.train.device)
    val_eval = subset(build_val_dataset(base.data), max_samples)
    n_eval = len(val_eval)
    mods = list(base.data.modalities)

    # every row's config and folder is checked before the first row trains
    plan = [(row, out / row.id, row_config(base, row, out / row.id)) for row in selected]
    for _, work, cfg in plan:
        check_run_folder(work, "row.json", cfg, n_eval, reuse=resume, device=device)
    out.mkdir(parents=True, exist_ok=True)

    done_rows: list[dict[str, Any]] = []
    for row, work, cfg in plan:
        # a record of the same run may be in a record tree, another table's folder or an earlier row here
        others = [out / r.id for r in selected if r.id != row.id]
        run = Run(work, cfg, "row.json", None if records is None else Path(records) / row.id)
        done_rows.append(_finish_row(row, run, val_eval, [*roots, *reuse_from, *others], device=device,
                                     resume=resume, progress=progress))  # fmt: skip

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
    write_json_atomic(files["json"], result)
    return result
