"""``equiseg compare``: EQUISeg and its peers under one protocol, in the layout of the paper's Tab. 1.

For every model and seed: train it under the same data and schedule (or take a given checkpoint), then
on the val split run the clean evaluation, the full robustness benchmark (EMM, RMM at r = 0.25/0.5/0.75,
NM low/mid/high; docs/design.md §6, batch 1, seeded) and the modality-contribution analysis (where the
architecture has per-modality features), and measure its cost (parameters, GFLOPs of one forward at
the evaluation size, inference img/s on this machine). One table in the paper's layout -- mIoU, EMM
Avg, EMM p=0.1, RMM Avg, RMM p=0.1, NM low, NM mid, Mean, #Params, GFLOPs, img/s -- as mean ± std over
the seeds, plus every model's per-combination EMM table side by side; JSON, Markdown, the
self-contained ``report.html``, charts of Tab. 1, EMM per combination, the noise levels and the
modality similarities side by side, and the paper's Fig. 2 for the compared models.

**Same data and schedule.** Each model's run is the given experiment config with ``model.name`` set to
it and ``train.seed`` to the seed. Of the config's ``model`` section, only the method-independent keys
(:data:`SHARED_MODEL_KEYS`: encoder shape, stochastic depth, head width, pretrained weights) apply to
every model; EQUISeg's own switches (hub, SGM, λ, PPX ...) apply only to ``equiseg_*`` models; a peer's
own fields (``stitch_*``, ``magic_*``: :data:`ARCH_FIELD_PREFIXES`) only to that peer, and each peer
keeps its own loss (e.g. CMNeXt's OHEM). CMX takes exactly two modalities: the first
two of ``data.modalities``.

**Resumable.** Every run has its folder ``OUT/<model>/seed<k>/`` (training run + ``result.json``). A
finished run trained with the same config is reused when it was scored as asked (split, number of val
samples, inference, precision: :func:`.records.scoring_differences`) and re-scored from its checkpoint
otherwise -- one table never mixes numbers computed two ways; an unfinished run continues from its
``last.pt``; one killed before its first checkpoint starts afresh (its files moved aside to
``<folder>.replaced-<time>/``, never deleted); a run trained with another config is an error (use
another ``--out``). Every model name, given file and run folder is checked before the first model
trains.

**Scoring.** The benchmark predicts as ``equiseg eval`` does under the config's ``eval`` section (whole
image or sliding windows, scales, flip), so the clean mIoU is ``eval``'s; ``compare.json``/``.md`` say
how many samples, which inference and which precision every number comes from.

**Given checkpoints** (``--checkpoints name=path``, ``name`` a registered model): that model is not
trained; the file (an equiseg checkpoint, or a public release's state dict -- see
:func:`equiseg.engine.eval_setup.load_eval_setup`; a release is built with ``reference_compat=True``,
the only way it scores as published) is scored once and reported without spread.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from equiseg.config import ExperimentConfig, load_experiment
from equiseg.engine.eval_setup import subset
from equiseg.engine.inference import describe_inference, inference_record
from equiseg.utils import check_names, to_jsonable, write_json_atomic

from .ablate import Schedule, resolve_schedule, short_schedule

# Keys of the config's model section that apply to every compared model (the rest is EQUISeg's own).
SHARED_MODEL_KEYS = frozenset(
    {
        "embed_dims",
        "depths",
        "num_heads",
        "sr_ratios",
        "mlp_ratio",
        "qkv_bias",
        "drop_rate",
        "attn_drop_rate",
        "drop_path_rate",
        "ln_eps",
        "decoder_dim",
        "head_dropout",
        "pretrained",
        "pretrained_strict",
    }
)
# A peer's own fields in the config's model section (e.g. `--set model.stitch_fusion=sum`) apply to it.
ARCH_FIELD_PREFIXES = {"stitchfusion": "stitch_", "magic": "magic_", "magicpp": "magic_"}
# --quick: the demo setting on a CPU (one short schedule per model, a val subset)
QUICK_ITERS = 60
QUICK_MAX_SAMPLES = 12
QUICK_OVERRIDES: tuple[str, ...] = short_schedule(QUICK_ITERS)
FIG2_ROWS = 4  # rows (cases) of the predictions figure
# The Tab. 1 columns: (key in the robustness summary, header)
COLUMNS: tuple[tuple[str, str], ...] = (
    ("clean", "mIoU"),
    ("emm_avg", "EMM Avg"),
    ("emm_p0.1", "EMM p=0.1"),
    ("rmm_avg[0.5]", "RMM Avg"),
    ("rmm_p0.1[0.5]", "RMM p=0.1"),
    ("nm_low", "NM low"),
    ("nm_mid", "NM mid"),
    ("mean", "Mean"),
)
COSTS: tuple[tuple[str, str], ...] = (
    ("params_m", "#Params (M)"),
    ("gflops", "GFLOPs"),
    ("img_per_s", "img/s"),
)


def model_run_config(base: ExperimentConfig, name: str, seed: int | None, work_dir: Path) -> ExperimentConfig:
    """``base`` for model ``name`` and ``seed`` (see the module docstring for which model keys carry over)."""
    from equiseg.models import model_config

    arch = model_config(name).arch  # validates the name
    data = base.to_dict()
    own = {k: v for k, v in data["model"].items() if k != "name"}
    prefix = ARCH_FIELD_PREFIXES.get(arch)
    keep = (
        own
        if arch == "equiseg"
        else {k: v for k, v in own.items() if k in SHARED_MODEL_KEYS or (prefix and k.startswith(prefix))}
    )
    data["model"] = {"name": name, **keep}
    if arch == "cmx":
        if len(data["data"]["modalities"]) < 2:
            raise ValueError(
                f"{name}: CMX needs two modalities, data.modalities has {data['data']['modalities']}"
            )
        data["data"]["modalities"] = list(data["data"]["modalities"][:2])
        kept = data["data"]["modalities"]
        data["data"]["channels"] = {m: c for m, c in data["data"]["channels"].items() if m in kept}
    if seed is not None:
        data["train"]["seed"] = int(seed)
    data["work_dir"] = str(work_dir)
    return load_experiment(data)


def score_model(
    model: torch.nn.Module,
    val: Any,
    cfg: ExperimentConfig,
    *,
    device: torch.device,
    out_dir: Path,
    name: str,
    progress: bool = True,
) -> dict[str, Any]:
    """Robustness benchmark (all tests; predicted as ``eval`` predicts under ``cfg.eval``), analysis and
    cost of one model on ``val``, with what it was scored on (``num_samples``, ``inference``, the
    ``precision`` that ran)."""
    from equiseg.engine.inference import forward_crop
    from equiseg.engine.precision import resolve_precision, with_precision
    from equiseg.engine.profile import count_params, forward_flops, images_per_second
    from equiseg.robustness import run_benchmark

    from .analysis import modality_contributions, write_analysis

    base = getattr(val, "dataset", val)
    mods = list(cfg.data.modalities)
    t0 = time.perf_counter()
    # as the trainer's validation (the same model and sample shapes: the same cached verdict)
    precision = resolve_precision(
        cfg.eval.precision, device, model=model, data=val, crop=forward_crop(cfg.eval)
    )
    rob = run_benchmark(
        with_precision(model, precision, device),
        val,
        tests=("emm", "rmm", "nm"),
        convention=cfg.eval.convention,
        device=device,
        progress=progress,
        modality_names=mods,
        class_names=list(base.classes),
        ignore_index=base.ignore_index,
        out_dir=out_dir / "robustness",
        model_name=name,
        eval_cfg=cfg.eval,
        split=cfg.data.val_split,
    )
    similarity = None
    if getattr(model, "has_modality_features", False):
        ana = modality_contributions(
            model, val, device=device, progress=progress, modality_names=mods, precision=precision
        )
        ana["split"] = cfg.data.val_split
        write_analysis(ana, out_dir / "analysis", title=f"Modality contributions: {name}")
        similarity = ana["similarity"]["last_stage"]
    inputs, _ = val[0]
    x = [t.unsqueeze(0).to(device) for t in inputs]
    cost = {
        "params_m": count_params(model) / 1e6,
        "gflops": forward_flops(model, x) / 1e9,
        "img_per_s": images_per_second(model, x),
        "eval_size": list(x[0].shape[-2:]),
    }
    return {
        "summary": rob["summary"],
        "emm": {c["name"]: c["mIoU"] for c in rob["emm"]["combinations"]},
        "similarity": similarity,
        "cost": cost,
        "num_samples": rob["num_samples"],
        "inference": rob["inference"],
        "precision": precision,
        "eval_seconds": round(time.perf_counter() - t0, 1),
    }


def _mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)


def run_compare(
    config: ExperimentConfig | str | Path | dict[str, Any],
    models: Sequence[str],
    overrides: Iterable[str] = (),
    *,
    seeds: Sequence[int] | None = None,
    checkpoints: Mapping[str, str | Path] | None = None,
    out_dir: str | Path = "runs/compare",
    quick: bool = False,
    schedule: str | None = None,
    max_samples: int | None = None,
    records: str | Path | None = None,
    record_roots: Sequence[str | Path] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train (or take) every model of ``models`` for every seed, score it, and write the comparison.

    Args:
        config: The experiment (data, schedule, evaluation) every model runs under.
        models: Registered model names (``equiseg_b0``, ``cmnext_b0`` ...), in table order.
        overrides: ``a.b=c`` overrides of ``config`` (after the ``quick`` settings).
        seeds: Training seeds (default: the config's ``train.seed``).
        checkpoints: ``{model name: file}`` scored instead of trained (the name need not be in
            ``models``; it is appended).
        out_dir: One folder per run plus ``compare.json``/``.md``/``.png``, ``report.html`` and the
            figures (``compare_missing.png``, ``compare_noise.png``, ``compare_similarity.png``,
            ``compare_predictions.png``).
        quick: :data:`QUICK_OVERRIDES` and the first :data:`QUICK_MAX_SAMPLES` val samples (the same as
            ``schedule="quick"``).
        schedule: A named schedule (``"quick"``: compare's own; ``"standard"``:
            :data:`equiseg.tasks.ablate.SCHEDULES`); None: the config's own.
        max_samples: Evaluate on the first N val samples (default all; quick: 12).
        records: Save each trained run's record (:mod:`.records`, no checkpoints) to
            ``records/<model>/seed<k>/``.
        record_roots: Record trees searched for a finished run before training one (default
            ``[records]``).

    Returns:
        The content of ``compare.json``: ``models`` (per model ``runs`` and the ``mean``/``std`` of
        every Tab. 1 column and cost), ``columns``, ``seeds``, ``split``, ``num_samples``,
        ``inference``, ``files``, ``seconds`` and the settings.

    Raises:
        ValueError: an unknown model name (in ``models`` or ``checkpoints``), no model at all, or a run
            folder trained with another config -- before anything is trained.
        FileNotFoundError: a file of ``checkpoints`` is missing -- before anything is trained.
    """
    from equiseg.api import load_model
    from equiseg.engine.builders import build_val_dataset
    from equiseg.engine.checkpoint import load_checkpoint
    from equiseg.engine.device import resolve_device
    from equiseg.engine.eval_setup import load_eval_setup
    from equiseg.engine.rundir import holds_run
    from equiseg.engine.train import train
    from equiseg.models import list_models
    from equiseg.models.reference import is_reference_state_dict

    from .records import (
        check_run_folder,
        find_record,
        finished_record,
        machine_info,
        run_checkpoint,
        save_record,
        set_aside,
    )

    t_start = time.perf_counter()
    # every name and file is checked before the first model trains
    checkpoints = {str(k): Path(v) for k, v in (checkpoints or {}).items()}
    models = list(models or ())
    known = list_models()
    if checkpoints:
        check_names(checkpoints, known, what="model", where="--checkpoints")
    if models or not checkpoints:
        check_names(models, known, what="model", where="--models")
    names = list(dict.fromkeys([*models, *checkpoints]))
    for name, path in checkpoints.items():
        if not path.is_file():
            raise FileNotFoundError(f"--checkpoints {name}={path}: no such file")
    if seeds is not None and not list(seeds) and names != list(checkpoints):
        raise ValueError("--seeds: no seed given; at least one training seed is needed")
    released = {name: is_reference_state_dict(load_checkpoint(path)) for name, path in checkpoints.items()}

    user_overrides = list(overrides)
    sched = resolve_schedule(schedule, quick, Schedule("quick", QUICK_OVERRIDES, QUICK_MAX_SAMPLES))
    base = load_experiment(config, [*(sched.overrides if sched else ()), *user_overrides])
    if sched is not None and max_samples is None:
        max_samples = sched.max_samples
    roots = [Path(r) for r in (record_roots if record_roots is not None else [records] if records else [])]
    seeds = [base.train.seed] if seeds is None else list(dict.fromkeys(int(s) for s in seeds))
    out = Path(out_dir)
    device = resolve_device(base.train.device)

    # Fig. 2: one val sample per case, every model's prediction on it (its first run)
    from equiseg.reports.predictions import pick_cases, predict_samples

    fig2_val = subset(build_val_dataset(base.data), max_samples)
    n_eval = len(fig2_val)  # every model is scored on these samples (CMX: its two modalities of them)
    picks = pick_cases(fig2_val, max_rows=FIG2_ROWS)
    positions = [p for p, _ in picks]
    fig2: dict[str, dict[int, torch.Tensor]] = {}

    plan: list[tuple[str, int | None, Path, ExperimentConfig]] = []
    for name in names:
        if name in checkpoints:
            work = out / name / "checkpoint"
            cfg = model_run_config(base, name, None, work)
            if released[name]:
                # a public release scores as published only with the released code's behaviour
                cfg = load_experiment(cfg, ["model.reference_compat=true"])
            plan.append((name, None, work, cfg))
            continue
        for seed in seeds:
            work = out / name / f"seed{seed}"
            cfg = model_run_config(base, name, seed, work)
            check_run_folder(work, "result.json", cfg, n_eval, reuse=True, device=device)
            plan.append((name, seed, work, cfg))
    out.mkdir(parents=True, exist_ok=True)

    def keep(name: str, seed: int, work: Path, rec: dict[str, Any]) -> dict[str, Any]:
        write_json_atomic(work / "result.json", rec)  # a killed write never leaves half a record
        if records is not None:
            save_record(work, Path(records) / name / f"seed{seed}", "result.json")
        return rec

    def score(
        model: torch.nn.Module, val: Any, cfg: ExperimentConfig, work: Path, name: str
    ) -> dict[str, Any]:
        rec = score_model(model, val, cfg, device=device, out_dir=work, name=name, progress=progress)
        if name not in fig2:
            fig2[name] = predict_samples(model, val, positions, device=device, eval_cfg=cfg.eval)
        return rec

    def predictions_of(name: str, done: Mapping[str, Any], cfg: ExperimentConfig) -> None:
        """Fig. 2's predictions of a reused run, when its checkpoint is at hand."""
        if name not in fig2 and Path(done["checkpoint"]).is_file():
            model = load_model(done["checkpoint"], device=device)
            val = subset(build_val_dataset(cfg.data), max_samples)
            fig2[name] = predict_samples(model, val, positions, device=device, eval_cfg=cfg.eval)

    runs_of: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for name, seed, work, cfg in plan:
        runs = runs_of[name]
        if seed is None:  # a given checkpoint: scored, never trained
            setup = load_eval_setup(cfg, checkpoints[name], max_samples=max_samples)
            rec = score(setup.model, setup.dataset, setup.cfg, work, name)
            rec.update(seed=None, checkpoint=str(checkpoints[name]), trained=False)
            runs.append(rec)
            continue
        found = finished_record(work / "result.json", cfg, n_eval, device=device)
        if found is not None and not found.stale:
            runs.append(found.record)
            predictions_of(name, found.record, cfg)
            continue
        ckpt = run_checkpoint(work)
        if found is not None:
            moved = set_aside(work / "result.json")
            if ckpt is not None:  # the same training, scored another way: score its checkpoint again
                why = "; ".join(found.stale)
                print(f"note: {work}: re-scoring {ckpt.name} ({why}); the old result is now {moved.name}")
                model = load_model(ckpt, device=device)
                val = subset(build_val_dataset(cfg.data), max_samples)
                old = {k: v for k, v in found.record.items() if k != "reused_from"}
                rescored = {"because": found.stale, "machine": machine_info()}
                new = score(model, val, cfg, work, name)
                runs.append(keep(name, seed, work, {**old, **new, "checkpoint": str(ckpt), "rescored": rescored,
                                                    "config": to_jsonable(cfg.to_dict())}))  # fmt: skip
                del model
                continue
        done = find_record(roots, cfg, n_eval, "result.json", device=device) if roots else None
        if done is not None:
            work.mkdir(parents=True, exist_ok=True)
            runs.append(keep(name, seed, work, {**done, "config": to_jsonable(cfg.to_dict())}))
            predictions_of(name, done, cfg)
            continue
        t0 = time.perf_counter()
        # an unfinished run continues from its last.pt; one killed before its first checkpoint starts
        # afresh (train moves its files aside to <folder>.replaced-<time>/, nothing is deleted)
        resume = (work / "last.pt").is_file()
        restart = not resume and bool(holds_run(work))
        trained = train(cfg, work_dir=work, progress=progress, resume=resume or None, overwrite=restart)
        if trained.interrupted:
            raise KeyboardInterrupt
        t1 = time.perf_counter()
        ckpt = run_checkpoint(work)
        model = load_model(ckpt, device=device)
        val = subset(build_val_dataset(cfg.data), max_samples)
        rec = score(model, val, cfg, work, name)
        rec.update(
            seed=seed,
            checkpoint=str(ckpt),
            trained=True,
            iterations=trained.iterations,
            train_seconds=round(t1 - t0, 1),
            machine=machine_info(),
            config=to_jsonable(cfg.to_dict()),
        )
        runs.append(keep(name, seed, work, rec))
        del model

    results: dict[str, dict[str, Any]] = {}
    for name in names:
        runs = runs_of[name]
        summary_keys = [k for k, _ in COLUMNS]
        mean = {}
        std = {}
        for k in summary_keys:
            mean[k], std[k] = _mean_std([r["summary"].get(k) for r in runs])
        for k, _ in COSTS:
            mean[k], std[k] = _mean_std([r["cost"][k] for r in runs])
        combos = list(runs[0]["emm"])
        emm_mean = {c: _mean_std([r["emm"].get(c) for r in runs])[0] for c in combos}
        results[name] = {
            "runs": [{k: v for k, v in r.items() if k != "config"} for r in runs],
            "mean": mean,
            "std": std,
            "emm": emm_mean,
        }

    result: dict[str, Any] = {
        "config": str(config) if isinstance(config, (str, Path)) else None,
        "overrides": user_overrides,
        "quick": sched is not None and sched.name == "quick",
        "schedule": sched.name if sched else None,
        "seeds": seeds,
        "split": base.data.val_split,
        "num_samples": n_eval,
        "inference": inference_record(base.eval),
        "convention": base.eval.convention,
        "modalities": list(base.data.modalities),
        "columns": [{"key": k, "header": h} for k, h in (*COLUMNS, *COSTS)],
        "models": results,
        "machine": _machine(),
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    files = {"json": out / "compare.json", "markdown": out / "compare.md", "chart": out / "compare.png"}
    compare_chart(result, files["chart"])
    files.update(compare_figures(result, out))
    if picks and fig2:
        from equiseg.reports.figures import prediction_grid
        from equiseg.reports.predictions import prediction_rows

        from .analysis import display_name

        raw = getattr(fig2_val, "dataset", fig2_val)  # .load(i): the modalities as stored
        files["predictions"] = prediction_grid(
            prediction_rows(raw, picks, fig2),
            [display_name(m) for m in base.data.modalities],
            raw.palette,
            out / "compare_predictions.png",
            class_names=list(raw.classes),
            ignore_index=raw.ignore_index,
        )
    files["html"] = out / "report.html"
    result["files"] = {k: str(v) for k, v in files.items()}
    write_compare_reports(result, out)
    files["json"].write_text(json.dumps(to_jsonable(result), indent=2, allow_nan=False) + "\n")
    return result


def write_compare_reports(result: Mapping[str, Any], out: Path) -> Path:
    """``compare.md`` and the self-contained ``report.html`` (the same content, figures embedded);
    returns the path of ``report.html``."""
    from equiseg.reports.html import write_html

    text = compare_markdown(result)
    (out / "compare.md").write_text(text)
    return write_html(text, out / "report.html")


def _machine() -> dict[str, Any]:
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}


