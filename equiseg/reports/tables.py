"""Pieces shared by the Markdown tables of the reports: the paper's spelling of the modalities and the
line that says how a study's table was made. Numbers are formatted by the package's one formatter,
:func:`equiseg.formatting.fmt`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from equiseg.studies.schedules import SCHEDULES

__all__ = ["DISPLAY_NAMES", "config_line", "display_name"]

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


def config_line(result: Mapping[str, Any]) -> str:
    """``Config `X` with `overrides` — quick mode ...``: how a study's table was made (ablate, compare, study)."""
    return (
        f"Config `{result['config'] or '(in memory)'}`"
        + (f" with `{' '.join(result['overrides'])}`" if result["overrides"] else "")
        + (
            " — **quick mode** (short schedule, val subset: not comparable with the paper)"
            if result["quick"]
            else ""
        )
        + (
            f" — the **{result['schedule']}** schedule (`{' '.join(SCHEDULES[result['schedule']].overrides)}`)"
            if result.get("schedule") in SCHEDULES and not result["quick"]
            else ""
        )
    )
