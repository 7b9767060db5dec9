"""Pictures: colour-coded labels, modality previews and prediction panels (paper Fig. 2).

The charts are matplotlib figures in :mod:`equiseg.reports.figures`; ``bar_chart`` and ``line_chart``
stay importable from here, loading matplotlib on first use.
"""

from __future__ import annotations

from typing import Any

from .panels import colorize, error_map, modality_preview, prediction_panel

__all__ = ["bar_chart", "colorize", "error_map", "line_chart", "modality_preview", "prediction_panel"]


def bar_chart(*args: Any, **kwargs: Any) -> Any:
    """:func:`equiseg.reports.figures.bar_chart` (grouped bars, written as PNG)."""
    from equiseg.reports.figures import bar_chart as chart

    return chart(*args, **kwargs)


def line_chart(*args: Any, **kwargs: Any) -> Any:
    """:func:`equiseg.reports.figures.line_chart` (one line per series, written as PNG)."""
    from equiseg.reports.figures import line_chart as chart

    return chart(*args, **kwargs)
