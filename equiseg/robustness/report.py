"""Robustness-benchmark arithmetic and reports (SPEC §5; paper Tab. 1).

- EMM/RMM averages: ``Avg`` is the plain mean of the mIoUs of all ``2^N - 1`` passes; ``EMM(p)`` is
  the expectation under independent failures with probability ``p``, renormalised over the evaluated
  sets (all missing is never evaluated): ``Σ w·mIoU / Σ w`` with ``w = p^k (1-p)^(N-k)``, ``k`` the
  number of missing modalities.
- The paper's robustness score (Tab. 1 "Mean") is the plain mean of seven numbers: clean mIoU,
  EMM Avg, EMM(p=0.1), RMM Avg and RMM(p=0.1) at ``r = 0.5``, NM low, NM mid.
- :func:`to_markdown` lays the summary out like Tab. 1 and adds per-combination and per-level tables;
  :func:`write_report` writes ``robustness.json`` and ``robustness.md``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from equiseg.utils import to_jsonable

# The numbers averaged into the paper's robustness score: (summary key, Tab. 1 column header).
HEADLINE_P = 0.1
HEADLINE_RATE = 0.5
TABLE1_COLUMNS: tuple[tuple[str, str], ...] = (
    ("clean", "mIoU"),
    ("emm_avg", "EMM (Avg)"),
    (f"emm_p{HEADLINE_P:g}", f"EMM (p={HEADLINE_P:g})"),
    (f"rmm_avg[{HEADLINE_RATE:g}]", "RMM (Avg)"),
    (f"rmm_p{HEADLINE_P:g}[{HEADLINE_RATE:g}]", f"RMM (p={HEADLINE_P:g})"),
    ("nm_low", "NM (low)"),
    ("nm_mid", "NM (mid)"),
    ("mean", "Mean"),
)


def robustness_score(
    clean: float,
    emm_avg: float,
    emm_p01: float,
    rmm_avg: float,
    rmm_p01: float,
    nm_low: float,
    nm_mid: float,
) -> float:
    """The paper's robustness score (Tab. 1 "Mean"): the plain mean of its seven inputs.

    ``rmm_avg`` and ``rmm_p01`` are taken at drop rate ``r = 0.5``. Example (paper, DeLiVER):
    ``robustness_score(67.90, 48.22, 65.75, 50.96, 64.64, 34.87, 19.13)`` ≈ 50.21.
    """
    values = (clean, emm_avg, emm_p01, rmm_avg, rmm_p01, nm_low, nm_mid)
    return sum(values) / len(values)


def emm_weight(p: float, num_missing: int, num_modalities: int) -> float:
    """Probability weight ``p^k (1-p)^(N-k)`` of one set of ``k`` missing modalities out of ``N``."""
    return p**num_missing * (1.0 - p) ** (num_modalities - num_missing)


def weighted_miou(mious: Sequence[float], num_missing: Sequence[int], num_modalities: int, p: float) -> float:
    """``Σ w·mIoU / Σ w`` over the evaluated combinations, ``w = p^k (1-p)^(N-k)`` (EMM(p), RMM(p)).

    Args:
        mious: mIoU of each combination.
        num_missing: Number of missing modalities ``k`` of each combination.
        num_modalities: ``N``.
        p: Failure probability of one modality, in ``[0, 1)``.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"failure probability p must be in [0, 1), got {p}")
    if len(mious) != len(num_missing) or not mious:
        raise ValueError("need one num_missing per mIoU, and at least one combination")
    weights = [emm_weight(p, k, num_modalities) for k in num_missing]
    return sum(w * m for w, m in zip(weights, mious, strict=True)) / sum(weights)


def p_key(p: float) -> str:
    """``0.1 -> "p0.1"`` (the suffix of ``emm_p0.1`` etc.)."""
    return f"p{p:g}"


def rate_key(r: float) -> str:
    """``0.5 -> "0.5"`` (the bracketed part of ``rmm_avg[0.5]``)."""
    return f"{r:g}"


