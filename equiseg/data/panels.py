"""Prediction panels like the paper's Fig. 2 as one composed image (Pillow): each modality, ground truth,
prediction and an error map, one row per sample. The reports draw Fig. 2 with matplotlib instead
(:func:`equiseg.reports.figures.prediction_grid`: real text, a class legend, several models).

Pictures of a sample (a label in its data set's palette, a modality preview, an error map) live with the
data, so the training machinery (TensorBoard panels) and the reports both draw them without the
engine importing the reports; :mod:`equiseg.reports.panels` re-exports every name."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

Array = np.ndarray | torch.Tensor


def _np(x: Array) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def colorize(label: Array, palette: Sequence[Sequence[int]], ignore_index: int = 255) -> np.ndarray:
    """``H×W`` class ids -> ``H×W×3`` uint8 colours; ignored (and out-of-palette) pixels are black."""
    lab = _np(label).astype(np.int64)
    lut = np.zeros((max(len(palette), 1) + 1, 3), np.uint8)
    lut[: len(palette)] = np.asarray(palette, np.uint8)
    idx = np.where((lab >= 0) & (lab < len(palette)) & (lab != ignore_index), lab, len(palette))
    return lut[idx]


def modality_preview(x: Array) -> np.ndarray:
    """A ``C×H×W`` modality (uint8 as stored, or float of any range) -> ``H×W×3`` uint8 for display.

    3 channels are shown as colour; 1 or 2 as the gray of the first; more than 3 as the false colour of
    the first three (e.g. the first bands of a multispectral image). uint8 images are shown as they
    are; float ones (normalised tensors, MUSES projections) are stretched per channel between their
    1st and 99th percentiles. An ``H×W×3`` (or ``H×W×1``) array is taken as channels-last.
    """
    a = _np(x)
    if a.ndim == 3 and (a.shape[0] in (1, 3) or a.shape[-1] not in (1, 3)):
        a = np.moveaxis(a, 0, -1)  # C×H×W -> H×W×C
    if a.ndim == 3 and a.shape[-1] not in (1, 3):
        a = a[..., :3] if a.shape[-1] > 3 else a[..., :1]
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    if a.dtype == np.uint8:
        return a
    a = a.astype(np.float32)
    lo = np.percentile(a, 1, axis=(0, 1), keepdims=True)
    hi = np.percentile(a, 99, axis=(0, 1), keepdims=True)
    return (np.clip((a - lo) / np.maximum(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)


def error_map(pred: Array, label: Array, ignore_index: int = 255) -> np.ndarray:
    """Correct pixels dark grey, wrong ones red, ignored ones black."""
    p, g = _np(pred), _np(label)
    out = np.full((*g.shape, 3), 60, np.uint8)
    out[p != g] = (230, 40, 40)
    out[g == ignore_index] = 0
    return out


def prediction_panel(
    rows: Sequence[dict],
    modality_names: Sequence[str],
    palette: Sequence[Sequence[int]],
    path: str | Path,
    *,
    ignore_index: int = 255,
    titles: Sequence[str] | None = None,
    max_tile: int = 256,
) -> Path:
    """Write a grid PNG: per row ``inputs`` (raw modality tensors, ``None`` for absent), ``label``,
    ``pred`` and optionally ``title``; columns = modalities, ground truth, prediction, errors."""
    cols = [*modality_names, "ground truth", "prediction", "errors"]
    h, w = _np(rows[0]["label"]).shape
    scale = min(1.0, max_tile / max(h, w))
    th, tw = max(1, round(h * scale)), max(1, round(w * scale))
    head, left, pad = 18, 0, 4
    if titles or any("title" in r for r in rows):
        left = 130
    canvas = Image.new("RGB", (left + len(cols) * (tw + pad), head + len(rows) * (th + pad)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for j, name in enumerate(cols):
        draw.text((left + j * (tw + pad) + 2, 3), name, fill=(0, 0, 0))
    for i, r in enumerate(rows):
        tiles = [
            modality_preview(x) if x is not None else np.full((h, w, 3), 235, np.uint8) for x in r["inputs"]
        ]
        tiles += [
            colorize(r["label"], palette, ignore_index),
            colorize(r["pred"], palette, ignore_index),
            error_map(r["pred"], r["label"], ignore_index),
        ]
        y = head + i * (th + pad)
        title = r.get("title") or (titles[i] if titles else None)
        if title:
            draw.text((4, y + th // 2 - 6), str(title)[:21], fill=(0, 0, 0))
        for j, t in enumerate(tiles):
            im = Image.fromarray(t)
            if im.size != (w, h):
                im = im.resize((w, h), Image.NEAREST)
            canvas.paste(im.resize((tw, th), Image.NEAREST), (left + j * (tw + pad), y))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
