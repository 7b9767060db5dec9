"""Ablation runner (paper Tab. 2 and Tab. 3): train every row of an ablation table
with the same seed and schedule, evaluate it, and write one combined table laid out like the paper's.

Rows. Every row starts from the user's config, sets the switches of the paper's full model
(:data:`FULL_MODEL`: self-query hub, cross-attention, residual add, SGM with prototypes, random
pairing, λ = 60 -- the first rows of Tab. 2 and Tab. 3 are that same model, EMM 44.77 in both), then
applies the ``model`` section of the row's override file in ``equiseg/configs/ablations/``
(``tab2_hub_mean.yaml`` …; their ``_base_`` and ``work_dir`` are not used). So the config can be any
experiment -- ``configs/demo.yaml`` or ``configs/deliver_b0.yaml`` -- and a row differs from the first
only by its ablated switch.

Per row: training (``OUT/<row id>/``: checkpoints, log, config), then on the val split (the first
``max_samples`` samples) the clean mIoU and EMM Avg of the robustness protocol
(:func:`~equiseg.robustness.run_benchmark` with ``tests=("emm",)``, batch 1) and the per-modality
cosine similarity with the fused feature (:func:`~equiseg.tasks.analysis.modality_contributions`,
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
numbers), ``OUT/ablation_<table>.json`` and a bar chart ``OUT/ablation_<table>.png``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from equiseg.config import ExperimentConfig, load_experiment, load_yaml
from equiseg.engine.eval_setup import subset
from equiseg.engine.inference import describe_inference, inference_record
from equiseg.utils import check_names, to_jsonable, write_json_atomic

from .analysis import display_name, modality_contributions, write_analysis

# The switches of the paper's full model (first row of both tables); rows change one of them.
FULL_MODEL: dict[str, Any] = {
    "hub": "selfquery",
    "cross_attention": True,
    "residual": True,
    "sgm": True,
    "prototype": True,
    "pairing": "random",
    "lambda_sgm": 60.0,
}

# --quick: a short schedule and a val subset, for the demo setting on a CPU (see `run_ablation`).
# Batch 4 x 80 iterations rather than 8 x 40: on the quick demo data (full model, λ = 60) twice the
# updates for the same images learn far more from scratch at nearly the same training time, and the
# study (18 rows x 3 seeds x 2 inits) fits in an hour (docs/results/benchmarks/code_notes.md).
QUICK_ITERS = 80
QUICK_BATCH = 4
QUICK_MAX_SAMPLES = 16


def short_schedule(iters: int, batch_size: int | None = None, validations: int = 1) -> tuple[str, ...]:
    """Overrides for a run of ``iters`` iterations: 10 % warm-up, ``validations`` evenly spaced
    validations (the last at the end), ``last.pt`` saved at every validation whatever the config's
    ``train.checkpoint_interval`` (a run killed after a validation continues from there), log lines
    every 1/4 (one validation) or every 1/20 of the run, and optionally the batch size (shared by
    ``ablate``, ``compare`` and ``study``)."""
    return (
        f"train.max_iters={iters}",
        f"train.warmup_iters={iters // 10}",
        f"train.val_interval={max(1, iters // validations)}",
        "train.checkpoint_interval=0",
        f"train.log_interval={max(1, iters // (4 if validations == 1 else 20))}",
        *(() if batch_size is None else (f"data.batch_size={batch_size}",)),
    )


QUICK_OVERRIDES: tuple[str, ...] = short_schedule(QUICK_ITERS, QUICK_BATCH)

# --schedule standard: the demo setting (configs/demo.yaml on `equiseg demo`'s data: 400 scenes of 128²,
# batch 8, from scratch) trained as long as this project has measured it. The aim is a schedule whose
# full-model clean mIoU is within about 2 points of a run twice as long; measured (reference convention,
# λ = 60, seed 1; docs/reproduction.md, "A schedule that converges"): 900 -> 40.2 %, 1800 -> 49.1 %,
# 3600 -> 55.3 %, 7200 -> 62.2 % -- each doubling still gains 6-9 points: not converged by that
# criterion, which is out of reach on a 2-core CPU for this setting; 3600 keeps a row near half an
# hour. Every val sample is scored.
STANDARD_ITERS = 3600
STANDARD_BATCH = 8
STANDARD_OVERRIDES: tuple[str, ...] = short_schedule(STANDARD_ITERS, STANDARD_BATCH, validations=3)


@dataclass(frozen=True)
class Schedule:
    """A named training schedule of the study runners: config overrides and the val subset scored."""

    name: str
    overrides: tuple[str, ...]
    max_samples: int | None


SCHEDULES: dict[str, Schedule] = {
    "quick": Schedule("quick", QUICK_OVERRIDES, QUICK_MAX_SAMPLES),
    "standard": Schedule("standard", STANDARD_OVERRIDES, None),
}


def resolve_schedule(
    schedule: str | None, quick: bool, quick_schedule: Schedule | None = None
) -> Schedule | None:
    """The schedule a runner uses: ``schedule`` by name, ``quick=True`` meaning ``"quick"`` (the runner's
    own quick schedule when it has one, e.g. ``compare``'s); None: the config's own schedule."""
    if quick and schedule not in (None, "quick"):
        raise ValueError(f"--quick and --schedule {schedule} disagree: give one of them")
    name = "quick" if quick else schedule
    if name is None:
        return None
    if name not in SCHEDULES:
        raise ValueError(f"--schedule: expected one of {', '.join(SCHEDULES)}, got {name!r}")
    return quick_schedule if name == "quick" and quick_schedule is not None else SCHEDULES[name]


@dataclass(frozen=True)
class AblationRow:
    """One row of an ablation table.

    Attributes:
        id: Short identifier; also the row's work-dir name.
        label: The paper's wording of the row.
        override: File name of the row's override in ``equiseg/configs/ablations/`` (None: the full model).
        paper: The paper's numbers for the row (MiT-B0, DeLiVER): ``mIoU``/``emm_avg`` and/or
            ``similarity`` per modality.
    """

    id: str
    label: str
    override: str | None
    paper: Mapping[str, Any] = field(default_factory=dict)


def _sims(rgb: float, depth: float, event: float, lidar: float) -> dict[str, float]:
    return {"rgb": rgb, "depth": depth, "event": event, "lidar": lidar}


TABLES: dict[str, tuple[str, tuple[AblationRow, ...]]] = {
    "tab2": (
        "Ablation of the CMTB (paper Tab. 2)",
        (
            AblationRow("cmtb", "CMTB", None, {"mIoU": 63.26, "emm_avg": 44.77}),
            AblationRow(
                "hub_mean",
                "with Mean instead Self-Query Hub",
                "tab2_hub_mean.yaml",
                {"mIoU": 62.57, "emm_avg": 42.83},
            ),
            AblationRow(
                "no_cross_attention",
                "without Cross Attention",
                "tab2_no_cross_attention.yaml",
                {"mIoU": 61.92, "emm_avg": 39.36},
            ),
            AblationRow(
                "no_add", "without Add operation", "tab2_no_add.yaml", {"mIoU": 58.69, "emm_avg": 38.61}
            ),
        ),
    ),
    "tab3": (
        "Ablation of the SGM (paper Tab. 3)",
        (
            AblationRow(
                "sgm_lambda60",
                "EQUISeg + SGM (λ=60)",
                None,
                {"similarity": _sims(81.71, 89.72, 29.82, 32.24), "emm_avg": 44.77},
            ),
            AblationRow(
                "no_sgm",
                "without SGM",
                "tab3_no_sgm.yaml",
                {"similarity": _sims(88.14, 93.45, 8.25, 11.35), "emm_avg": 41.54},
            ),
            AblationRow(
                "no_prototype",
                "without Prototype Operation",
                "tab3_no_prototype.yaml",
                {"similarity": _sims(72.22, 80.36, 1.53, 2.16), "emm_avg": 39.84},
            ),
            AblationRow(
                "cosine_pairing",
                "with Cosine Similarity instead Randomly Paired",
                "tab3_cosine_pairing.yaml",
                {"similarity": _sims(82.03, 91.56, 22.66, 24.91), "emm_avg": 43.11},
            ),
            AblationRow(
                "lambda1",
                "EQUISeg + SGM (λ=1)",
                "tab3_lambda1.yaml",
                {"similarity": _sims(85.22, 91.64, 22.47, 26.75), "emm_avg": 43.46},
            ),
            AblationRow(
                "lambda40",
                "EQUISeg + SGM (λ=40)",
                "tab3_lambda40.yaml",
                {"similarity": _sims(83.02, 90.54, 28.11, 30.46), "emm_avg": 44.39},
            ),
            AblationRow(
                "lambda80",
                "EQUISeg + SGM (λ=80)",
                "tab3_lambda80.yaml",
                {"similarity": _sims(78.56, 87.41, 31.21, 32.43), "emm_avg": 44.53},
            ),
        ),
    ),
    # Not a table of the paper: the SGM's two conventions (ModelConfig.sgm_convention) and separate
    # encoders (share_encoder: false), each against the full model as configured.
    "sgm_convention": (
        "SGM conventions and separate encoders (not in the paper)",
        (
            AblationRow("sgm_config", "EQUISeg + SGM (λ=60), the config's convention", None),
            AblationRow("sgm_spec", "SGM, the literal reading (spec)", "sgm_convention_spec.yaml"),
            AblationRow(
                "sgm_reference", "SGM, RobustSeg's arithmetic (reference)", "sgm_convention_reference.yaml"
            ),
            AblationRow("separate_encoders", "one encoder per modality", "separate_encoders.yaml"),
        ),
    ),
    # Not a table of the paper: training on random modality subsets (train.modality_dropout, as the
    # robust peers do), zero-filled as the benchmark's missing modalities, against the full model as is.
    "modality_dropout": (
        "Modality dropout in training (not in the paper)",
        (
            AblationRow("no_dropout", "EQUISeg + SGM (λ=60), every modality in every step", None),
            AblationRow(
                "subset", "random non-empty subset per sample (size uniform)", "modality_dropout_subset.yaml"
            ),
            AblationRow(
                "independent",
                "each modality dropped with p = 0.5 (never all)",
                "modality_dropout_independent.yaml",
            ),
        ),
    ),
    # Not a table of the paper: the three readings of "stage feature" the SGM's prototypes can be
    # taken from (ModelConfig.sgm_features); each is reported, since the paper does not say which it means.
    "sgm_features": (
        "SGM prototypes from which feature (not in the paper)",
        (
            AblationRow("sgm_post_ln", "SGM on the post-LN stage output (default)", None),
            AblationRow(
                "sgm_pre_ln", "SGM on f' + f_c before the stage LayerNorm", "sgm_features_pre_ln.yaml"
            ),
            AblationRow("sgm_pre_cmtb", "SGM on f' before the CMTB", "sgm_features_pre_cmtb.yaml"),
        ),
    ),
}


def ablation_dir() -> Path:
    """The packaged ablation override files (``equiseg/configs/ablations``)."""
    return Path(str(resources.files("equiseg") / "configs" / "ablations"))


def table_rows(table: str, rows: Sequence[str] | None = None) -> tuple[AblationRow, ...]:
    """The rows of ``table`` (a key of :data:`TABLES`), optionally only those with the given ids (in
    table order)."""
    if table not in TABLES:
        raise ValueError(f"unknown ablation table {table!r}; choose from {', '.join(TABLES)}")
    all_rows = TABLES[table][1]
    if rows is None:
        return all_rows
    chosen = check_names(rows, [r.id for r in all_rows], what=f"{table} row", where="--only")
    return tuple(r for r in all_rows if r.id in chosen)


def _row_sections(row: AblationRow) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``model`` and ``train`` sections of the row's override file (either may be empty, not both)."""
    if row.override is None:
        return {}, {}
    path = ablation_dir() / row.override
    data = load_yaml(path)
    model, train = data.get("model") or {}, data.get("train") or {}
    if not isinstance(model, dict) or not isinstance(train, dict) or not (model or train):
        raise ValueError(f"{path}: expected a non-empty 'model' or 'train' section")
    return dict(model), dict(train)


def row_model_overrides(row: AblationRow) -> dict[str, Any]:
    """The row's changes to the full model: the ``model`` section of its override file."""
    return _row_sections(row)[0]


def row_train_overrides(row: AblationRow) -> dict[str, Any]:
    """The row's changes to the training recipe (e.g. ``modality_dropout``): the ``train`` section."""
    return _row_sections(row)[1]


def _merged(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``top``'s keys on top, nested mappings merged key by key."""
    out = dict(base)
    for k, v in top.items():
        out[k] = _merged(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def row_config(base: ExperimentConfig, row: AblationRow, work_dir: str | Path) -> ExperimentConfig:
    """``base`` with the full model's switches, then the row's override, training into ``work_dir``."""
    data = base.to_dict()
    data["model"] = {**data["model"], **FULL_MODEL, **row_model_overrides(row)}
    data["train"] = _merged(data["train"], row_train_overrides(row))
    data["work_dir"] = str(work_dir)
    return load_experiment(data)


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
    _ablation_chart(result, files["chart"])
    files["markdown"].write_text(ablation_markdown(result))
    files["json"].write_text(json.dumps(to_jsonable(result), indent=2, allow_nan=False) + "\n")
    return result


# ---------------------------------------------------------------------------------------------------
# Markdown and chart


def _fmt(v: float | None) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def _with_delta(v: float | None, delta: float | None) -> str:
    return _fmt(v) if delta is None or v is None else f"{_fmt(v)} ({delta:+.2f})"


def _paper_layout(table: str, rows: Sequence[Mapping[str, Any]], mods: Sequence[str]) -> list[str]:
    """Rows in the paper's layout; a row's deltas are shown unless it is the reference (first) row."""

    def delta(r: Mapping[str, Any], key: str) -> float | None:
        return None if r.get("reference") else r.get(f"delta_{key}")

    if table in ("tab2", "modality_dropout"):
        lines = ["| Structure | mIoU(%) | EMM(Avg) |", "|---|---:|---:|"]
        for r in rows:
            lines.append(
                f"| {r['label']} | {_with_delta(r['mIoU'], delta(r, 'mIoU'))} | "
                f"{_with_delta(r['emm_avg'], delta(r, 'emm_avg'))} |"
            )
        return lines
    lines = [
        "| Structure | " + " | ".join(display_name(m) for m in mods) + " | EMM(Avg) |",
        "|---|" + "---:|" * (len(mods) + 1),
    ]
    for r in rows:
        sims = " | ".join(_fmt(r["similarity"].get(m)) for m in mods)
        lines.append(f"| {r['label']} | {sims} | {_with_delta(r['emm_avg'], delta(r, 'emm_avg'))} |")
    return lines


def _paper_rows(table: str, ids: Sequence[str]) -> list[dict[str, Any]]:
    """The paper's numbers of the rows ``ids``, with its deltas against its own first row."""
    ref = TABLES[table][1][0]
    out = []
    for row in TABLES[table][1]:
        if row.id not in ids or not row.paper:
            continue
        r: dict[str, Any] = {
            "label": row.label,
            "reference": row.id == ref.id,
            "similarity": row.paper.get("similarity", {}),
        }
        for key in ("mIoU", "emm_avg"):
            v, v0 = row.paper.get(key), ref.paper.get(key)
            r[key] = v
            r[f"delta_{key}"] = None if v is None or v0 is None else v - v0
        out.append(r)
    return out


def config_line(result: Mapping[str, Any]) -> str:
    """``Config `X` with `overrides` — quick mode ...``: how a study's table was made (ablate, compare)."""
    return (
        f"Config `{result['config'] or '(in memory)'}`"
        + (f" with `{' '.join(result['overrides'])}`" if result["overrides"] else "")
        + (
            " — **quick mode** (short schedule, val subset: not comparable with the paper)"
            if result["quick"]
            else ""
        )
        + (
            f" — the **{result['schedule']}** schedule (`{' '.join(SCHEDULES[result['schedule']].overrides)}`)"
            if result.get("schedule") in SCHEDULES and not result["quick"]
            else ""
        )
    )


def _precisions(rows: Sequence[Mapping[str, Any]]) -> str:
    """``", network forward in fp32"`` (each precision the rows ran, where recorded), else ``""``."""
    ran = sorted({r["precision"] for r in rows if r.get("precision")})
    return f", network forward in {' / '.join(ran)}" if ran else ""


def ablation_markdown(result: Mapping[str, Any]) -> str:
    """The combined ablation table: the paper's layout, every measurement, then the paper's numbers."""
    table, rows, mods = result["table"], result["rows"], result["modalities"]
    first = rows[0]["label"] if rows else "–"
    iters = sorted({r["iterations"] for r in rows})
    measured = [{**r, "reference": i == 0} for i, r in enumerate(rows)]
    lines = [
        f"# {result['title']}",
        "",
        config_line(result)
        + f". Every row trained with the same seed for {', '.join(map(str, iters))} iterations; evaluated on "
        f"{result['num_eval_samples']} sample{'' if result['num_eval_samples'] == 1 else 's'} of the "
        f"{result['split']} split, batch 1, "
        f"{describe_inference(result.get('inference'))}{_precisions(rows)}. mIoU and EMM(Avg) in "
        f"%, **{result['convention']}** metric convention; EMM(Avg) = mean mIoU over the "
        f"{2 ** len(mods) - 1} sets of present modalities with the missing ones zeroed (docs/design.md §6); "
        "similarities = cosine similarity of each modality's last-stage feature with the fused feature, "
        f"in %. Deltas against the first row ({first}).",
        "",
        *_paper_layout(table, measured, mods),
        "",
        "## All measurements",
        "",
        "| Row | Structure | mIoU | EMM(Avg) | "
        + " | ".join(display_name(m) for m in mods)
        + " | best val mIoU (training) | iterations | train s | eval s |",
        "|---|---|" + "---:|" * (len(mods) + 6),
    ]
    for r in rows:
        lines.append(
            f"| `{r['id']}` | {r['label']} | {_fmt(r['mIoU'])} | {_fmt(r['emm_avg'])} | "
            + " | ".join(_fmt(r["similarity"].get(m)) for m in mods)
            + f" | {_fmt(r['best_val_mIoU'])} | {r['iterations']} | {r['seconds']['train']:.0f} "
            f"| {r['seconds']['eval']:.0f} |"
        )
    lines += ["", "Per row: `<row id>/` holds the checkpoints, `robustness/` (EMM tables) and `analysis/`."]
    paper = _paper_rows(table, [r["id"] for r in rows])
    if paper:
        lines += [
            "",
            "## The paper's numbers (MiT-B0 on DeLiVER, full schedule; deltas against its first row)",
            "",
            *_paper_layout(table, paper, ["rgb", "depth", "event", "lidar"]),
        ]
    return "\n".join(lines) + "\n"


def _ablation_chart(result: Mapping[str, Any], path: Path) -> Path:
    from equiseg.reports.figures import bar_chart

    rows = result["rows"]
    return bar_chart(
        [r["id"] for r in rows],
        {"mIoU": [r["mIoU"] for r in rows], "EMM (Avg)": [r["emm_avg"] for r in rows]},
        path,
        title=f"{result['title']}: clean mIoU and EMM (Avg)",
        ylabel="mIoU (%)",
        xlabel="row",
    )
