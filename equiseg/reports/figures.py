"""Every chart of the reports, drawn with matplotlib.

- :func:`training_curves`: loss terms (log scale), learning rate and val mIoU against the iteration.
- :func:`missing_modality_chart`, :func:`noise_chart`: robustness per set of present modalities and per
  noise level, for one model (EMM / RMM / model-aware EMM side by side) or several (one series each).
- :func:`similarity_chart`: modality-to-fused cosine similarity per stage (paper Tab. 3).
- :func:`hbar_chart` (per case, per class) and :func:`bar_chart` / :func:`line_chart` (the generic ones).
- :func:`confusion_heatmap`: the row-normalised confusion matrix with class names.
- :func:`prediction_grid`: the paper's Fig. 2 -- one row per case, columns the modalities, the ground
  truth and each model's prediction, with a legend of the classes shown.

The charts are drawn in :mod:`.charts`, the two grids of cells in :mod:`.grids`, both on the plumbing of
:mod:`.plotting` (the Agg canvas without pyplot, the Okabe–Ito style, the formats: PNG, SVG on request
through ``EQUISEG_FIGURE_FORMATS``); every name is importable from here.
"""

from .charts import (
    bar_chart,
    hbar_chart,
    line_chart,
    missing_modality_chart,
    noise_chart,
    similarity_chart,
    training_curves,
)
from .grids import ConfusionFigure, confusion_heatmap, prediction_grid
from .plotting import DPI, FORMATS, FORMATS_ENV, PALETTE, figure_formats, save

__all__ = [
    "DPI",
    "FORMATS",
    "FORMATS_ENV",
    "PALETTE",
    "ConfusionFigure",
    "bar_chart",
    "confusion_heatmap",
    "figure_formats",
    "hbar_chart",
    "line_chart",
    "missing_modality_chart",
    "noise_chart",
    "prediction_grid",
    "save",
    "similarity_chart",
    "training_curves",
]
