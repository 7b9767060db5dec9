"""Reports of an ablation (``equiseg ablate``; paper Tab. 2 and Tab. 3): the combined Markdown table
-- the paper's layout, every measurement, then the paper's own numbers -- and the bar chart. The tables'
rows and the paper's numbers are :mod:`equiseg.studies.ablation`'s."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from equiseg.engine.inference import describe_inference
from equiseg.formatting import fmt
from equiseg.studies.ablation import paper_rows

from .tables import config_line, display_name

__all__ = ["ablation_chart", "ablation_markdown"]


def _with_delta(v: float | None, delta: float | None) -> str:
    return fmt(v) if delta is None or v is None else f"{fmt(v)} ({delta:+.2f})"


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
        sims = " | ".join(fmt(r["similarity"].get(m)) for m in mods)
        lines.append(f"| {r['label']} | {sims} | {_with_delta(r['emm_avg'], delta(r, 'emm_avg'))} |")
    return lines


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
            f"| `{r['id']}` | {r['label']} | {fmt(r['mIoU'])} | {fmt(r['emm_avg'])} | "
            + " | ".join(fmt(r["similarity"].get(m)) for m in mods)
            + f" | {fmt(r['best_val_mIoU'])} | {r['iterations']} | {r['seconds']['train']:.0f} "
            f"| {r['seconds']['eval']:.0f} |"
        )
    lines += ["", "Per row: `<row id>/` holds the checkpoints, `robustness/` (EMM tables) and `analysis/`."]
    paper = paper_rows(table, [r["id"] for r in rows])
    if paper:
        lines += [
            "",
            "## The paper's numbers (MiT-B0 on DeLiVER, full schedule; deltas against its first row)",
            "",
            *_paper_layout(table, paper, ["rgb", "depth", "event", "lidar"]),
        ]
    return "\n".join(lines) + "\n"


def ablation_chart(result: Mapping[str, Any], path: Path) -> Path:
    from .figures import bar_chart

    rows = result["rows"]
    return bar_chart(
        [r["id"] for r in rows],
        {"mIoU": [r["mIoU"] for r in rows], "EMM (Avg)": [r["emm_avg"] for r in rows]},
        path,
        title=f"{result['title']}: clean mIoU and EMM (Avg)",
        ylabel="mIoU (%)",
        xlabel="row",
    )
