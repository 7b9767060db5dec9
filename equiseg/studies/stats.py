"""Statistics over seeds (``equiseg study``, ``compare``): mean and sample std, and the paired difference
of a row to the full model, seed by seed, with the half-width of its 95 % Student-t interval."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

__all__ = ["mean_std", "paired_difference", "spread", "t_quantile"]

# two-sided 95 % Student-t quantiles t_{0.975, df}, df = 1 ... 30 (beyond: the normal 1.96)
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t_quantile(df: int) -> float:
    """``t_{0.975, df}`` (two-sided 95 %)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    return _T975[df - 1] if df <= len(_T975) else 1.96


def paired_difference(row: Sequence[float], full: Sequence[float]) -> dict[str, Any]:
    """Mean of ``row_k − full_k`` over seeds and its 95 % t-interval half-width (None for one seed)."""
    if len(row) != len(full) or not row:
        raise ValueError(f"paired values need the same seeds, got {len(row)} and {len(full)}")
    d = [a - b for a, b in zip(row, full, strict=True)]
    mean = statistics.fmean(d)
    if len(d) == 1:
        return {"mean": mean, "half_width": None, "low": None, "high": None, "n": 1}
    hw = t_quantile(len(d) - 1) * statistics.stdev(d) / math.sqrt(len(d))
    return {"mean": mean, "half_width": hw, "low": mean - hw, "high": mean + hw, "n": len(d)}


def spread(values: Sequence[float]) -> dict[str, Any]:
    """``{"values", "mean", "std"}`` of one metric over seeds (sample std; None for one seed)."""
    return {
        "values": list(values),
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else None,
    }


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample std of the measured values (None and NaN left out); ``(None, None)`` when none
    was measured, std None for one value."""
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)
