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

import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from equiseg.config import ExperimentConfig, load_experiment
from equiseg.engine.eval_setup import subset
from equiseg.engine.inference import inference_record
from equiseg.reports.compare import (
    compare_chart,
    compare_figures,
    compare_markdown,
    noise_levels,
    write_compare_reports,
)
from equiseg.studies.peers import (
    ARCH_FIELD_PREFIXES,
    COLUMNS,
    COSTS,
    QUICK_ITERS,
    QUICK_MAX_SAMPLES,
    QUICK_OVERRIDES,
    QUICK_SCHEDULE,
    SHARED_MODEL_KEYS,
    model_run_config,
)
from equiseg.studies.schedules import resolve_schedule
from equiseg.studies.stats import mean_std
from equiseg.utils import check_names, write_json_atomic

from .runner import Run, finish_run, measure, search_roots, with_schedule

# The per-model run config and the Tab. 1 columns live in equiseg.studies.peers, the writers in
# equiseg.reports.compare; their names stay importable from here.
__all__ = [
    "ARCH_FIELD_PREFIXES",
    "COLUMNS",
    "COSTS",
    "FIG2_ROWS",
    "QUICK_ITERS",
    "QUICK_MAX_SAMPLES",
    "QUICK_OVERRIDES",
    "SHARED_MODEL_KEYS",
    "compare_chart",
    "compare_figures",
    "compare_markdown",
    "model_run_config",
    "noise_levels",
    "run_compare",
    "score_model",
    "write_compare_reports",
]

FIG2_ROWS = 4  # rows (cases) of the predictions figure


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
    """Robustness benchmark (all tests), analysis (:func:`.runner.measure`) and cost of one model on
    ``val``, with what it was scored on (``num_samples``, ``inference``, the ``precision`` that ran)."""
    from equiseg.engine.profile import count_params, forward_flops, images_per_second

    t0 = time.perf_counter()
    m = measure(model, val, cfg, device=device, out_dir=out_dir, name=name, tests=("emm", "rmm", "nm"),
                progress=progress)  # fmt: skip
    rob = m.robustness
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
        "similarity": None if m.analysis is None else m.analysis["similarity"]["last_stage"],
        "cost": cost,
        "num_samples": rob["num_samples"],
        "inference": rob["inference"],
        "precision": m.precision,
        "eval_seconds": round(time.perf_counter() - t0, 1),
    }


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
            :data:`equiseg.studies.schedules.SCHEDULES`); None: the config's own.
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
    from equiseg.engine.device import resolve_device
    from equiseg.engine.eval_setup import load_eval_setup
    from equiseg.models import list_models, read_model_file

    from .records import check_run_folder

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
    # each given file is read once (the one loader, equiseg.models.load_model): its format says whether it
    # is a public release, and the same read is what is scored
    files = {name: read_model_file(path) for name, path in checkpoints.items()}
    for name, file in files.items():
        if file.format not in ("checkpoint", "export", "release", "state_dict"):
            raise ValueError(
                f"--checkpoints {name}={file.path}: not a model to score ({file.format}); expected an equiseg "
                "checkpoint or a public release's full-model state dict"
            )
    released = {name: file.format == "release" for name, file in files.items()}

    user_overrides = list(overrides)
    sched = resolve_schedule(schedule, quick, QUICK_SCHEDULE)
    run_overrides, max_samples = with_schedule(user_overrides, sched, max_samples)
    base = load_experiment(config, run_overrides)
    roots = search_roots(records, record_roots)
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

    def finish(name: str, seed: int, work: Path, cfg: ExperimentConfig) -> dict[str, Any]:
        """A trained model's run (:func:`.runner.finish_run`): its own record when finished, re-scored,
        taken from a record tree, or trained and scored here."""

        def trained(result: Any, ckpt: Path, scores: dict, train_s: float, eval_s: float) -> dict[str, Any]:
            return {**scores, "seed": seed, "checkpoint": str(ckpt), "trained": True,
                    "iterations": result.iterations, "train_seconds": train_s}  # fmt: skip

        outcome = finish_run(
            Run(work, cfg, "result.json", None if records is None else Path(records) / name / f"seed{seed}"),
            num_samples=n_eval,
            device=device,
            score=lambda model: score(
                model, subset(build_val_dataset(cfg.data), max_samples), cfg, work, name
            ),
            trained=trained,
            rescored=lambda old, scores, eval_s: scores,
            reused=lambda found: found,
            roots=roots,
            progress=progress,
        )
        if outcome.how in ("finished", "reused"):
            predictions_of(name, outcome.record, cfg)
        return outcome.record

    runs_of: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for name, seed, work, cfg in plan:
        if seed is None:  # a given checkpoint: scored, never trained
            setup = load_eval_setup(cfg, files.pop(name), max_samples=max_samples)
            rec = score(setup.model, setup.dataset, setup.cfg, work, name)
            rec.update(seed=None, checkpoint=str(checkpoints[name]), trained=False)
            runs_of[name].append(rec)
        else:
            runs_of[name].append(finish(name, seed, work, cfg))

    results: dict[str, dict[str, Any]] = {}
    for name in names:
        runs = runs_of[name]
        summary_keys = [k for k, _ in COLUMNS]
        mean = {}
        std = {}
        for k in summary_keys:
            mean[k], std[k] = mean_std([r["summary"].get(k) for r in runs])
        for k, _ in COSTS:
            mean[k], std[k] = mean_std([r["cost"][k] for r in runs])
        combos = list(runs[0]["emm"])
        emm_mean = {c: mean_std([r["emm"].get(c) for r in runs])[0] for c in combos}
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
        from equiseg.reports.tables import display_name

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
    write_json_atomic(files["json"], result)
    return result


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
