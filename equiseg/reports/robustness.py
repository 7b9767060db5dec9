"""Reports of a robustness-benchmark result (docs/design.md §6; paper Tab. 1).

- :func:`to_markdown` lays the summary out like Tab. 1 and adds per-combination and per-level tables;
  :func:`write_report` writes ``robustness.json`` and ``robustness.md``; :func:`table1_markdown` is
  the Tab. 1 table of several models.
- :func:`robustness_charts`: ``robustness_missing.png`` (mIoU of every set of present modalities: EMM,
  RMM at r = 0.5 and the model-aware EMM when present, the clean mIoU as a line) and
  ``robustness_noise.png`` (clean and the NM levels), drawn with matplotlib (:mod:`.figures`).
- :func:`write_robustness_report`: ``report.md`` and the self-contained ``report.html`` beside
  ``robustness.json``/``.md``, with the charts and the tables.
- :func:`robustness_section`: the same content as a section of another report (the demo's).

The arithmetic (summary, weighted averages, the robustness score) is :mod:`equiseg.robustness.summary`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from equiseg.engine.inference import describe_inference
from equiseg.formatting import fmt
from equiseg.robustness.summary import HEADLINE_RATE, TABLE1_COLUMNS, p_key, rate_key
from equiseg.utils import write_atomic, write_json_atomic

# ---------------------------------------------------------------------------------------------------
# Markdown


def table1_markdown(rows: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """A Markdown table laid out like the paper's Tab. 1.

    Args:
        rows: ``{model label: {dataset name: summary}}``, e.g.
            ``{"EQUISeg (25.8)": {"DeLiVER": s1, "MUSES": s2}}``; every summary holds the keys of
            :data:`TABLE1_COLUMNS` (missing ones print as "–"). Datasets appear as column groups in the
            order first seen; the first column of each group is prefixed with the data set's name.

    Returns:
        The table, without a trailing newline.
    """
    datasets: list[str] = []
    for per_ds in rows.values():
        datasets += [d for d in per_ds if d not in datasets]
    header = ["Model (#Params(M))"]
    for ds in datasets:
        names = [title for _, title in TABLE1_COLUMNS]
        if ds:
            names[0] = f"{ds}: {names[0]}"
        header += names
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" + "---:|" * (len(header) - 1)]
    for label, per_ds in rows.items():
        cells = [label]
        for ds in datasets:
            summary = per_ds.get(ds, {})
            cells += [fmt(summary.get(key)) for key, _ in TABLE1_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _model_label(result: Mapping[str, Any], model_name: str | None) -> str:
    name = model_name or result.get("model_name") or "model"
    params = result.get("num_params_m")
    return f"{name} ({params:.2f})" if params is not None else name


def to_markdown(result: Mapping[str, Any], model_name: str | None = None) -> str:
    """Markdown report of one benchmark result: Tab. 1 row, per-combination and per-level tables; the
    split scored (``result["split"]``, where recorded) is named in the opening paragraph."""
    summary = result["summary"]
    names = result["modalities"]
    ev = result.get("event_index")
    conv = result["convention"]
    conv_text = {
        "reference": "classes with no union count as IoU 0 over all classes, as in the published numbers",
        "present": "classes with no union are left out of the mean (mmseg); not comparable with papers",
    }.get(conv, conv)
    split = f" of the {result['split']} split" if result.get("split") else ""
    out = [
        "# Robustness benchmark",
        "",
        f"Protocol of Liao et al. (CVPR-W 2025) as in docs/design.md §6, on {result['num_samples']} samples"
        f"{split}, seed {result['seed']}. Modalities: {', '.join(names)}"
        + (f" ({names[ev]} gets salt-and-pepper noise only)." if ev is not None else "."),
        f"mIoU in %, convention **{conv}** ({conv_text}).",
        f"Inference: {describe_inference(result.get('inference'))} (every variant; the clean pass is what "
        "`equiseg eval` reports under the same config)"
        + (f". Network forward: {result['precision_note']}." if result.get("precision_note") else "."),
        "",
        f"## Summary (paper Tab. 1 layout; RMM at r = {HEADLINE_RATE:g})",
        "",
        table1_markdown({_model_label(result, model_name): {"": summary}}),
        "",
        "Mean = the paper's robustness score: mean of mIoU, EMM (Avg), EMM (p=0.1), RMM (Avg), "
        "RMM (p=0.1), NM (low), NM (mid).",
    ]
    emm, rmm, none = result.get("emm"), result.get("rmm"), result.get("emm_none")
    base = emm or none or (next(iter(rmm.values())) if rmm else None)
    if base is not None:
        cols: list[tuple[str, list[dict[str, Any]], dict[str, Any]]] = []
        if emm is not None:
            cols.append(("EMM", emm["combinations"], emm))
        for r, sec in (rmm or {}).items():
            cols.append((f"RMM r={r}", sec["combinations"], sec))
        if none is not None:
            cols.append(("EMM, None inputs (model-aware) †", none["combinations"], none))
        out += ["", "## Missing modalities per combination", ""]
        out.append("| Present | Missing | " + " | ".join(c[0] for c in cols) + " |")
        out.append("|---|---|" + "---:|" * len(cols))
        for i, combo in enumerate(base["combinations"]):
            missing = "+".join(combo["missing"]) or "–"
            cells = [combo["name"], missing] + [fmt(c[1][i]["mIoU"]) for c in cols]
            out.append("| " + " | ".join(cells) + " |")
        stat_keys = ["avg"] + [p_key(p) for p in result["protocol"]["ps"]]
        for key in stat_keys:
            label = "**Avg**" if key == "avg" else f"**p={key[1:]}**"
            out.append(f"| {label} | | " + " | ".join(fmt(c[2].get(key)) for c in cols) + " |")
        if none is not None:
            out += [
                "",
                "† Not part of the protocol: missing modalities are passed as `None` (the model drops them) "
                "instead of zero tensors.",
            ]
    nm = result.get("nm")
    if nm is not None:
        out += ["", "## Noisy modalities", "", "| Level | Salt-and-pepper density | Gaussian std | mIoU |"]
        out.append("|---|---:|---:|---:|")
        for lvl, sec in nm.items():
            out.append(f"| {lvl} | {sec['salt_pepper']:g} | {sec['gaussian_std']:g} | {fmt(sec['mIoU'])} |")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------------
# JSON


def write_report(
    result: Mapping[str, Any], out_dir: str | Path, model_name: str | None = None
) -> tuple[Path, Path]:
    """Write ``robustness.json`` (the whole result, strict JSON) and ``robustness.md`` into ``out_dir``.

    Returns:
        The paths of the two files.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "robustness.json", out / "robustness.md"
    write_json_atomic(json_path, result)  # whole or not at all: a full disk leaves no 0-byte JSON
    write_atomic(md_path, to_markdown(result, model_name))
    return json_path, md_path


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
    write_atomic(path, text)
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
