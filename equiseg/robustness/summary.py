"""Robustness-benchmark arithmetic (docs/design.md §6.2; paper Tab. 1): the summary of a result and the score.

- EMM/RMM averages: ``Avg`` is the plain mean of the mIoUs of all ``2^N - 1`` passes; ``EMM(p)`` is
  the expectation under independent failures with probability ``p``, renormalised over the evaluated
  sets (all missing is never evaluated): ``Σ w·mIoU / Σ w`` with ``w = p^k (1-p)^(N-k)``, ``k`` the
  number of missing modalities.
- The paper's robustness score (Tab. 1 "Mean") is the plain mean of seven numbers: clean mIoU,
  EMM Avg, EMM(p=0.1), RMM Avg and RMM(p=0.1) at ``r = 0.5``, NM low, NM mid.

The Markdown and JSON writers of a result are in :mod:`equiseg.reports.robustness`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

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
