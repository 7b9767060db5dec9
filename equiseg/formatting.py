"""The one number formatter of every table the package writes (Markdown reports, the training run's
``metrics.md``, the terminal summaries).

It sits at the bottom of the layers (docs/architecture.md) so that the writers in ``equiseg/reports/``
and the training run's metrics writer in ``equiseg/engine/evaluate.py`` (which the trainer calls at
every validation, below the reports) share it: a missing number (None, NaN) prints as an en dash,
everything else with the format asked for.
"""

from __future__ import annotations

import math

__all__ = ["MISSING", "fmt"]

MISSING = "–"  # what a table shows for a number that was not measured (None) or is undefined (NaN)


def fmt(value: float | None, spec: str = ".2f") -> str:
    """``value`` formatted with ``spec`` (default two decimals, the tables' % values; ``".4g"`` for
    feature norms and ratios), :data:`MISSING` for None and NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return format(value, spec)