def combination_stats(
    combinations: Sequence[Mapping[str, Any]], num_modalities: int, ps: Sequence[float]
) -> dict[str, float]:
    """``{"avg": ..., "p0.2": ..., ...}`` of combination records (keys ``mIoU`` and ``num_missing``)."""
    mious = [float(c["mIoU"]) for c in combinations]
    ks = [int(c["num_missing"]) for c in combinations]
    stats = {"avg": sum(mious) / len(mious)}
    for p in ps:
        stats[p_key(p)] = weighted_miou(mious, ks, num_modalities, p)
    return stats


def build_summary(result: Mapping[str, Any]) -> dict[str, float | None]:
    """The flat ``summary`` of a benchmark result (see :func:`equiseg.robustness.run_benchmark`).

    ``mean`` is ``None`` when one of its seven inputs was not evaluated (a test, ``p = 0.1``, the rate
    0.5 or the low/mid noise levels left out).
    """
    pkeys = [p_key(p) for p in result["protocol"]["ps"]]
    summary: dict[str, float | None] = {"clean": result["clean"]["mIoU"]}
    emm = result.get("emm")
    if emm is not None:
        summary["emm_avg"] = emm["avg"]
        summary.update({f"emm_{k}": emm[k] for k in pkeys})
    rmm = result.get("rmm")
    if rmm is not None:
        for r, sec in rmm.items():
            summary[f"rmm_avg[{r}]"] = sec["avg"]
            summary.update({f"rmm_{k}[{r}]": sec[k] for k in pkeys})
    nm = result.get("nm")
    if nm is not None:
        summary.update({f"nm_{lvl}": sec["mIoU"] for lvl, sec in nm.items()})
    needed = [key for key, _ in TABLE1_COLUMNS if key != "mean"]
    values = [summary.get(k) for k in needed]
    summary["mean"] = robustness_score(*values) if all(v is not None for v in values) else None
    return summary


# ---------------------------------------------------------------------------------------------------
# Markdown


def _fmt(v: float | None) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


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
            cells += [_fmt(summary.get(key)) for key, _ in TABLE1_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _model_label(result: Mapping[str, Any], model_name: str | None) -> str:
    name = model_name or result.get("model_name") or "model"
    params = result.get("num_params_m")
    return f"{name} ({params:.2f})" if params is not None else name


def to_markdown(result: Mapping[str, Any], model_name: str | None = None) -> str:
    """Markdown report of one benchmark result: Tab. 1 row, per-combination and per-level tables."""
    summary = result["summary"]
    names = result["modalities"]
    ev = result.get("event_index")
    conv = result["convention"]
    conv_text = {
        "reference": "classes with no union count as IoU 0 over all classes, as in the published numbers",
        "present": "classes with no union are left out of the mean (mmseg); not comparable with papers",
    }.get(conv, conv)
    out = [
        "# Robustness benchmark",
        "",
        f"Protocol of Liao et al. (CVPR-W 2025) as pinned by SPEC §5, on {result['num_samples']} samples, "
        f"seed {result['seed']}. Modalities: {', '.join(names)}"
        + (f" ({names[ev]} gets salt-and-pepper noise only)." if ev is not None else "."),
        f"mIoU in %, convention **{conv}** ({conv_text}).",
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
            cells = [combo["name"], missing] + [_fmt(c[1][i]["mIoU"]) for c in cols]
            out.append("| " + " | ".join(cells) + " |")
        stat_keys = ["avg"] + [p_key(p) for p in result["protocol"]["ps"]]
        for key in stat_keys:
            label = "**Avg**" if key == "avg" else f"**p={key[1:]}**"
            out.append(f"| {label} | | " + " | ".join(_fmt(c[2].get(key)) for c in cols) + " |")
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
            out.append(f"| {lvl} | {sec['salt_pepper']:g} | {sec['gaussian_std']:g} | {_fmt(sec['mIoU'])} |")
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
    json_path.write_text(json.dumps(to_jsonable(result), indent=2, allow_nan=False) + "\n")
    md_path.write_text(to_markdown(result, model_name))
    return json_path, md_path
