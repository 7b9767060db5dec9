"""Pictures: colour-coded labels, modality previews, prediction panels (paper Fig. 2) and simple charts."""

from .charts import bar_chart, line_chart
from .panels import colorize, error_map, modality_preview, prediction_panel

__all__ = ["bar_chart", "colorize", "error_map", "line_chart", "modality_preview", "prediction_panel"]