def _cell(mean: float | None, std: float | None, digits: int = 2) -> str:
    if mean is None:
        return "–"
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def compare_markdown(result: Mapping[str, Any]) -> str:
    """The comparison in the paper's Tab. 1 layout, then the per-combination EMM table."""
    from .ablate import config_line

    models = result["models"]
    headers = [h for _, h in COLUMNS] + [h for _, h in COSTS]
    seeds = ", ".join(map(str, result["seeds"]))
    lines = [
        "# EQUISeg and its peers (paper Tab. 1 layout)",
        "",
        config_line(result)
        + f". Seeds {seeds}: mean ± sample std over seeds (a given checkpoint: one run, no spread). "
        f"{_scored_on(result)}, batch 1, **{result['convention']}** metric convention, in %. "
        "EMM = missing modalities zeroed, RMM = random elements dropped (r = 0.5), NM = salt-and-pepper + "
        "Gaussian noise (docs/design.md §6); Mean = the paper's robustness score (mean of the 7 columns "
        "before it). "
        f"GFLOPs: one forward at the evaluation size; img/s: inference on {result['machine']['cpu']} "
        f"({result['machine']['threads']} threads).",
        "",
        "| Method | " + " | ".join(headers) + " |",
        "|---|" + "---:|" * len(headers),
    ]
    for name, r in models.items():
        cells = [_cell(r["mean"][k], r["std"][k]) for k, _ in COLUMNS]
        cells += [_cell(r["mean"][k], r["std"][k], 1 if k != "params_m" else 2) for k, _ in COSTS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += _figure_line(result, "chart", "Tab. 1 columns per model, mean ± std over seeds")
    combos = list(next(iter(models.values()))["emm"])
    lines += [
        "",
        "## EMM per set of present modalities (mIoU %, mean over seeds)",
        "",
        "| Present | " + " | ".join(models) + " |",
        "|---|" + "---:|" * len(models),
    ]
    for c in combos:
        lines.append(f"| {c} | " + " | ".join(_cell(models[m]["emm"].get(c), None) for m in models) + " |")
    lines += _figure_line(result, "missing", "EMM mIoU per set of present modalities, one bar per model")
    noise = noise_levels(result)
    lines += [
        "",
        "## Noisy modalities (mIoU %, mean over seeds)",
        "",
        "| Method | clean | " + " | ".join(f"NM {lvl}" for lvl in noise["levels"]) + " |",
        "|---|" + "---:|" * (len(noise["levels"]) + 1),
    ]
    for name, vals in noise["models"].items():
        lines.append(f"| {name} | " + " | ".join(_cell(v, None) for v in vals) + " |")
    lines += _figure_line(result, "noise", "mIoU against the noise level, one line per model")
    if result.get("files", {}).get("similarity"):
        lines += ["", "## Modality contributions (paper Tab. 3, last stage)", ""]
        lines += _figure_line(result, "similarity", "cosine similarity with the fused feature, per model")
    if result.get("files", {}).get("predictions"):
        lines += [
            "",
            "## Predictions (paper Fig. 2)",
            "",
            "One val sample per case: the modalities as stored, the ground truth and each model's "
            "prediction (its first seed; CMX sees only the first two modalities).",
        ]
        lines += _figure_line(
            result, "predictions", "one row per case: modalities, ground truth, predictions"
        )
    lines += [
        "",
        "## Runs",
        "",
        "| Method | seed | iterations | train s | samples | precision | eval s | checkpoint |",
        "|---|---:|---:|---:|---:|---|---:|---|",
    ]
    for name, r in models.items():
        for run in r["runs"]:
            lines.append(
                f"| {name} | {run.get('seed', '–')} | {run.get('iterations', '–')} | "
                f"{run.get('train_seconds', '–')} | {run.get('num_samples', '–')} | "
                f"{run.get('precision', '–')} | {run['eval_seconds']} | `{run['checkpoint']}` |"
            )
    lines += ["", f"Total time: {result['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


def _scored_on(result: Mapping[str, Any]) -> str:
    """``"12 samples of the val split, whole image, scale 1"``: what every number of the table was
    scored on (the runs' own counts where an older ``compare.json`` has no top-level one)."""
    n = result.get("num_samples")
    if n is None:
        counts = sorted(
            {run.get("num_samples") for r in result["models"].values() for run in r["runs"]} - {None}
        )
        n = "/".join(map(str, counts)) or "?"
    samples = "sample" if n == 1 else "samples"
    return f"{n} {samples} of the {result['split']} split, {describe_inference(result.get('inference'))}"


def _figure_line(result: Mapping[str, Any], key: str, caption: str) -> list[str]:
    """``["", "![caption](file)"]`` for a figure of ``result["files"]`` (linked by its name: the
    figures sit beside ``compare.md``), nothing when it was not written."""
    path = result.get("files", {}).get(key)
    return ["", f"![{caption}]({Path(path).name})"] if path else []


def noise_levels(result: Mapping[str, Any]) -> dict[str, Any]:
    """Clean and every NM level per model, mean over its runs: ``{"levels": [...], "models": {name:
    [clean, NM low, ...]}}`` (the levels those runs measured, in protocol order)."""
    from equiseg.robustness.corruptions import NM_LEVELS

    models = result["models"]
    seen = {k for r in models.values() for run in r["runs"] for k in run["summary"]}
    levels = [lvl for lvl in NM_LEVELS if f"nm_{lvl}" in seen]
    return {
        "levels": levels,
        "models": {
            name: [
                _mean_std([run["summary"].get(k) for run in r["runs"]])[0]
                for k in ("clean", *(f"nm_{lvl}" for lvl in levels))
            ]
            for name, r in models.items()
        },
    }


def compare_chart(result: Mapping[str, Any], path: Path) -> Path:
    """The Tab. 1 columns as grouped bars, one bar per model, ± the std over seeds."""
    from equiseg.reports.figures import bar_chart

    models = result["models"]
    return bar_chart(
        [h for _, h in COLUMNS],
        {name: [r["mean"][k] for k, _ in COLUMNS] for name, r in models.items()},
        path,
        errors={name: [r["std"][k] for k, _ in COLUMNS] for name, r in models.items()},
        title=f"Clean and robust mIoU ({result['convention']} convention), mean ± std over seeds",
        ylabel="mIoU (%)",
    )


def compare_figures(result: Mapping[str, Any], out: Path) -> dict[str, Path]:
    """The side-by-side robustness figures beside ``compare.md``: ``compare_missing.png`` (EMM per set
    of present modalities), ``compare_noise.png`` (clean and NM levels) and, when a model has
    per-modality features, ``compare_similarity.png`` (last-stage similarity per modality)."""
    from equiseg.reports.figures import bar_chart, missing_modality_chart, noise_chart
    from equiseg.reports.robustness import short_names
    from equiseg.robustness.corruptions import NM_LEVELS

    from .analysis import display_name

    models = result["models"]
    short = short_names(result["modalities"])
    combos: list[str] = []
    for r in sorted(models.values(), key=lambda r: -len(r["emm"])):  # CMX has fewer sets: the others first
        combos += [c for c in r["emm"] if c not in combos]
    files = {
        "missing": missing_modality_chart(
            ["+".join(short.get(m, m) for m in c.split("+")) for c in combos],
            {name: [r["emm"].get(c) for c in combos] for name, r in models.items()},
            out / "compare_missing.png",
            abbreviations=short,
            title="EMM: mIoU per set of present modalities (missing ones zeroed), mean over seeds",
        )
    }
    noise = noise_levels(result)
    if noise["levels"]:
        labels = ["clean"] + [
            f"NM {lvl}\nS&P {NM_LEVELS[lvl].salt_pepper:g}, σ {NM_LEVELS[lvl].gaussian_std:g}"
            for lvl in noise["levels"]
        ]
        files["noise"] = noise_chart(
            labels,
            noise["models"],
            out / "compare_noise.png",
            title="mIoU under noisy modalities, mean over seeds",
        )
    sims = {}
    for name, r in models.items():
        per_run = [run["similarity"] for run in r["runs"] if run.get("similarity")]
        if per_run:
            sims[name] = {m: _mean_std([s.get(m) for s in per_run])[0] for m in per_run[0]}
    if sims:
        mods = list(dict.fromkeys(m for s in sims.values() for m in s))
        files["similarity"] = bar_chart(
            [display_name(m) for m in mods],
            {name: [s.get(m) for m in mods] for name, s in sims.items()},
            out / "compare_similarity.png",
            title="Last-stage cosine similarity with the fused feature (paper Tab.\u00a03), mean over seeds",
            ylabel="cosine similarity (%)",
            ymax=100.0,
            legend=True,
        )
    return files
