"""``equiseg demo``: synthetic DeLiVER-layout scenes -> EQUISeg-B0 training on RGB-D-E-L -> evaluation
(overall, per class, per case) -> ``report.md`` and the self-contained ``report.html`` with tables,
training curves, per-case/per-class charts, a confusion matrix and prediction panels.

Everything runs on the built-in data (no downloads), within about 15 minutes on a 2-core CPU
(``--quick``: about 3). The demo evaluates with the "present" metric convention: the synthetic scenes
use a subset of DeLiVER's 25 classes, and the reference convention would count every class that never
occurs as IoU 0. Both numbers are in the report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from equiseg.config import load_experiment
from equiseg.engine.builders import build_dataset, build_val_dataset
from equiseg.engine.evaluate import evaluate, metrics_markdown, write_metrics
from equiseg.engine.train import train

# The demo's recipe is the one the reproduction study supports (docs/reproduction.md).
STUDY_NOTE = (
    "The recipe (from scratch, λ_SGM = 1, lr 1.5e-3) is what the reproduction study supports for a short "
    "from-scratch run: over 3 seeds, λ = 1 gave +4.6 points of clean mIoU over the paper's λ = 60 at an EMM "
    "(Avg) not resolvably lower, while the paper's recipe from a pretrained stand-in learned too slowly to "
    "use (docs/reproduction.md)."
)
CONVENTION_NOTE = (
    "'present' averages over the classes that occur; 'reference' averages over all 25 DeLiVER classes "
    "with the 9 the synthetic scenes never contain counted as 0, as published DeLiVER numbers do."
)


@dataclass(frozen=True)
class DemoSize:
    train: int
    val: int
    size: int
    max_iters: int
    val_interval: int
    robustness_samples: int


FULL = DemoSize(train=400, val=100, size=128, max_iters=900, val_interval=300, robustness_samples=50)
QUICK = DemoSize(train=96, val=40, size=96, max_iters=200, val_interval=100, robustness_samples=20)


def demo_config_path() -> Path:
    return Path(str(resources.files("equiseg") / "configs" / "demo.yaml"))


def run_demo(
    out_dir: str | Path = "demo_out",
    *,
    quick: bool = False,
    progress: bool = True,
    size: DemoSize | None = None,
    overrides: Sequence[str] = (),
) -> Path:
    """Run the whole demo into ``out_dir``; returns the path of ``report.md`` (``report.html`` beside it).

    Args:
        quick: the ~3-minute setting instead of the ~15-minute one.
        size: explicit data/schedule sizes (tests use a tiny one).
        overrides: extra ``a.b=c`` config overrides applied last.
    """
    from equiseg.data.synth import generate

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, expected a folder (it is created if missing)")
    size = size or (QUICK if quick else FULL)
    times: dict[str, float] = {}

    t0 = time.perf_counter()
    data = out / "data"
    generate(
        data,
        layout="deliver",
        splits={"train": size.train, "val": size.val},
        size=(size.size, size.size),
        seed=0,
        progress=progress,
    )
    times["data"] = time.perf_counter() - t0

    cfg = load_experiment(
        demo_config_path(),
        [
            f"data.root={data}",
            f"work_dir={out / 'run'}",
            f"data.crop_size=[{size.size},{size.size}]",
            f"train.max_iters={size.max_iters}",
            f"train.val_interval={size.val_interval}",
            f"train.warmup_iters={size.max_iters // 10}",
            *overrides,
        ],
    )
    t0 = time.perf_counter()
    result = train(cfg, progress=progress, overwrite=True)  # a re-run moves the previous demo run aside
    times["train"] = time.perf_counter() - t0

    # evaluate the best checkpoint, overall and per case
    from equiseg.api import load_model

    t0 = time.perf_counter()
    model = load_model(result.work_dir / "best.pt")
    val = build_val_dataset(cfg.data)
    metrics = evaluate(model, val, cfg.eval, progress=progress)
    metrics["split"] = cfg.data.val_split
    write_metrics(metrics, out / "eval", title="EQUISeg-B0 on synthetic DeLiVER, val split")
    times["eval"] = time.perf_counter() - t0

    # robustness benchmark (docs/design.md §6; RMM at the headline rate r = 0.5 only) and modality
    # contributions
    from torch.utils.data import Subset

    from equiseg.engine.precision import resolve_precision, with_precision
    from equiseg.reports.robustness import robustness_section
    from equiseg.robustness import run_benchmark
    from equiseg.tasks.analysis import analysis_section, modality_contributions, write_analysis

    t0 = time.perf_counter()
    subset = Subset(val, range(min(len(val), size.robustness_samples)))
    precision = metrics.get("precision") or resolve_precision(
        cfg.eval.precision, "cpu", model=model, data=subset
    )
    rob = run_benchmark(
        with_precision(model, precision, "cpu"),
        subset,
        rmm_rates=(0.5,),
        convention=metrics["convention"],
        modality_names=list(val.modalities),
        class_names=list(val.classes),
        out_dir=out / "robustness",
        model_name="EQUISeg-B0",
        progress=progress,
        eval_cfg=cfg.eval,  # predicted as the evaluation above predicts
        split=cfg.data.val_split,
    )
    times["robustness"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ana = modality_contributions(model, val, progress=progress, precision=precision)
    ana["split"] = cfg.data.val_split
    write_analysis(ana, out / "analysis")
    times["analysis"] = time.perf_counter() - t0

    from equiseg.reports.html import write_html

    figures = out / "figures"
    panel = _panels(model, val, build_dataset(cfg.data, cfg.data.val_split), figures / "predictions.png")
    curve = _training_curve(
        result.work_dir / "log.jsonl", figures / "training.png", cfg.model.get("lambda_sgm", 60)
    )
    evaluation = _evaluation_figures(metrics, list(val.classes), figures)
    baseline = _majority_baseline(val, cfg.eval.convention)
    report = out / "report.md"
    sections = [robustness_section(rob, out), analysis_section(ana, out)]
    text = _report(cfg, size, metrics, times, baseline, panel, curve, out, quick, sections, evaluation)
    report.write_text(text)
    write_html(text, out / "report.html")
    (out / "demo_summary.json").write_text(
        json.dumps(
            {
                "mIoU": metrics["mIoU"],
                "convention": metrics["convention"],
                "reference_mIoU": metrics["other_convention"]["mIoU"],
                "majority_baseline_mIoU": baseline,
                "robustness": rob["summary"],
                "similarity_last_stage": ana["similarity"]["last_stage"],
                "seconds": times,
                "quick": quick,
                "iterations": result.iterations,
            },
            indent=2,
        )
    )
    return report


SHOWCASE = ("sun", "night", "fog", "rain", "overexposure", "motionblur", "lidarjitter", "eventlowres")


def _panels(model, val, raw, path: Path, max_rows: int = 6) -> Path:
    """Fig. 2 for the demo model: one row per showcased case (its first val sample) -- the modalities
    as stored, ground truth, prediction and errors."""
    from equiseg.reports.figures import prediction_grid
    from equiseg.reports.predictions import pick_cases, predict_samples, prediction_rows

    from .analysis import display_name

    picks = pick_cases(val, SHOWCASE, max_rows)
    preds = predict_samples(model, val, [p for p, _ in picks])
    return prediction_grid(
        prediction_rows(raw, picks, {"EQUISeg-B0": preds}),
        [display_name(m) for m in val.modalities],
        val.palette,
        path,
        class_names=list(val.classes),
        ignore_index=val.ignore_index,
        errors=True,
    )


def _training_curve(log: Path, path: Path, lambda_sgm: float | None = None) -> Path:
    """Loss terms, learning rate and val mIoU of the run's ``log.jsonl``, one PNG."""
    from equiseg.reports.figures import training_curves

    recs = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return training_curves(recs, path, lambda_sgm=lambda_sgm)


