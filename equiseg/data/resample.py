"""The geometry of the transforms (docs/design.md §3.3, §3.4): bilinear rescale, flip, crop and pad of
every channel plane, fused with the per-channel normalisation, and the centre-aligned nearest rescale
of the label (:func:`resize_crop_pad`; :mod:`equiseg.data.transforms` draws the parameters).

How: resampling is OpenCV's ``cv2.resize`` (``INTER_LINEAR``, the same source grid as
``F.interpolate``), one channel plane at a time on the ``C×H×W`` inputs as they come from the data
sets. 8-bit inputs stay 8-bit through the resize — OpenCV's fixed-point bilinear, rounded: within one
grey level of the exact value (at most 0.82 in the tests), several times faster than resampling in
float; float inputs (MUSES' arrays, RGB after jitter or blur) are resampled in float32 (within float
rounding). The crop is a view of the rescaled plane, the flip ``cv2.flip``, and the conversion to
float32 with the normalisation one pass into the output (``cv2.LUT`` with a 256-entry table for
8-bit planes, ``cv2.addWeighted`` for float ones). The full rescaled plane is computed (OpenCV cannot
resize a window of it with the same grid; ``cv2.remap``/``warpAffine`` could, but quantise positions to
1/32 pixel, several grey levels at sharp edges). Labels are not resampled by OpenCV: its
``INTER_NEAREST`` is not centre-aligned and ``INTER_NEAREST_EXACT`` uses fixed-point source indices,
so the label is an exact index gather (``np.take``) of only the cropped window — identical to the
``grid_sample``/``index_select`` implementation this replaced.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from equiseg.data.constants import IGNORE_INDEX, NormStats

__all__ = ["resize_crop_pad"]


def _nearest(out_len: int, offset: int, resized_len: int, in_len: int, flip: bool) -> tuple[np.ndarray, int]:
    """Nearest source index of output positions ``offset..offset+out_len-1`` of the (flipped) rescaled axis.

    The rescaled axis has ``resized_len`` pixels over ``in_len`` source pixels; nearest takes source
    pixel ``⌊(c + ½)·in/resized⌋`` (centre-aligned, the geometry of ``align_corners=False``).

    Returns:
        ``(index, valid)``: (out_len,) int64 source indices and the length of the valid prefix (the
        rest lies outside the rescaled image: padding, at the bottom/right).
    """
    c = np.arange(out_len, dtype=np.float64) + offset
    valid = int(np.count_nonzero(c < resized_len))
    if flip:
        c = resized_len - 1 - c
    c = np.clip(c, 0, resized_len - 1)
    return np.clip(np.floor((c + 0.5) * (in_len / resized_len)).astype(np.int64), 0, in_len - 1), valid


def _window(out_len: int, offset: int, resized_len: int, flip: bool) -> tuple[int, int]:
    """``(start, length)`` of the valid output prefix in the *unflipped* rescaled axis.

    Output pixel ``j < length`` shows rescaled pixel ``offset + j`` of the flipped axis, i.e.
    ``resized_len - 1 - offset - j`` of the unflipped one: the window is read, then mirrored.
    """
    length = max(0, min(out_len, resized_len - offset))
    return (resized_len - offset - length if flip else offset), length


def _buffer(buffers: dict, name: str, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
    """Scratch plane ``name`` of this shape and dtype from ``buffers``, allocated on first use.

    Plain ``np.empty``, not the recycling pool: rescaled sizes are random, they would only crowd it.
    """
    key = (name, dtype)
    if key not in buffers:
        buffers[key] = np.empty(shape, dtype)
    return buffers[key]


def _opencv_planes(x: torch.Tensor) -> np.ndarray:
    """A C×H×W input as a contiguous numpy array OpenCV resamples: uint8 as is, anything else float32."""
    if x.dtype != torch.uint8:
        x = x.to(torch.float32)
    return x.contiguous().numpy()


def _resample(
    inputs: Sequence[torch.Tensor],
    resized: tuple[int, int],
    crop: tuple[int, int],
    offset: tuple[int, int],
    flip: bool,
    affine: Sequence[tuple[float, float, float]],
) -> list[torch.Tensor]:
    """Bilinear rescale, flip, crop, pad and ``x·a + b`` of every channel plane of every input.

    Args:
        inputs: C_i×H×W tensors, all the same size.
        resized, crop, offset, flip: as in :func:`resize_crop_pad`.
        affine: per output channel (C_i per input, in order) ``(a, b, padding)``: the valid part
            becomes ``resampled·a + b``, the rest ``padding`` (already in the output's units).

    Returns:
        float32 C_i×crop_h×crop_w tensors (views of one (ΣC_i)×h×w tensor).
    """
    h, w = inputs[0].shape[1:]
    (nh, nw), (ch, cw) = resized, crop
    y0, vh = _window(ch, offset[0], nh, False)
    x0, vw = _window(cw, offset[1], nw, flip)
    sizes = [int(x.shape[0]) for x in inputs]
    out = np.empty((sum(sizes), ch, cw), np.float32)
    rescale = (nh, nw) != (h, w)
    buffers: dict[tuple[str, np.dtype], np.ndarray] = {}  # scratch planes (rescaled, flipped), reused
    first = 0  # output channel of the input's first plane
    for x in inputs:
        planes = _opencv_planes(x)
        for c in range(planes.shape[0]):
            k = first + c
            a, b, pad = affine[k]
            dst = out[k]
            dst[vh:] = pad
            dst[:vh, vw:] = pad
            if vh == 0 or vw == 0:
                continue
            plane = planes[c]
            if rescale:
                plane = cv2.resize(
                    plane,
                    (nw, nh),
                    dst=_buffer(buffers, "resize", (nh, nw), plane.dtype),
                    interpolation=cv2.INTER_LINEAR,
                )
            block = plane[y0 : y0 + vh, x0 : x0 + vw]  # a view: only the window is converted below
            if flip:
                block = cv2.flip(block, 1, dst=_buffer(buffers, "flip", (vh, vw), plane.dtype))
            if block.dtype == np.uint8:  # 8-bit: a 256-entry table, computed in float64
                lut = (np.arange(256, dtype=np.float64) * a + b).astype(np.float32)[None]
                cv2.LUT(block, lut, dst=dst[:vh, :vw])
            else:
                cv2.addWeighted(block, a, block, 0.0, b, dst=dst[:vh, :vw], dtype=cv2.CV_32F)
        first += planes.shape[0]
    return list(torch.from_numpy(out).split(sizes, dim=0))


def _resample_label(
    label: torch.Tensor,
    resized: tuple[int, int],
    crop: tuple[int, int],
    offset: tuple[int, int],
    flip: bool,
    pad: int,
) -> torch.Tensor:
    """Centre-aligned nearest rescale, flip, crop and pad of an H×W label: an exact index gather."""
    rows, vh = _nearest(crop[0], offset[0], resized[0], label.shape[0], False)
    cols, vw = _nearest(crop[1], offset[1], resized[1], label.shape[1], flip)
    src = label.to(torch.int64).numpy()
    by_rows = np.take(src, rows, axis=0, out=np.empty((len(rows), src.shape[1]), np.int64), mode="clip")
    out = np.take(by_rows, cols, axis=1, out=np.empty((len(rows), len(cols)), np.int64), mode="clip")
    del by_rows  # (numpy's take, in bounds: "clip" never clips here but skips take's out= buffering)
    out[vh:] = pad
    out[:vh, vw:] = pad
    return torch.from_numpy(out)


def _resample_all(
    inputs: Sequence[torch.Tensor],
    label: torch.Tensor,
    resized: tuple[int, int],
    crop: tuple[int, int],
    offset: tuple[int, int],
    flip: bool,
    affine: Sequence[tuple[float, float, float]],
    ignore_index: int,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    outs = _resample(inputs, resized, crop, offset, flip, affine)
    return outs, _resample_label(label, resized, crop, offset, flip, ignore_index)


def resize_crop_pad(
    inputs: Sequence[torch.Tensor],
    label: torch.Tensor,
    resized: tuple[int, int],
    crop: tuple[int, int] | None = None,
    offset: tuple[int, int] = (0, 0),
    flip: bool = False,
    pad_value: float = 0.0,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Rescale to ``resized``, flip horizontally, cut the ``crop`` window at ``offset``, pad past the edge.

    ``F.interpolate(bilinear, align_corners=False)`` on inputs (uint8 inputs through OpenCV's 8-bit
    resize: within one grey level of it; float inputs within float32 rounding) and centre-aligned
    nearest on the label, then ``flip``, then slicing ``[y:y+h, x:x+w]`` and padding.

    Args:
        inputs: C×H×W tensors (any real dtype, any channel count), all of the label's size.
        label: H×W integer label.
        resized: (H', W') size of the rescaled image.
        crop: (h, w) output size; ``None`` = ``resized``.
        offset: (y, x) top-left corner of the window in the rescaled (flipped) image.
        flip: mirror horizontally.
        pad_value: input value outside the rescaled image.
        ignore_index: label value outside the rescaled image.

    Returns:
        float32 C×h×w tensors and an int64 h×w label.
    """
    affine = [(1.0, 0.0, float(pad_value))] * sum(int(x.shape[0]) for x in inputs)
    return _resample_all(inputs, label, resized, crop or resized, offset, flip, affine, ignore_index)


def _affine(
    stats: Sequence[NormStats], inputs: Sequence[torch.Tensor], names: Sequence[str], pad_value: float
) -> list[tuple[float, float, float]]:
    """Per channel of every input ``(a, b, padding)`` with ``x·a + b = (x / scale - mean) / std``
    (:class:`NormStats`, fitted to the input's channel count)."""
    out = []
    for st, x, name in zip(stats, inputs, names, strict=True):
        st = st.for_channels(int(x.shape[0]), f"norm_stats[{name!r}]")
        for mean, std in zip(st.mean, st.std, strict=True):
            a = 1.0 / (std * st.scale)
            out.append((a, -mean * st.scale * a, (pad_value - mean * st.scale) * a))
    return out
