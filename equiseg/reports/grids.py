"""The figures laid out as grids of cells: the confusion matrix as a heatmap and the paper's Fig. 2
(modalities, ground truth and predictions per case), on the plumbing of :mod:`.plotting`; :mod:`.figures`
lists every figure."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from matplotlib.patches import Patch

from .plotting import _figure, _styled, _wrap, save

__all__ = ["ConfusionFigure", "confusion_heatmap", "prediction_grid"]


class ConfusionFigure(NamedTuple):
    """What :func:`confusion_heatmap` drew: the file, the row-normalised matrix in % (rows: ground
    truth, columns: prediction; NaN for a row with no ground-truth pixel) and the class names kept."""

    path: Path
    matrix: np.ndarray
    classes: list[str]


@_styled
def confusion_heatmap(
    matrix: Any,
    class_names: Sequence[str],
    path: str | Path,
    *,
    drop_empty: bool = True,
    title: str = "Confusion matrix, normalised per ground-truth class",
    formats: Sequence[str] | None = None,
) -> ConfusionFigure:
    """Heatmap of the confusion matrix with every row divided by its sum (in %: the share of a class's
    pixels predicted as each class; the diagonal is the per-class accuracy).

    Args:
        matrix: ``K×K`` pixel counts, rows ground truth, columns prediction (``SegMetrics.matrix``).
        class_names: ``K`` names.
        drop_empty: Leave out the classes with neither a ground-truth nor a predicted pixel.

    Returns:
        A :class:`ConfusionFigure` with the normalised matrix as plotted.
    """
    counts = np.asarray(matrix.tolist() if hasattr(matrix, "tolist") else matrix, dtype=np.float64)
    k = counts.shape[0]
    if counts.shape != (k, k) or len(class_names) != k:
        raise ValueError(
            f"expected a K×K matrix and K class names, got {counts.shape} and {len(class_names)}"
        )
    keep = np.arange(k)
    if drop_empty:
        keep = np.flatnonzero((counts.sum(1) + counts.sum(0)) > 0)
        if keep.size == 0:
            keep = np.arange(k)
    sub = counts[np.ix_(keep, keep)]
    rows = sub.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.where(rows > 0, sub / rows * 100.0, np.nan)
    names = [str(class_names[i]) for i in keep]
    n = len(names)
    side = min(12.0, max(4.5, 1.6 + 0.38 * n))
    fig = _figure(side + 1.2, side)
    ax = fig.add_subplot()
    ax.grid(False)
    im = ax.imshow(np.nan_to_num(norm, nan=0.0), vmin=0.0, vmax=100.0, cmap="viridis")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                v = norm[i, j]
                if math.isfinite(v) and v >= 0.5:
                    ax.text(
                        j,
                        i,
                        f"{v:.0f}",
                        ha="center",
                        va="center",
                        fontsize=6.5 if n > 12 else 8,
                        color="black" if v > 60 else "white",
                    )
    ax.set_xticks(range(n), names, rotation=60, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("ground-truth class")
    for s in ax.spines.values():
        s.set_visible(False)
    fig.colorbar(im, ax=ax, shrink=0.8, label="% of the ground-truth class's pixels")
    if title:
        ax.set_title(_wrap(title, fig.get_figwidth() * 0.8, 10))
    return ConfusionFigure(save(fig, path, formats), norm, names)


@_styled
def prediction_grid(
    rows: Sequence[Mapping[str, Any]],
    modality_names: Sequence[str],
    palette: Sequence[Sequence[int]],
    path: str | Path,
    *,
    class_names: Sequence[str] | None = None,
    ignore_index: int = 255,
    errors: bool = False,
    title: str = "",
    tile: float = 1.45,
    formats: Sequence[str] | None = None,
) -> Path:
    """The paper's Fig. 2: one row per sample (case), columns the modalities, the ground truth and each
    model's prediction (and, with ``errors``, the first model's error map), with a legend of the classes
    that appear.

    Args:
        rows: Per row ``title`` (the case), ``inputs`` (the raw modalities, ``None`` for an absent one),
            ``label`` (``H×W`` class ids) and ``preds`` (``{model name: H×W class ids}``).
        modality_names: Column titles of the inputs.
        palette: Class colours (RGB 0-255).
        class_names: For the legend (default the class ids).
        errors: Add an error-map column (red: wrong, grey: right, black: unlabelled).
        tile: Tile width in inches.
    """
    from equiseg.data.panels import _np, colorize, error_map, modality_preview

    if not rows:
        raise ValueError("prediction_grid: no rows")
    models = list(dict.fromkeys(m for r in rows for m in r["preds"]))
    cols = [*modality_names, "ground truth", *models] + (["errors (red: wrong)"] if errors else [])
    h, w = _np(rows[0]["label"]).shape
    th = tile * h / w
    legend_rows = 1
    seen: set[int] = set()
    for r in rows:
        for lab in (r["label"], *r["preds"].values()):
            seen.update(int(c) for c in np.unique(_np(lab)) if 0 <= c < len(palette) and c != ignore_index)
    shown = sorted(seen)
    ncol_legend = max(1, min(len(shown), int(len(cols) * tile / 1.25)))
    legend_rows = math.ceil(len(shown) / ncol_legend) if shown else 0
    legend_h = 0.15 + 0.17 * legend_rows if shown else 0.0
    fig = _figure(0.35 + len(cols) * tile, 0.3 + len(rows) * (th + 0.05) + legend_h + 0.3 * bool(title))
    fig.get_layout_engine().set(w_pad=0.01, h_pad=0.01, wspace=0.01, hspace=0.01)
    axes = fig.subplots(len(rows), len(cols), squeeze=False)
    for i, r in enumerate(rows):
        label = _np(r["label"])
        tiles = [
            modality_preview(x) if x is not None else np.full((h, w, 3), 235, np.uint8) for x in r["inputs"]
        ]
        tiles += [colorize(label, palette, ignore_index)]
        tiles += [colorize(r["preds"][m], palette, ignore_index) if m in r["preds"] else None for m in models]
        if errors:
            tiles.append(error_map(r["preds"][models[0]], label, ignore_index))
        for j, ax in enumerate(axes[i]):
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            t = tiles[j] if j < len(tiles) else None
            if t is not None:
                ax.imshow(t, interpolation="nearest", extent=(0, w, h, 0))
            if j < len(modality_names) and r["inputs"][j] is None:
                ax.text(w / 2, h / 2, "not given", ha="center", va="center", fontsize=7, color="#555555")
            if i == 0:
                ax.set_title(cols[j], fontsize=8)
        axes[i][0].set_ylabel(str(r.get("title", "")), fontsize=8, rotation=90)
    if shown:
        names = [str(class_names[c]) if class_names and c < len(class_names) else str(c) for c in shown]
        handles = [
            Patch(facecolor=np.asarray(palette[c]) / 255.0, edgecolor="#888888", linewidth=0.4) for c in shown
        ]
        fig.legend(
            handles,
            names,
            loc="outside lower center",
            ncols=ncol_legend,
            frameon=False,
            fontsize=7,
            handlelength=1.0,
            columnspacing=0.8,
        )
    if title:
        fig.suptitle(_wrap(title, fig.get_figwidth()))
    return save(fig, path, formats)
