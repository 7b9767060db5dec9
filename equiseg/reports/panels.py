"""Prediction panels: the pictures live in :mod:`equiseg.data.panels` (below the engine, whose TensorBoard
writer draws them too); every name is re-exported here."""

from equiseg.data.panels import Array, colorize, error_map, modality_preview, prediction_panel

__all__ = ["Array", "colorize", "error_map", "modality_preview", "prediction_panel"]