def _evaluation_figures(metrics: dict[str, Any], classes: list[str], figures: Path) -> dict[str, Path]:
    """mIoU per case, IoU per class and the row-normalised confusion matrix of the clean evaluation."""
    from equiseg.reports.figures import confusion_heatmap, hbar_chart

    out: dict[str, Path] = {}
    conv = metrics["convention"]
    if metrics.get("per_case"):
        cases = metrics["per_case"]
        out["per_case"] = hbar_chart(
            list(cases),
            [c["mIoU"] for c in cases.values()],
            figures / "per_case.png",
            xlabel=f"mIoU (%, {conv} convention)",
            title="Validation mIoU per case",
        )
    if metrics.get("per_class"):
        per = metrics["per_class"]
        out["per_class"] = hbar_chart(
            list(per),
            [c["IoU"] for c in per.values()],
            figures / "per_class.png",
            xlabel="IoU (%)",
            title="Validation IoU per class",
            missing="not in the split",
        )
    if metrics.get("confusion"):
        out["confusion"] = confusion_heatmap(metrics["confusion"], classes, figures / "confusion.png").path
    return out


def _majority_baseline(val, convention: str) -> float:
    """mIoU of predicting the most frequent val class everywhere: the 'chance' reference."""
    from equiseg.engine.metrics import SegMetrics

    counts = torch.zeros(len(val.classes), dtype=torch.long)
    labels = []
    for i in range(len(val)):
        lab = val.load(i)[1]
        labels.append(lab)
        v = lab[lab != val.ignore_index]
        counts += torch.bincount(v.flatten(), minlength=len(val.classes))
    m = SegMetrics(len(val.classes), ignore_index=val.ignore_index)
    for lab in labels:
        m.update(torch.full_like(lab, int(counts.argmax())), lab)
    return m.compute(convention)["mIoU"]


