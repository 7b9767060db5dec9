"""Pieces shared by the Markdown tables of the reports: the paper's spelling of the modalities. Numbers
are formatted by the package's one formatter, :func:`equiseg.formatting.fmt`."""

from __future__ import annotations

__all__ = ["DISPLAY_NAMES", "display_name"]

# Display names of the paper's modalities; others are shown as they are named.
DISPLAY_NAMES = {
    "rgb": "RGB",
    "depth": "Depth",
    "event": "Event",
    "lidar": "Lidar",
    "frame_camera": "Camera",
    "event_camera": "Event",
    "radar": "Radar",
}


def display_name(modality: str) -> str:
    """``"rgb" -> "RGB"``, ``"lidar" -> "Lidar"`` (the paper's spelling); unknown names unchanged."""
    return DISPLAY_NAMES.get(modality, modality)
