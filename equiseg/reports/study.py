"""Reports of a study (``equiseg study``): ``study.md`` and the self-contained ``report.html`` -- every
section as mean ± std over seeds with the paired difference to the full model, then the paper's claims
and their verdicts -- and one chart per section. The claims are :mod:`equiseg.studies.claims`'."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from equiseg.engine.inference import describe_inference
from equiseg.formatting import fmt
from equiseg.studies.claims import LABELS, METRICS, evaluate_claims

from .tables import config_line

__all__ = ["chart_name", "study_chart", "study_markdown", "write_study_reports"]


def chart_name(section: Mapping[str, Any]) -> str:
    """File name of a section's chart, beside ``study.md``: ``study_<init>_<table>.png``."""
    return f"study_{section['init']}_{section['table']}.png"


def write_study_reports(result: Mapping[str, Any], out: Path) -> None:
    """``study.md`` and the self-contained ``report.html`` (the same content, charts embedded)."""
    from .html import write_html

    text = study_markdown(result)
    (out / "study.md").write_text(text)
    write_html(text, out / "report.html")


def _cell(stat: Mapping[str, Any], is_full: bool) -> str:
    text = fmt(stat["mean"]) + ("" if stat["std"] is None else f" ± {fmt(stat['std'])}")
    if is_full:
        return text
    d = stat["vs_full"]
    ci = "" if d["half_width"] is None else f" ± {fmt(d['half_width'])}"
    return f"{text} (Δ {d['mean']:+.2f}{ci})"


def _scored_line(section: Mapping[str, Any]) -> list[str]:
    """``["Scored on 16 samples of the val split, whole image, scale 1.", ""]`` (nothing for a section
    of an older ``study.json`` that did not record it)."""
    n = section.get("num_samples")
    if n is None:
        return []
    where = f"{n} sample{'' if n == 1 else 's'} of the {section.get('split', 'val')} split"
    return [f"Scored on {where}, {describe_inference(section.get('inference'))}.", ""]


def study_markdown(result: Mapping[str, Any]) -> str:
    """Every section as a table: mean ± std over seeds, and Δ to the full model ± its 95 % interval."""
    lines = [
        "# The paper's claims under seeds",
        "",
        config_line(result)
        + f". Seeds {', '.join(map(str, result['seeds']))}; per row the mean ± sample std over seeds, and "
        "(Δ) the paired difference to the full model, seed by seed, ± the half-width of its 95 % Student-t "
        "interval (an interval that excludes 0 is a difference the seeds support). Pretrained inits use "
        f"`{' '.join(result['recipe_for_pretrained_inits'])}`. Values in %.",
    ]
    for sec in result["sections"]:
        rows = sec["rows"]
        keys = list(next(iter(rows.values())))
        heads = [LABELS.get(k, k.replace("sim_", "sim. ")) for k in keys]
        lines += [
            "",
            f"## {sec['table']}, init {sec['init']} (full model: `{sec['full']}`)",
            "",
            *_scored_line(sec),
            "| Row | " + " | ".join(heads) + " |",
            "|---|" + "---:|" * len(keys),
        ]
        for name, stats in rows.items():
            lines.append(
                f"| `{name}` | " + " | ".join(_cell(stats[k], name == sec["full"]) for k in keys) + " |"
            )
        lines += ["", f"![{sec['table']}, init {sec['init']}: mean ± std over seeds]({chart_name(sec)})"]
    claims = result.get("claims") or evaluate_claims(result["sections"])
    if claims:
        lines += [
            "",
            "## The paper's claims",
            "",
            "Each claim as the direction of a paired difference (row − full model); **reproduced**: its 95 % "
            "interval lies on the paper's side of 0, **reversed**: on the other side, **not resolved**: it "
            "contains 0.",
            "",
            "| Claim | Init | Δ (row − full) | 95 % interval | Verdict |",
            "|---|---|---:|---|---|",
        ]
        for c in claims:
            d = c["diff"]
            ci = "–" if d["half_width"] is None else f"[{d['low']:+.2f}, {d['high']:+.2f}]"
            lines.append(f"| {c['claim']} | {c['init']} | {d['mean']:+.2f} | {ci} | {c['verdict']} |")
    lines += ["", f"Total time: {result['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


def study_chart(section: Mapping[str, Any], path: Path) -> Path:
    """Grouped bars of a section: per row the mean over seeds of each metric, ± the std over seeds."""
    from .figures import bar_chart

    rows = section["rows"]
    keys = [k for k in METRICS[section["table"]]]
    n = max((len(rows[r][k]["values"]) for r in rows for k in keys), default=0)
    return bar_chart(
        list(rows),
        {LABELS[k]: [rows[r][k]["mean"] for r in rows] for k in keys},
        path,
        errors={LABELS[k]: [rows[r][k]["std"] for r in rows] for k in keys},
        title=f"{section['table']}, init {section['init']}: mean ± std over {n} seed{'s' if n != 1 else ''}",
        ylabel="mIoU (%)",
        xlabel="row (full model first)",
    )