def _report(
    cfg,
    size: DemoSize,
    metrics: dict[str, Any],
    times,
    baseline: float,
    panel: Path,
    curve: Path,
    out: Path,
    quick: bool,
    sections: list[str],
    evaluation: dict[str, Path] | None = None,
) -> str:
    rel = lambda p: p.relative_to(out).as_posix()  # noqa: E731
    evaluation = evaluation or {}
    captions = {
        "per_case": "validation mIoU per case",
        "per_class": "validation IoU per class",
        "confusion": "confusion matrix, rows normalised: the share of each class's pixels predicted as each "
        "class (classes that never occur left out)",
    }
    eval_figures = [line for k, p in evaluation.items() for line in (f"![{captions[k]}]({rel(p)})", "")]
    other = metrics["other_convention"]
    lines = [
        "# EQUISeg demo report",
        "",
        f"Synthetic DeLiVER-layout driving scenes ({size.train} train / {size.val} val, {size.size}×{size.size}), "
        f"EQUISeg-B0 on RGB, depth, event and LiDAR, trained from scratch for {size.max_iters} iterations "
        f"(batch {cfg.data.batch_size}, crops {size.size}², AdamW lr {cfg.train.lr:g}, λ_SGM "
        f"{cfg.model.get('lambda_sgm', 60)}){' — quick mode' if quick else ''}.",
        "",
        STUDY_NOTE,
        "",
        "| stage | seconds |",
        "|---|---|",
        *[f"| {k} | {v:.0f} |" for k, v in times.items()],
        "",
        f"**Clean val mIoU {metrics['mIoU']:.2f} %** ({metrics['convention']} convention; "
        f"{other['mIoU']:.2f} % under the {other['convention']} convention. {CONVENTION_NOTE}) "
        f"Chance reference — the most frequent class everywhere: {baseline:.2f} %.",
        "",
        metrics_markdown(metrics, "Validation (best checkpoint)").replace("## ", "### "),
        *eval_figures,
        "## Training",
        "",
        f"![training curves: loss terms (log scale), learning rate and validation mIoU]({rel(curve)})",
        "",
        "## Predictions",
        "",
        "One val sample per case (paper Fig. 2): the four modalities as stored, ground truth, prediction, "
        "and errors (red: wrong, grey: right, black: unlabelled).",
        "",
        f"![predictions]({rel(panel)})",
        "",
        *sections,
        "",
        f"Machine-readable results: `{rel(out / 'eval' / 'metrics.json')}`, training log "
        f"`run/log.jsonl`, checkpoints `run/best.pt` and `run/last.pt`.",
        "",
    ]
    return "\n".join(lines)
