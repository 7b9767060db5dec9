"""FROZEN COPY of ``equiseg/data/transforms.py`` before issue 11 item 5 (OpenCV I/O and transforms); not package code.

Kept verbatim so that ``benchmarks/data_speed.py`` can measure today's rate against the new path in
one run, and so that ``tests/fixtures/images/make_fixtures.py`` can regenerate the reference
outputs. Do not edit (only this paragraph was added).

Joint training and validation transforms for multimodal segmentation (SPEC §2).

A transform is a callable ``(inputs, label) -> (inputs, label)``: ``inputs`` is a list of ``3×H×W``
tensors (uint8 or float, one per modality, all the same size), ``label`` an integer ``H×W`` tensor;
it returns float32 ``3×h×w`` tensors, normalised per modality, and an int64 ``h×w`` label.

Training (:class:`TrainTransform`, the reference recipe's order):

1. on RGB modalities only, with probability 0.2 each: colour jitter (brightness, then contrast, then
   saturation, each factor uniform in 0.5–1.5, torchvision's definitions, clamped to
   ``[0, norm.scale]``) and a 3×3 Gaussian blur (σ = 0.8, torchvision's default for k = 3, reflect
   padding);
2. the same geometry for every modality and the label: horizontal flip (p 0.5) and a random resized
   crop — the image is rescaled, keeping its aspect ratio, by a ratio ``r ~ U(0.5, 2.0)`` so that
   its short side becomes ``r·min(crop)`` (long side capped at ``4·r·max(crop)``, mmseg/CMNeXt's
   ``(4·crop, crop)`` scale), then a uniformly placed ``crop_size`` window is cut out and padded at
   the bottom/right when the image is smaller: inputs with 0 (raw value, i.e. before normalisation,
   as the reference pads the uint8 image), the label with 255. Inputs are resampled bilinearly
   (``align_corners=False``, no antialiasing: ``F.interpolate``'s values), labels with nearest
   (centre-aligned: source pixel ``⌊(i + ½)·in/out⌋``, the geometry of the bilinear grid);
3. per-modality normalisation ``(x / scale - mean) / std`` (:class:`~equiseg.data.NormStats`).

Flip, rescale, crop and pad are one ``grid_sample`` over all modalities at once (and one index gather
for the label), so a 2× rescale never materialises the full 2× image.

Validation (:class:`ValTransform`): the short side is resized to ``short_side`` (1024), each side
rounded up to a multiple of ``align`` (32), the label resized with nearest, then normalised.

Seeding: each training transform owns a ``torch.Generator``. In the main process it is seeded with
``seed`` (or, when ``seed`` is None, with ``torch.initial_seed()``). In a DataLoader worker it is
seeded from ``(seed, torch.initial_seed())``; torch gives each worker the initial seed
``base_seed + worker_id`` with ``base_seed`` drawn from the main process's generator every epoch, so
workers and epochs differ while a run seeded with ``torch.manual_seed`` repeats exactly. The
generator is re-created whenever the process or ``torch.initial_seed()`` changes, so no
``worker_init_fn`` is needed (``DataLoader(..., generator=g)`` also works: it sets the base seed).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.data

from equiseg.data.constants import IGNORE_INDEX, NormStats

__all__ = [
    "TrainTransform",
    "ValTransform",
    "build_train_transform",
    "build_val_transform",
    "resize_crop_pad",
    "color_jitter",
    "gaussian_blur",
]

_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale


def _check_stats(modalities: Sequence[str], norm_stats: Mapping[str, Any]) -> dict[str, NormStats]:
    missing = [m for m in modalities if m not in norm_stats]
    if missing:
        raise ValueError(
            f"no normalisation statistics for modalities {missing}; norm_stats has {sorted(norm_stats)}"
        )
    return {m: NormStats.coerce(norm_stats[m], f"norm_stats[{m!r}]") for m in modalities}


def _check_inputs(
    inputs: Sequence[torch.Tensor], label: torch.Tensor, modalities: Sequence[str]
) -> tuple[int, int]:
    if len(inputs) != len(modalities):
        raise ValueError(
            f"transform built for {len(modalities)} modalities {tuple(modalities)}, got {len(inputs)} inputs"
        )
    size = tuple(label.shape)
    if label.dim() != 2:
        raise ValueError(f"expected an H×W label, got shape {size}")
    for name, x in zip(modalities, inputs, strict=True):
        if x is None:
            raise ValueError(f"input of modality '{name}' is None; transforms need every modality")
        if x.dim() != 3 or x.shape[0] != 3 or tuple(x.shape[1:]) != size:
            raise ValueError(
                f"modality '{name}' has shape {tuple(x.shape)}, expected 3×{size[0]}×{size[1]} "
                "(the label's size)"
            )
    return size


# ------------------------------------------------------------------------------- geometry


@dataclasses.dataclass
class _Axis:
    """Sampling of one axis: source coordinate, nearest source index, valid mask."""

    src: torch.Tensor  # (n,) float64 source coordinate of each output pixel (bilinear)
    nearest: torch.Tensor  # (n,) int64 nearest source index
    valid: torch.Tensor  # (n,) bool: False where the output lies outside the rescaled image (padding)


def _axis(out_len: int, offset: int, resized_len: int, in_len: int, flip: bool) -> _Axis:
    """Map output positions ``offset..offset+out_len-1`` of the (flipped) rescaled axis to the source.

    The rescaled axis has ``resized_len`` pixels over ``in_len`` source pixels; ``align_corners=False``
    puts output pixel ``c`` at source coordinate ``(c + ½)·in/resized - ½``, clamped to the image
    (``F.interpolate``'s rule); nearest takes source pixel ``⌊(c + ½)·in/resized⌋``.
    """
    c = torch.arange(out_len, dtype=torch.float64) + offset
    valid = c < resized_len  # a prefix: padding is at the bottom/right
    if flip:
        c = resized_len - 1 - c
    c = c.clamp(0, resized_len - 1)
    scale = in_len / resized_len
    src = ((c + 0.5) * scale - 0.5).clamp(0.0, in_len - 1)
    nearest = ((c + 0.5) * scale).floor().long().clamp(0, in_len - 1)
    return _Axis(src, nearest, valid)


def _resample(x: torch.Tensor, ay: _Axis, ax: _Axis, pad: float) -> torch.Tensor:
    """Bilinear resampling of ``x`` (C×H×W float) to C×len(ay)×len(ax), padded with ``pad``.

    One ``grid_sample`` over the separable grid: every channel of every modality sees the same grid.
    Only the valid (non-padding) part, a top-left block, is sampled.
    """
    h, w = x.shape[1:]
    vh, vw = int(ay.valid.sum()), int(ax.valid.sum())
    out = torch.empty((x.shape[0], ay.valid.numel(), ax.valid.numel()), dtype=torch.float32)
    out[:, vh:] = pad
    out[:, :vh, vw:] = pad
    if vh == 0 or vw == 0:
        return out
    sy, sx = ay.src[:vh], ax.src[:vw]
    if torch.equal(sy, ay.nearest[:vh].double()) and torch.equal(sx, ax.nearest[:vw].double()):
        # Whole-pixel positions (no rescale: crop/flip/pad only): an exact gather.
        sampled = x.index_select(1, ay.nearest[:vh]).index_select(2, ax.nearest[:vw])
    else:
        gy = ((2 * sy + 1) / h - 1).float()  # grid_sample's normalised coordinates (align_corners=False)
        gx = ((2 * sx + 1) / w - 1).float()
        grid = torch.stack(torch.broadcast_tensors(gx[None, :], gy[:, None]), dim=-1)[None]  # (1, vh, vw, 2)
        sampled = F.grid_sample(x[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    if vh == out.shape[1] and vw == out.shape[2]:
        return sampled
    out[:, :vh, :vw] = sampled
    return out


def _resample_label(label: torch.Tensor, ay: _Axis, ax: _Axis, pad: int) -> torch.Tensor:
    """Nearest resampling of an H×W label to len(ay)×len(ax), padded with ``pad``."""
    out = label.index_select(0, ay.nearest).index_select(1, ax.nearest)
    if not bool(ay.valid.all()):
        out[~ay.valid] = pad
    if not bool(ax.valid.all()):
        out[:, ~ax.valid] = pad
    return out


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

    Equal to ``F.interpolate(bilinear, align_corners=False)`` on inputs and centre-aligned nearest on
    the label, then ``flip``, then slicing ``[y:y+h, x:x+w]`` and padding, in one pass.

    Args:
        inputs: 3×H×W tensors (any real dtype), all of the label's size.
        label: H×W integer label.
        resized: (H', W') size of the rescaled image.
        crop: (h, w) output size; ``None`` = ``resized``.
        offset: (y, x) top-left corner of the window in the rescaled (flipped) image.
        flip: mirror horizontally.
        pad_value: input value outside the rescaled image.
        ignore_index: label value outside the rescaled image.

    Returns:
        float32 3×h×w tensors and an int64 h×w label.
    """
    h_in, w_in = label.shape
    crop = crop or resized
    ay = _axis(crop[0], offset[0], resized[0], h_in, False)
    ax = _axis(crop[1], offset[1], resized[1], w_in, flip)
    out = _resample(_stack_float(inputs), ay, ax, pad_value)
    return list(out.split(3, dim=0)), _resample_label(label.to(torch.int64), ay, ax, ignore_index)


def _stack_float(inputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """(3N, H, W) float32 copy of N 3×H×W tensors (one pass: conversion and concatenation together)."""
    out = torch.empty((3 * len(inputs), *inputs[0].shape[1:]), dtype=torch.float32)
    for i, x in enumerate(inputs):
        out[3 * i : 3 * i + 3].copy_(x)
    return out


def _normalise_(outs: list[torch.Tensor], stats: Sequence[NormStats]) -> list[torch.Tensor]:
    """Normalise freshly made float32 tensors in place: ``(x - mean·scale) / (std·scale)``."""
    for x, st in zip(outs, stats, strict=True):
        shift = torch.tensor(st.mean, dtype=torch.float64) * st.scale
        factor = 1.0 / (torch.tensor(st.std, dtype=torch.float64) * st.scale)
        x.sub_(shift.float().view(3, 1, 1)).mul_(factor.float().view(3, 1, 1))
    return outs


# ----------------------------------------------------------------------------- photometric


def _gray(x: torch.Tensor) -> torch.Tensor:
    """1×H×W luma of a 3×H×W RGB tensor (torchvision's weights)."""
    weights = torch.tensor(_GRAY_WEIGHTS, dtype=x.dtype).view(1, 3)
    return (weights @ x.reshape(3, -1)).view(1, *x.shape[1:])


def color_jitter(
    x: torch.Tensor, brightness: float, contrast: float, saturation: float, bound: float
) -> torch.Tensor:
    """Brightness, contrast, saturation adjustments in that order (torchvision's definitions).

    Args:
        x: 3×H×W float RGB in ``[0, bound]``.
        brightness, contrast, saturation: factors (1 = unchanged).
        bound: the maximum value (255 for 8-bit data).

    Returns:
        3×H×W float32, clamped to ``[0, bound]`` after every step.
    """
    x = (x * brightness).clamp_(0, bound)
    mean = _gray(x).mean()
    x = (contrast * x + (1 - contrast) * mean).clamp_(0, bound)
    x = (saturation * x + (1 - saturation) * _gray(x)).clamp_(0, bound)
    return x


def gaussian_blur(x: torch.Tensor, kernel_size: int = 3, sigma: float | None = None) -> torch.Tensor:
    """Gaussian blur of a C×H×W float tensor with reflect padding.

    Args:
        x: C×H×W float.
        kernel_size: odd kernel size.
        sigma: standard deviation; ``None`` = torchvision's default ``0.3·((k-1)/2 - 1) + 0.8``.
    """
    if kernel_size % 2 != 1:
        raise ValueError(f"gaussian_blur: kernel_size must be odd, got {kernel_size}")
    sigma = sigma if sigma is not None else 0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8
    half = kernel_size // 2
    t = torch.arange(-half, half + 1, dtype=torch.float32)
    k1 = torch.exp(-(t**2) / (2 * sigma**2))
    k1 = k1 / k1.sum()
    # Separable: one weighted sum of shifted slices per axis (depth-wise conv2d is slow on CPU).
    mode = "reflect" if min(x.shape[1:]) > half else "replicate"
    padded = F.pad(x[None], (half, half, half, half), mode=mode)[0]
    h, w = x.shape[1:]
    rows = sum(k1[i] * padded[:, i : i + h, :] for i in range(kernel_size))
    return sum(k1[i] * rows[:, :, i : i + w] for i in range(kernel_size))


# ------------------------------------------------------------------------------------ seeding


class _WorkerSeededGenerator:
    """A ``torch.Generator`` seeded per process / DataLoader worker (see the module docstring)."""

    def __init__(self, seed: int | None):
        self.seed = seed
        self._gen: torch.Generator | None = None
        self._key: tuple[int, int | None] | None = None

    def get(self) -> torch.Generator:
        in_worker = torch.utils.data.get_worker_info() is not None
        initial = torch.initial_seed() if (in_worker or self.seed is None) else None
        key = (os.getpid(), initial)
        if key != self._key:
            if self.seed is None:
                seed = initial
            elif in_worker:  # mix the user's seed with the worker's seed (differs per worker and epoch)
                seed = int(np.random.SeedSequence([self.seed, initial]).generate_state(1, np.uint64)[0])
            else:
                seed = self.seed
            self._gen = torch.Generator().manual_seed(seed & 0xFFFF_FFFF_FFFF_FFFF)
            self._key = key
        return self._gen

    def __getstate__(self) -> dict[str, Any]:  # generators do not travel to workers: they reseed there
        return {"seed": self.seed, "_gen": None, "_key": None}


# --------------------------------------------------------------------------------- transforms


class TrainTransform:
    """SPEC §2 training augmentation; see the module docstring for every step.

    Args:
        crop_size: (h, w) output size, or an int for a square.
        modalities: modality names, in the order of the inputs.
        norm_stats: per modality :class:`NormStats` (or ``{mean, std, scale}`` mappings).
        rgb_modalities: modalities that receive colour jitter and blur (others are left alone).
        scale_range: range of the rescale ratio ``r``.
        flip_prob, jitter_prob, blur_prob: probabilities of flip, colour jitter, blur.
        jitter_range: range of the brightness/contrast/saturation factors.
        blur_kernel: Gaussian blur kernel size.
        pad_value: raw input value of padding (before normalisation).
        ignore_index: label value of padding.
        seed: generator seed (see the module docstring); ``None`` follows ``torch.initial_seed()``.
    """

    def __init__(
        self,
        crop_size: int | tuple[int, int],
        modalities: Sequence[str],
        norm_stats: Mapping[str, NormStats | Mapping[str, Any]],
        *,
        rgb_modalities: Sequence[str] = ("rgb", "frame_camera"),
        scale_range: tuple[float, float] = (0.5, 2.0),
        flip_prob: float = 0.5,
        jitter_prob: float = 0.2,
        jitter_range: tuple[float, float] = (0.5, 1.5),
        blur_prob: float = 0.2,
        blur_kernel: int = 3,
        pad_value: float = 0.0,
        ignore_index: int = IGNORE_INDEX,
        seed: int | None = None,
    ):
        self.crop_size = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
        if len(self.crop_size) != 2 or min(self.crop_size) < 1:
            raise ValueError(f"crop_size must be a positive int or (h, w), got {crop_size!r}")
        self.modalities = tuple(modalities)
        self.norm_stats = _check_stats(self.modalities, norm_stats)
        self.rgb_modalities = tuple(rgb_modalities)
        if not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"scale_range must satisfy 0 < lo <= hi, got {scale_range}")
        self.scale_range = tuple(scale_range)
        self.flip_prob, self.jitter_prob, self.blur_prob = flip_prob, jitter_prob, blur_prob
        self.jitter_range = tuple(jitter_range)
        self.blur_kernel = blur_kernel
        self.pad_value, self.ignore_index = pad_value, ignore_index
        self._rng = _WorkerSeededGenerator(seed)

    def __call__(
        self, inputs: Sequence[torch.Tensor], label: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Augment one sample.

        Args:
            inputs: 3×H×W tensors, one per modality, in the order of ``modalities``.
            label: H×W integer label.
            generator: draw this sample's randomness from it instead of the transform's own
                per-worker generator (the trainer seeds one per (epoch, sample) for exact resume).

        Returns:
            float32 3×crop_h×crop_w normalised tensors and an int64 crop_h×crop_w label.
        """
        h, w = _check_inputs(inputs, label, self.modalities)
        g = generator if generator is not None else self._rng.get()
        # A fixed number of draws per call, so that the stream does not depend on the data.
        u = torch.rand(5, generator=g, dtype=torch.float64).tolist()
        lo, hi = self.jitter_range
        factors = (lo + (hi - lo) * torch.rand(3, generator=g, dtype=torch.float64)).tolist()
        blur_u = torch.rand(len(self.modalities), generator=g, dtype=torch.float64).tolist()
        jitter_u = torch.rand(len(self.modalities), generator=g, dtype=torch.float64).tolist()

        xs = list(inputs)
        for i, name in enumerate(self.modalities):
            if name not in self.rgb_modalities:
                continue
            bound = self.norm_stats[name].scale
            if jitter_u[i] < self.jitter_prob:
                xs[i] = color_jitter(xs[i].to(torch.float32), *factors, bound=bound)
            if blur_u[i] < self.blur_prob:
                xs[i] = gaussian_blur(xs[i].to(torch.float32), self.blur_kernel)

        flip = u[0] < self.flip_prob
        ratio = self.scale_range[0] + (self.scale_range[1] - self.scale_range[0]) * u[1]
        ch, cw = self.crop_size
        # mmseg/CMNeXt rescale: fit (long, short) into (4·max(crop)·r, min(crop)·r), keep aspect ratio.
        factor = min(4 * max(ch, cw) * ratio / max(h, w), min(ch, cw) * ratio / min(h, w))
        nh, nw = max(1, int(h * factor + 0.5)), max(1, int(w * factor + 0.5))
        margin_h, margin_w = max(nh - ch, 0), max(nw - cw, 0)
        y0 = min(int(u[2] * (margin_h + 1)), margin_h)
        x0 = min(int(u[3] * (margin_w + 1)), margin_w)
        outs, label = resize_crop_pad(
            xs, label, (nh, nw), (ch, cw), (y0, x0), flip, self.pad_value, self.ignore_index
        )
        return _normalise_(outs, [self.norm_stats[n] for n in self.modalities]), label

    def __repr__(self) -> str:
        return (
            f"TrainTransform(crop_size={self.crop_size}, modalities={self.modalities}, "
            f"rgb_modalities={self.rgb_modalities}, scale_range={self.scale_range}, seed={self._rng.seed})"
        )


class ValTransform:
    """SPEC §2 validation transform: short side to ``short_side``, sides aligned to ``align``, normalise.

    Args:
        modalities: modality names, in the order of the inputs.
        norm_stats: per modality :class:`NormStats` (or mappings).
        short_side: target short side; ``None`` keeps the size (normalisation only).
        align: each side is rounded up to a multiple of this (1 or ``None``: no rounding).
        resize_label: resize the label with the inputs (the reference's choice); ``False`` keeps the
            label at full resolution (upsample predictions to it).
        ignore_index: unused padding value, kept for symmetry.
    """

    def __init__(
        self,
        modalities: Sequence[str],
        norm_stats: Mapping[str, NormStats | Mapping[str, Any]],
        *,
        short_side: int | None = 1024,
        align: int | None = 32,
        resize_label: bool = True,
        ignore_index: int = IGNORE_INDEX,
    ):
        self.modalities = tuple(modalities)
        self.norm_stats = _check_stats(self.modalities, norm_stats)
        self.short_side, self.align = short_side, align or 1
        self.resize_label, self.ignore_index = resize_label, ignore_index

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        """The (h, w) an h×w input is resized to."""
        if self.short_side is None:
            return h, w
        factor = self.short_side / min(h, w)
        nh, nw = round(h * factor), round(w * factor)
        return math.ceil(nh / self.align) * self.align, math.ceil(nw / self.align) * self.align

    def __call__(
        self, inputs: Sequence[torch.Tensor], label: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Resize and normalise one sample: float32 3×h×w inputs and an int64 label."""
        h, w = _check_inputs(inputs, label, self.modalities)
        size = self.output_size(h, w)
        label = label.to(torch.int64)
        if size != (h, w):
            outs, resized_label = resize_crop_pad(inputs, label, size, ignore_index=self.ignore_index)
            label = resized_label if self.resize_label else label
        else:
            outs = list(_stack_float(inputs).split(3, dim=0))
        return _normalise_(outs, [self.norm_stats[n] for n in self.modalities]), label

    def __repr__(self) -> str:
        return (
            f"ValTransform(modalities={self.modalities}, short_side={self.short_side}, align={self.align}, "
            f"resize_label={self.resize_label})"
        )


def build_train_transform(
    crop_size: int | tuple[int, int],
    modalities: Sequence[str],
    norm_stats: Mapping[str, NormStats | Mapping[str, Any]],
    rgb_modalities: Sequence[str] = ("rgb", "frame_camera"),
    seed: int | None = None,
    **kwargs: Any,
) -> TrainTransform:
    """The SPEC §2 training transform; ``kwargs`` go to :class:`TrainTransform`.

    Typical use: ``build_train_transform(1024, ds.modalities, ds.norm_stats, ds.rgb_modalities)``.
    """
    return TrainTransform(
        crop_size, modalities, norm_stats, rgb_modalities=rgb_modalities, seed=seed, **kwargs
    )


def build_val_transform(
    modalities: Sequence[str],
    norm_stats: Mapping[str, NormStats | Mapping[str, Any]],
    short_side: int | None = 1024,
    align: int | None = 32,
    **kwargs: Any,
) -> ValTransform:
    """The SPEC §2 validation transform; ``kwargs`` go to :class:`ValTransform`."""
    return ValTransform(modalities, norm_stats, short_side=short_side, align=align, **kwargs)
