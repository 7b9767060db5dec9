"""The plumbing of every figure of the reports (:mod:`.figures` lists the figures).

**Backend.** The figures are :class:`matplotlib.figure.Figure` objects bound to the Agg canvas
explicitly, and pyplot is never imported: this renders without a display and without switching the
backend of a notebook or program that imports equiseg (``matplotlib.use("Agg")`` would).

**Style.** The Okabe–Ito palette (:data:`PALETTE`, safe under the common colour-vision deficiencies),
``viridis`` for the heatmap, DejaVu Sans (matplotlib's own font: λ, ±, ² and – render).

**Formats.** Every function writes the PNG it is given; SVG on request: ``formats=("png", "svg")`` or
the environment variable ``EQUISEG_FIGURE_FORMATS=png,svg`` (see :func:`figure_formats`) writes a
sibling ``.svg`` too. The reports link and embed the PNG.
"""

from __future__ import annotations

import functools
import math
import os
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from equiseg.utils import atomic_output

__all__ = ["DPI", "FORMATS", "FORMATS_ENV", "PALETTE", "figure_formats", "save"]


# Okabe & Ito (2008), "Color Universal Design": distinguishable under protan-, deutan- and tritanopia.
# Yellow (#F0E442) comes last: it is faint on white.
PALETTE: tuple[str, ...] = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#D55E00",  # vermillion
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#F0E442",  # yellow
)
DPI = 150
FORMATS = ("png", "svg", "pdf")
FORMATS_ENV = "EQUISEG_FIGURE_FORMATS"
_STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "figure.titlesize": 11,
    "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.grid.axis": "y",
    "grid.color": "#dddddd",
    "grid.linewidth": 0.6,
    "axes.axisbelow": True,
    "image.cmap": "viridis",
    "svg.hashsalt": "equiseg",  # deterministic SVG ids
    "svg.fonttype": "none",  # text stays text (searchable, smaller)
}


# ---------------------------------------------------------------------------------------------------
# plumbing


def figure_formats() -> tuple[str, ...]:
    """The formats written by default: ``("png",)``, or those named in ``EQUISEG_FIGURE_FORMATS``
    (comma-separated, e.g. ``png,svg``; one of :data:`FORMATS` each)."""
    raw = os.environ.get(FORMATS_ENV, "").strip()
    if not raw:
        return ("png",)
    fmts = tuple(dict.fromkeys(f.strip().lower().lstrip(".") for f in raw.split(",") if f.strip()))
    bad = [f for f in fmts if f not in FORMATS]
    if bad:
        raise ValueError(f"{FORMATS_ENV}={raw!r}: unknown format(s) {bad}; choose from {', '.join(FORMATS)}")
    return fmts


def _styled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``fn`` under the report style (artists read the rcParams when they are created)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with matplotlib.rc_context(_STYLE):
            return fn(*args, **kwargs)

    return wrapper


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, path: str | Path, formats: Sequence[str] | None = None) -> Path:
    """Write ``fig`` to ``path`` (its suffix is the primary format, PNG when it has none) and to a
    sibling file per extra format of ``formats`` (default :func:`figure_formats`); returns ``path``."""
    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = figure_formats() if formats is None else tuple(f.lower().lstrip(".") for f in formats)
    for fmt in dict.fromkeys([path.suffix[1:].lower(), *extra]):
        if fmt not in FORMATS:
            raise ValueError(f"unknown figure format {fmt!r}; choose from {', '.join(FORMATS)}")
        meta = {"Software": "equiseg (matplotlib)"} if fmt == "png" else {"Date": None}
        # written whole or not at all (a full disk leaves no partial file; the error names the figure)
        with matplotlib.rc_context(_STYLE), atomic_output(path.with_suffix(f".{fmt}")) as tmp:
            fig.savefig(tmp, format=fmt, dpi=DPI, metadata=meta)
    return path


def _wrap(text: str, width_in: float, fontsize: float = 11.0) -> str:
    """``text`` broken into lines that fit ``width_in`` inches at ``fontsize`` points (DejaVu Sans
    averages about 0.55 em per character)."""
    chars = max(20, int(width_in * 72 / (fontsize * 0.55)))
    return "\n".join(textwrap.wrap(text, chars)) if len(text) > chars else text


def _nan(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def _long_labels(labels: Sequence[str], room: float) -> bool:
    """Whether tick labels need rotating: the longest is wider than ``room`` characters."""
    return max((len(s) for s in labels), default=0) > room


def _legend_above(ax: Any, n: int) -> None:
    ax.legend(ncols=min(n, 4), loc="lower left", bbox_to_anchor=(0.0, 1.01), frameon=False, borderaxespad=0.0)
