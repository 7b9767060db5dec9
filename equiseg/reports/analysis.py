"""Reports of a modality-contribution analysis (paper Tab. 3, docs/design.md §7): the Tab. 3-style
tables of every definition, the feature norms and ``|f_c| / |f'|``, the bar chart, the files
``analysis.json``/``.md``/``.png`` and the demo's report section.

The result they lay out is :func:`equiseg.analysis.modality_contributions`'.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from equiseg.analysis.contributions import HEADLINE
from equiseg.engine.inference import describe_inference
from equiseg.formatting import fmt
from equiseg.utils import to_jsonable

from .tables import display_name

__all__ = [
    "analysis_chart",
    "analysis_markdown",
    "analysis_section",
    "cross_ratio_table",
    "definitions_table",
    "norms_table",
    "similarity_table",
    "write_analysis",
]


def similarity_table(
    section: Mapping[str, Any], modalities: Sequence[str], last_label: str = "Last stage (Tab. 3)"
) -> str:
    """Markdown table: one row per stage, a bold last-stage row (the paper's Tab. 3), modality columns."""
    lines = [
        "| Stage | " + " | ".join(display_name(m) for m in modalities) + " |",
        "|---|" + "---:|" * len(modalities),
    ]
    for stage, row in section["per_stage"].items():
        lines.append(
            f"| {stage.replace('stage', 'Stage ')} | " + " | ".join(fmt(row[m]) for m in modalities) + " |"
        )
    last, sd = section["last_stage"], section["last_stage_std"]
    lines.append(f"| **{last_label}** | " + " | ".join(f"**{fmt(last[m])}**" for m in modalities) + " |")
    lines.append("| ± std over samples | " + " | ".join(fmt(sd[m]) for m in modalities) + " |")
    return "\n".join(lines)


def definitions_table(result: Mapping[str, Any]) -> str:
    """Markdown table: every definition's last-stage similarity (%) per modality; the headline in bold."""
    mods = result["modalities"]
    headline = result["headline"]["definition"]
    lines = [
        "| Definition | Feature | Fused with | Cosine | " + " | ".join(display_name(m) for m in mods) + " |",
        "|---|---|---|---|" + "---:|" * len(mods),
    ]
    for key, sec in result["definitions"].items():
        kind, fused, reduction = key.split("/")
        cells = [fmt(sec["last_stage"][m]) for m in mods]
        if key == headline:
            cells = [f"**{c}**" for c in cells]
            key = f"**{key}** (headline)"
        lines.append(f"| {key} | {kind} | {fused} | {reduction} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def norms_table(result: Mapping[str, Any]) -> str:
    """Markdown table: each modality's mean RMS feature norm, per feature kind (rows) and stage."""
    mods = result["modalities"]
    lines = [
        "| Feature | Stage | " + " | ".join(display_name(m) for m in mods) + " |",
        "|---|---|" + "---:|" * len(mods),
    ]
    for kind, sec in result["norms"].items():
        label = "f_c (cross)" if kind == "cross" else kind
        for stage, row in sec["per_stage"].items():
            lines.append(
                f"| {label} | {stage.replace('stage', 'stage ')} | "
                + " | ".join(fmt(row[m], ".4g") for m in mods)
                + " |"
            )
    return "\n".join(lines)


def cross_ratio_table(result: Mapping[str, Any]) -> str:
    """Markdown table of RMS(f_c) / RMS(f') per stage and modality (empty string where undefined)."""
    sec = result.get("cross_ratio")
    if not sec:
        return ""
    mods = result["modalities"]
    lines = [
        "| RMS(f_c) / RMS(f') | " + " | ".join(display_name(m) for m in mods) + " |",
        "|---|" + "---:|" * len(mods),
    ]
    for stage, row in sec["per_stage"].items():
        lines.append(
            f"| {stage.replace('stage', 'stage ')} | " + " | ".join(fmt(row[m], ".4g") for m in mods) + " |"
        )
    lines.append(
        "| ± std over samples (last) | "
        + " | ".join(fmt(sec["last_stage_std"][m], ".4g") for m in mods)
        + " |"
    )
    return "\n".join(lines)


def _of_split(result: Mapping[str, Any]) -> str:
    """``" of the val split"`` where the result records its split (``equiseg analyze`` and the study
    runners add it; :func:`~equiseg.analysis.modality_contributions` only sees a data set), else
    nothing."""
    return f" of the {result['split']} split" if result.get("split") else ""


def analysis_markdown(result: Mapping[str, Any], title: str = "Modality-contribution analysis") -> str:
    """The analysis as Markdown: the headline table and its per-pixel variant, then every definition's
    last-stage similarity side by side, the feature norms and ``|f_c| / |f'|`` per stage."""
    mods = result["modalities"]
    lines = [
        f"# {title}",
        "",
        f"Cosine similarity between each modality's feature and the fused feature, in % "
        f"({result['num_samples']} samples{_of_split(result)}). Definition: {result['definition']}. "
        "The paper's Tab. 3 uses the last stage; higher = the modality contributes more to the fused "
        "feature. Features of one forward per sample: "
        f"{describe_inference(result.get('inference'))}."
        + (f" Network forward: {result['precision_note']}." if result.get("precision_note") else ""),
        "",
        similarity_table(result["similarity"], mods),
        "",
        f"Per-pixel variant ({result['pixel_definition']}):",
        "",
        similarity_table(result["pixel_similarity"], mods, last_label="Last stage"),
        "",
    ]
    if "definitions" not in result:  # a result written before the definitions were measured
        return "\n".join(lines)
    head = result["headline"]
    lines += [
        "## Every definition, last stage",
        "",
        f"The tables above are `{head['definition']}` and `{head['pixel_definition']}`. {head['why']}",
        "",
        *(f"- feature `{k}`: {v}" for k, v in result["features"].items()),
        *(f"- fused `{k}`: {v}" for k, v in result["fused"].items()),
        *(f"- cosine `{k}`: {v}" for k, v in result["reductions"].items()),
        "",
    ]
    if not result["intermediates"]:
        lines += [
            "This model exposes only its per-modality stage features (its `encode` output), not the "
            "pre-LN stream or the features before a fusion block, so only those rows are reported.",
            "",
        ]
    lines += [
        definitions_table(result),
        "",
        "## Feature norms",
        "",
        f"{result['norm_definition'][0].upper()}{result['norm_definition'][1:]}."
        + (
            " Post-LN features have about equal norms by construction; the paper's numbers need "
            "un-normalised weak modalities with much smaller norms (docs/design.md §7)."
            if result["intermediates"]
            else ""
        ),
        "",
        norms_table(result),
        "",
    ]
    ratio = cross_ratio_table(result)
    if ratio:
        lines += [
            f"How much the CMTB adds to each modality's stream: {result['cross_ratio_definition']}.",
            "",
            ratio,
            "",
        ]
    return "\n".join(lines)


def analysis_chart(result: Mapping[str, Any], path: str | Path) -> Path:
    """Bar chart PNG: one group per modality, one bar per stage (the last one is Tab. 3's number)."""
    from .figures import similarity_chart

    mods = result["modalities"]
    return similarity_chart(
        result["similarity"]["per_stage"],
        mods,
        path,
        labels={m: display_name(m) for m in mods},
        title=f"Cosine similarity of each modality's feature with the fused feature ({result['num_samples']} "
        f"samples{_of_split(result)})",
    )


def write_analysis(
    result: Mapping[str, Any], out_dir: str | Path, title: str = "Modality-contribution analysis"
) -> dict[str, Path]:
    """Write ``analysis.json``, ``analysis.md`` and the bar chart ``analysis.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "analysis.json", "markdown": out / "analysis.md", "chart": out / "analysis.png"}
    paths["json"].write_text(json.dumps(to_jsonable(result), indent=2, allow_nan=False) + "\n")
    chart = analysis_chart(result, paths["chart"])
    md = analysis_markdown(result, title) + f"\n![similarity per stage]({chart.name})\n"
    paths["markdown"].write_text(md)
    return paths


def analysis_section(result: Mapping[str, Any], out_dir: str | Path, *, heading: str = "##") -> str:
    """A report section (Markdown) for the demo: the Tab. 3-style table and a bar chart.

    Args:
        result: What :func:`~equiseg.analysis.modality_contributions` returned.
        out_dir: Directory of the report that embeds the section; the chart is written to
            ``out_dir/figures/modality_similarity.png`` and linked relative to ``out_dir``.
        heading: Markdown heading level of the section.

    Returns:
        The section's Markdown, ending with a newline.
    """
    out = Path(out_dir)
    chart = analysis_chart(result, out / "figures" / "modality_similarity.png")
    mods = result["modalities"]
    last = result["similarity"]["last_stage"]
    weakest = min(mods, key=lambda m: last[m])
    return "\n".join(
        [
            f"{heading} Modality contributions (paper Tab. 3)",
            "",
            f"Cosine similarity between each modality's feature and the fused (modality-mean) feature, in %, "
            f"over {result['num_samples']} samples{_of_split(result)} ({result['definition']}). The paper's "
            "Tab. 3 reports "
            "the last stage; the SGM is meant to raise the weak modalities. Here the lowest is "
            f"{display_name(weakest)} ({fmt(last[weakest])} %). Definition `"
            f"{result.get('headline', {}).get('definition', HEADLINE)}`: each modality's stage output "
            "against the head's input; every other definition measured and the feature norms are in the "
            "analysis's own `analysis.md`.",
            "",
            similarity_table(result["similarity"], mods),
            "",
            f"![modality similarity per stage]({chart.relative_to(out).as_posix()})",
            "",
        ]
    )
