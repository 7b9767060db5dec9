"""Reports of a comparison (``equiseg compare``; the paper's Tab. 1 layout): ``compare.md`` and the
self-contained ``report.html``, the Tab. 1 chart and the side-by-side robustness and similarity figures.
The columns are :mod:`equiseg.studies.peers`'."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from equiseg.engine.inference import describe_inference
from equiseg.formatting import fmt
from equiseg.studies.peers import COLUMNS, COSTS
from equiseg.studies.stats import mean_std

from .tables import config_line, display_name

__all__ = ["compare_chart", "compare_figures", "compare_markdown", "noise_levels", "write_compare_reports"]


def write_compare_reports(result: Mapping[str, Any], out: Path) -> Path:
    """``compare.md`` and the self-contained ``report.html`` (the same content, figures embedded);
    returns the path of ``report.html``."""
    from .html import write_html

    text = compare_markdown(result)
    (out / "compare.md").write_text(text)
    return write_html(text, out / "report.html")


def _cell(mean: float | None, std: float | None, digits: int = 2) -> str:
    """``mean ± std`` with ``digits`` decimals; the mean alone where there is no spread."""
    spec = f".{digits}f"
    return fmt(mean, spec) if mean is None or std is None else f"{fmt(mean, spec)} ± {fmt(std, spec)}"


def compare_markdown(result: Mapping[str, Any]) -> str:
    """The comparison in the paper's Tab. 1 layout, then the per-combination EMM table."""
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
                mean_std([run["summary"].get(k) for run in r["runs"]])[0]
                for k in ("clean", *(f"nm_{lvl}" for lvl in levels))
            ]
            for name, r in models.items()
        },
    }


def compare_chart(result: Mapping[str, Any], path: Path) -> Path:
    """The Tab. 1 columns as grouped bars, one bar per model, ± the std over seeds."""
    from .figures import bar_chart

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
    from equiseg.robustness.corruptions import NM_LEVELS

    from .figures import bar_chart, missing_modality_chart, noise_chart
    from .robustness import short_names

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
            sims[name] = {m: mean_std([s.get(m) for s in per_run])[0] for m in per_run[0]}
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
