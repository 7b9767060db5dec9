"""Figures and reports of a robustness-benchmark result (issue 5 item 4, issue 12).

- :func:`robustness_charts`: ``robustness_missing.png`` (mIoU of every set of present modalities: EMM,
  RMM at r = 0.5 and the model-aware EMM when present, the clean mIoU as a line) and
  ``robustness_noise.png`` (clean and the NM levels), drawn with matplotlib
  (:mod:`equiseg.reports.figures`).
- :func:`write_robustness_report`: ``report.md`` and the self-contained ``report.html`` beside
  ``robustness.json``/``.md``, with the charts and the tables.
- :func:`robustness_section`: the same content as a section of another report (the demo's).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .report import HEADLINE_RATE, rate_key, to_markdown, write_report

MISSING_CHART = "robustness_missing.png"
NOISE_CHART = "robustness_noise.png"


def short_names(modalities: Sequence[str]) -> dict[str, str]:
    """Compact labels for chart axes: initials (``rgb -> R``) when they are unique, else the names."""
    initials = [m[:1].upper() for m in modalities]
    if len(set(initials)) == len(initials):
        return dict(zip(modalities, initials, strict=True))
    return {m: m for m in modalities}


def _combination_label(present: Sequence[str], short: Mapping[str, str]) -> str:
    return "+".join(short[m] for m in present)


def noise_level_label(level: str, section: Mapping[str, Any]) -> str:
    """``"NM low\nS&P 0.05, σ 0.1"``: a noise level and its parameters, for a chart's axis."""
    return f"NM {level}\nS&P {section['salt_pepper']:g}, σ {section['gaussian_std']:g}"


def robustness_charts(result: Mapping[str, Any], out_dir: str | Path, prefix: str = "") -> dict[str, Path]:
    """Write the robustness charts of ``result`` (see :func:`~equiseg.robustness.run_benchmark`).

    Args:
        result: A benchmark result.
        out_dir: Folder of the PNGs (created).
        prefix: Prepended to the file names.

    Returns:
        ``{"missing": path, "noise": path}`` for the charts that apply (``missing`` needs EMM, RMM or the
        model-aware EMM; ``noise`` needs NM).
    """
    from equiseg.reports.figures import missing_modality_chart, noise_chart

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    short = short_names(list(result["modalities"]))
    paths: dict[str, Path] = {}
    name = result.get("model_name") or "model"

    series: dict[str, list[float]] = {}
    base = None
    if result.get("emm") is not None:
        base = result["emm"]["combinations"]
        series["EMM (missing zeroed)"] = [c["mIoU"] for c in base]
    rmm = (result.get("rmm") or {}).get(rate_key(HEADLINE_RATE))
    if rmm is not None:
        base = base or rmm["combinations"]
        series[f"RMM (r = {HEADLINE_RATE:g})"] = [c["mIoU"] for c in rmm["combinations"]]
    if result.get("emm_none") is not None:
        base = base or result["emm_none"]["combinations"]
        series["EMM, None inputs (model-aware)"] = [c["mIoU"] for c in result["emm_none"]["combinations"]]
    if base is not None:
        paths["missing"] = missing_modality_chart(
            [_combination_label(c["present"], short) for c in base],
            series,
            out / f"{prefix}{MISSING_CHART}",
            abbreviations=short,
            clean=result["clean"]["mIoU"],
            title=f"{name}: mIoU per set of present modalities",
        )

    nm = result.get("nm")
    if nm is not None:
        paths["noise"] = noise_chart(
            ["clean", *[noise_level_label(lvl, sec) for lvl, sec in nm.items()]],
            {name: [result["clean"]["mIoU"], *[sec["mIoU"] for sec in nm.values()]]},
            out / f"{prefix}{NOISE_CHART}",
            title=f"{name}: mIoU under noisy modalities (salt-and-pepper + Gaussian)",
        )
    return paths


def _demote(markdown: str, levels: int = 1) -> str:
    """Push every Markdown heading ``levels`` deeper (``# A`` -> ``## A``)."""
    pad = "#" * levels
    return "\n".join(pad + line if line.startswith("#") else line for line in markdown.splitlines())


def _figure_lines(charts: Mapping[str, Path], base: Path) -> list[str]:
    captions = {"missing": "mIoU per missing-modality combination", "noise": "mIoU per noise level"}
    lines = []
    for key, path in charts.items():
        lines += [f"![{captions[key]}]({path.relative_to(base).as_posix()})", ""]
    return lines


def write_robustness_report(
    result: Mapping[str, Any],
    out_dir: str | Path,
    *,
    title: str = "Robustness report",
    model_name: str | None = None,
) -> Path:
    """Write ``robustness.json``, ``robustness.md``, the charts, ``report.md`` (which links them) and
    ``report.html`` (the same, self-contained) into ``out_dir``; returns the path of ``report.md``."""
    from equiseg.reports.html import write_html

    out = Path(out_dir)
    write_report(result, out, model_name)
    charts = robustness_charts(result, out)
    lines = [
        f"# {title}",
        "",
        "Files: [`robustness.json`](robustness.json) (every number), [`robustness.md`](robustness.md) "
        "(the tables alone).",
        "",
        *_figure_lines(charts, out),
        _demote(to_markdown(result, model_name)),
    ]
    path = out / "report.md"
    text = "\n".join(lines).rstrip() + "\n"
    path.write_text(text)
    write_html(text, out / "report.html")
    return path


def robustness_section(result: Mapping[str, Any], out_dir: str | Path, *, heading: str = "##") -> str:
    """A report section (Markdown) of a benchmark result, for the demo's report.

    Args:
        result: What :func:`~equiseg.robustness.run_benchmark` returned.
        out_dir: Directory of the report that embeds the section; the charts are written to
            ``out_dir/figures/`` and linked relative to ``out_dir``.
        heading: Markdown heading level of the section (sub-headings go one deeper).

    Returns:
        The section's Markdown, ending with a newline.
    """
    out = Path(out_dir)
    charts = robustness_charts(result, out / "figures")
    body = to_markdown(result).splitlines()
    body = body[1:] if body and body[0].startswith("# ") else body  # our own heading replaces it
    depth = len(heading)
    return (
        "\n".join(
            [
                f"{heading} Robustness under sensor failures (paper Tab. 1 protocol)",
                *_demote("\n".join(body), depth - 1).splitlines(),
                "",
                *_figure_lines(charts, out),
            ]
        ).rstrip()
        + "\n"
    )
