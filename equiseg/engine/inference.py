"""Inference for evaluation (the validation protocol of docs/design.md §3.4): whole-image and sliding-window
forward passes, multi-scale and horizontal-flip test-time augmentation.

Every evaluation path (``equiseg eval``, validation during training, the robustness benchmark) goes
through :func:`infer_logits`. The caller puts the model in eval mode and wraps the call in
``torch.inference_mode()``; nothing here changes the model's mode or its gradients setting.

Conventions (mmseg's ``slide_inference`` and CMNeXt/DeLiVER's multi-scale evaluation):

- **whole**: one forward at the input size.
- **slide**: mmseg's window grid. Along each axis of length ``L`` with crop ``c`` and stride ``s``
  there are ``max(L - c + s - 1, 0) // s + 1`` windows starting at ``i·s``; each window ends at
  ``min(i·s + c, L)`` and starts ``c`` before its end (clamped at 0), so the last window is aligned to
  the border and every window has size ``min(c, L)``. The *logits* (not probabilities) of the windows
  are summed and divided by the count map (how many windows cover each pixel). ``stride <= crop`` is
  required so the windows cover the image.
- **multi-scale / flip**: for every scale ``s`` each present modality is resized bilinearly
  (``align_corners=False``, no antialiasing) to ``(round(H·s), round(W·s))`` (Python's ``round``,
  half to even) -- each side rounded up
  to a multiple of ``align`` when given (CMNeXt aligns to 32) -- whole or slide inference runs at that
  size, the logits are resized back to ``H×W`` (bilinear, ``align_corners=False``) and turned into
  softmax probabilities; with ``flip`` the horizontally mirrored input runs too and its output is
  mirrored back. The *probabilities* of all passes are averaged (CMNeXt's ``evaluate_msf``; mmseg's
  ``aug_test`` does the same). CMNeXt resizes with ``align_corners=True`` and truncates ``H·s``
  before aligning; we follow mmseg's resize geometry, the one our training transforms use.

What :func:`infer_logits` returns is always a logit map whose softmax is the prediction's class
distribution and whose argmax is the prediction:

- a single pass (one scale, no flip): the model's logits (slide: the count-averaged logits), resized
  back to ``H×W`` when the scale is not 1 -- ``mode="whole"`` at scale 1 returns exactly
  ``model(inputs)``;
- test-time augmentation (several scales or flip): ``log(mean_t softmax(z_t))``, accumulated with
  ``logaddexp`` so it never underflows to ``-inf``; ``out.softmax(1)`` is CMNeXt's averaged
  probability and ``out.argmax(1)`` its prediction.

Images or windows smaller than the model's minimum input size (32, the stride of the last stage) are
zero-padded at the bottom/right to 32 -- zero is the mean value of a normalised input -- and the
logits are cropped back. Absent modalities (``None``) stay ``None`` in every crop, resize and flip.

Precision: the caller picks it through ``model`` -- an :class:`~equiseg.engine.precision.AutocastModel`
runs the forward under bf16 autocast (``eval.precision``). Every forward's logits are cast to fp32 here
whatever the model returns, so the window sums, resizes, softmax and ``logaddexp`` are fp32, and so is
the returned map.

The resize of the raw image for evaluation (short side 1024, sides aligned to 32, label resized with
nearest) is :class:`equiseg.data.transforms.ValTransform`; it happens per sample in the data loader.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F

from equiseg.models.base import MIN_INPUT_SIZE

InferenceMode = Literal["whole", "slide"]
INFERENCE_MODES: tuple[str, ...] = ("whole", "slide")
Inputs = Sequence[torch.Tensor | None]
SegModel = Callable[[list[torch.Tensor | None]], torch.Tensor]


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    """``int`` or ``(h, w)`` -> ``(h, w)`` of positive ints."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v >= 1 for v in pair):
        raise ValueError(f"{name} must be a positive int or a pair (h, w) of positive ints, got {value!r}")
    return pair  # type: ignore[return-value]


def _check_grid(
    crop_size: int | Sequence[int], stride: int | Sequence[int]
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Validate a slide grid: ``((crop_h, crop_w), (stride_h, stride_w))`` with stride <= crop."""
    crop, step = _pair(crop_size, "crop_size"), _pair(stride, "stride")
    if step[0] > crop[0] or step[1] > crop[1]:
        raise ValueError(f"stride {step} must not exceed crop_size {crop}: the windows would leave gaps")
    return crop, step


def _axis_windows(length: int, crop: int, stride: int) -> list[tuple[int, int]]:
    """mmseg's windows ``[start, end)`` along one axis; the last one ends at ``length``."""
    n = max(length - crop + stride - 1, 0) // stride + 1
    windows = []
    for i in range(n):
        end = min(i * stride + crop, length)
        windows.append((max(end - crop, 0), end))
    return windows


def slide_windows(
    size: tuple[int, int], crop_size: int | Sequence[int], stride: int | Sequence[int]
) -> list[tuple[int, int, int, int]]:
    """The sliding-window grid of an ``H×W`` image (mmseg's ``slide_inference`` geometry).

    Args:
        size: ``(H, W)`` of the image.
        crop_size: window size ``(h, w)`` (or an int for a square).
        stride: step ``(h, w)`` between window starts; must not exceed ``crop_size``.

    Returns:
        ``(y0, y1, x0, x1)`` per window, row-major. Every window has size
        ``min(crop_h, H) × min(crop_w, W)``; the last row/column of windows ends at the border.
    """
    (ch, cw), (sh, sw) = _check_grid(crop_size, stride)
    h, w = size
    rows, cols = _axis_windows(h, ch, sh), _axis_windows(w, cw, sw)
    return [(y0, y1, x0, x1) for y0, y1 in rows for x0, x1 in cols]


def _axis_counts(length: int, crop: int, stride: int) -> torch.Tensor:
    """How many of :func:`_axis_windows` cover each position: int64 of shape ``(length,)``."""
    counts = torch.zeros(length, dtype=torch.int64)
    for start, end in _axis_windows(length, crop, stride):
        counts[start:end] += 1
    return counts


def window_counts(
    size: tuple[int, int],
    crop_size: int | Sequence[int],
    stride: int | Sequence[int],
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The count map of :func:`slide_windows`: how many windows cover each pixel.

    The grid is a product of row and column windows, so the map is the outer product of the per-axis
    counts.

    Args:
        size: ``(H, W)`` of the image.
        crop_size: window size, as :func:`slide_windows`.
        stride: window step, as :func:`slide_windows`.
        device: device of the result.

    Returns:
        ``H×W`` int64 tensor, at least 1 everywhere.
    """
    (ch, cw), (sh, sw) = _check_grid(crop_size, stride)
    h, w = size
    cy, cx = _axis_counts(h, ch, sh).to(device), _axis_counts(w, cw, sw).to(device)
    return cy[:, None] * cx[None, :]


def _check_inputs(inputs: Inputs) -> tuple[int, int, int]:
    """Validate the modality list and return ``(B, H, W)`` of its present tensors."""
    if not isinstance(inputs, (list, tuple)):
        raise ValueError(
            f"inputs must be a list of tensors (None for an absent modality), got {type(inputs)}"
        )
    ref = None
    for i, x in enumerate(inputs):
        if x is None:
            continue
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"input {i} must be a B×C×H×W tensor or None, got {shape}")
        if ref is None:
            ref = (i, x.shape)
        elif x.shape[0] != ref[1][0] or x.shape[-2:] != ref[1][-2:]:
            raise ValueError(
                f"input {i} has shape {tuple(x.shape)} but input {ref[0]} has {tuple(ref[1])}; "
                "all modalities must share batch size and H×W"
            )
    if ref is None:
        raise ValueError(f"all {len(inputs)} inputs are None; at least one modality is needed")
    b, _, h, w = ref[1]
    return b, h, w


def _map_present(inputs: Inputs, fn: Callable[[torch.Tensor], torch.Tensor]) -> list[torch.Tensor | None]:
    """Apply ``fn`` to every present modality, keeping ``None`` in its slot."""
    return [None if x is None else fn(x) for x in inputs]


def _forward(model: SegModel, inputs: Inputs, num_classes: int | None) -> torch.Tensor:
    """One forward, zero-padding to the model's minimum size and cropping back; float32 logits."""
    b, h, w = _check_inputs(inputs)
    ph, pw = max(MIN_INPUT_SIZE - h, 0), max(MIN_INPUT_SIZE - w, 0)
    if ph or pw:
        inputs = _map_present(inputs, lambda x: F.pad(x, (0, pw, 0, ph)))  # bottom/right, value 0
    out = model(list(inputs))
    if (
        not isinstance(out, torch.Tensor)
        or out.ndim != 4
        or out.shape[0] != b
        or out.shape[-2:] != (h + ph, w + pw)
    ):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"the model must return B×K×H×W logits of shape ({b}, K, {h + ph}, {w + pw}), got {shape}"
        )
    if num_classes is not None and out.shape[1] != num_classes:
        raise ValueError(f"the model returned {out.shape[1]} classes, expected num_classes={num_classes}")
    if ph or pw:
        out = out[:, :, :h, :w]
    return out.float()


def _slide(
    model: SegModel,
    inputs: Inputs,
    crop_size: tuple[int, int],
    stride: tuple[int, int],
    window_batch: int,
    num_classes: int | None,
) -> torch.Tensor:
    """Sliding-window logits ``B×K×H×W``: per-window logits summed and divided by the count map."""
    b, h, w = _check_inputs(inputs)
    windows = slide_windows((h, w), crop_size, stride)
    if len(windows) == 1:  # one window is the whole image
        return _forward(model, inputs, num_classes)
    preds: torch.Tensor | None = None
    for start in range(0, len(windows), window_batch):
        group = windows[start : start + window_batch]
        # every window has the same size, so k windows stack into one (k·B)×C×h×w batch, window-major
        crops = _map_present(
            inputs, lambda x, g=group: torch.cat([x[:, :, y0:y1, x0:x1] for y0, y1, x0, x1 in g])
        )
        out = _forward(model, crops, num_classes)  # (k·B)×K×h×w
        if preds is None:
            preds = out.new_zeros(b, out.shape[1], h, w)
        for (y0, y1, x0, x1), logits in zip(group, out.split(b), strict=True):
            preds[:, :, y0:y1, x0:x1] += logits
    assert preds is not None
    counts = window_counts((h, w), crop_size, stride, device=preds.device)  # built on preds' device
    return preds.div_(counts.to(preds.dtype))


def _scaled_size(h: int, w: int, scale: float, align: int | None) -> tuple[int, int]:
    """``(round(h·s), round(w·s))``, each rounded up to a multiple of ``align`` when given."""
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if align:
        nh, nw = math.ceil(nh / align) * align, math.ceil(nw / align) * align
    return nh, nw


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (``align_corners=False``) of ``B×C×H×W``; a no-op at the same size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def infer_logits(
    model: SegModel,
    inputs: Inputs,
    *,
    mode: InferenceMode = "whole",
    crop_size: int | Sequence[int] = (1024, 1024),
    stride: int | Sequence[int] = (768, 768),
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    align: int | None = None,
    window_batch: int = 1,
    num_classes: int | None = None,
) -> torch.Tensor:
    """Logits of ``model`` on ``inputs`` by whole-image or sliding-window inference, with optional
    multi-scale and flip test-time augmentation (see the module docstring for every convention).

    Call it under ``torch.inference_mode()`` with the model in eval mode; the model's mode is left as
    it is.

    Args:
        model: callable ``list[Tensor | None] -> B×K×h×w`` logits at the size of its inputs
            (an :class:`~equiseg.models.EQUISeg`).
        inputs: N tensors ``B×C_i×H×W`` (normalised floats) or ``None`` for an absent modality.
        mode: ``"whole"`` (one forward per pass) or ``"slide"`` (sliding windows).
        crop_size: slide window size ``(h, w)`` or an int.
        stride: slide step ``(h, w)`` or an int; at most ``crop_size``.
        scales: resize factors of the multi-scale passes; ``(1.0,)`` is single-scale.
        flip: also run the horizontally mirrored input at every scale.
        align: round each scaled side up to a multiple of this (CMNeXt uses 32); ``None``: no rounding.
        window_batch: number of slide windows run in one forward (batch ``window_batch·B``); more is
            faster on a GPU and costs memory.
        num_classes: expected ``K``; checked against the model's output when given.

    Returns:
        float32 ``B×K×H×W``: a single pass's logits, or ``log`` of the softmax probabilities averaged
        over the passes (scales × flips). ``argmax(1)`` is the prediction, ``softmax(1)`` the class
        probabilities in both cases.
    """
    if mode not in INFERENCE_MODES:
        raise ValueError(f"unknown inference mode {mode!r}; choose from {', '.join(INFERENCE_MODES)}")
    crop, step = _check_grid(crop_size, stride)
    scales = tuple(float(s) for s in scales)
    if not scales or any(not (s > 0 and math.isfinite(s)) for s in scales):
        raise ValueError(f"scales must be a non-empty sequence of positive numbers, got {scales!r}")
    if align is not None and align < 1:
        raise ValueError(f"align must be a positive int or None, got {align!r}")
    if window_batch < 1:
        raise ValueError(f"window_batch must be >= 1, got {window_batch}")
    _, h, w = _check_inputs(inputs)

    def run(xs: Inputs) -> torch.Tensor:
        if mode == "slide":
            return _slide(model, xs, crop, step, window_batch, num_classes)
        return _forward(model, xs, num_classes)

    flips = (False, True) if flip else (False,)
    n_passes = len(scales) * len(flips)
    acc: torch.Tensor | None = None  # log of the summed probabilities so far
    for scale in scales:
        size = _scaled_size(h, w, scale, align)
        scaled = _map_present(inputs, lambda x, s=size: _resize(x, s))
        for mirrored in flips:
            xs = _map_present(scaled, lambda x: x.flip(-1)) if mirrored else scaled
            logits = run(xs)
            if mirrored:
                logits = logits.flip(-1)
            logits = _resize(logits, (h, w))
            if n_passes == 1:
                return logits
            log_p = logits.log_softmax(dim=1)
            acc = log_p if acc is None else torch.logaddexp(acc, log_p)
    assert acc is not None
    return acc - math.log(n_passes)


# ------------------------------------------------------------------------ the config's inference


def inference_kwargs(eval_cfg: Any) -> dict[str, Any]:
    """The :func:`infer_logits` arguments an :class:`~equiseg.config.EvalConfig` asks for.

    Every scoring path (``eval``, validation during training, the robustness benchmark of
    ``robustness`` / ``compare`` / ``ablate``) calls :func:`infer_logits` with these, so a number
    reported by one command is the number the others would report for the same checkpoint."""
    return {
        "mode": eval_cfg.mode,
        "crop_size": tuple(eval_cfg.crop_size),
        "stride": tuple(eval_cfg.stride),
        "scales": tuple(float(s) for s in eval_cfg.scales),
        "flip": bool(eval_cfg.flip),
        "align": eval_cfg.align,
        "window_batch": eval_cfg.window_batch,
    }


def forward_crop(eval_cfg: Any) -> tuple[int, int] | None:
    """The ``(h, w)`` the network's forward runs on under ``eval_cfg``: the slide window, or None (the
    whole image). What the bf16 probe of ``eval.precision: auto`` times."""
    return tuple(eval_cfg.crop_size) if eval_cfg.mode == "slide" else None  # type: ignore[return-value]


# what a single forward at the input size is, recorded by the paths that run no other inference
WHOLE_IMAGE: dict[str, Any] = {"mode": "whole", "scales": [1.0], "flip": False}


def inference_record(eval_cfg: Any | None) -> dict[str, Any]:
    """How the scored predictions were made, as every output records it: ``mode``, ``scales`` and
    ``flip``, plus ``crop_size`` / ``stride`` for sliding windows and ``align`` when set (it rounds
    the scaled sides up, at scale 1 too). ``None``: one whole-image forward at scale 1
    (:data:`WHOLE_IMAGE`). ``window_batch`` is left out: it changes the speed, not the computation."""
    if eval_cfg is None:
        return dict(WHOLE_IMAGE)
    rec: dict[str, Any] = {
        "mode": eval_cfg.mode,
        "scales": [float(s) for s in eval_cfg.scales],
        "flip": bool(eval_cfg.flip),
    }
    if eval_cfg.mode == "slide":
        rec.update(crop_size=list(eval_cfg.crop_size), stride=list(eval_cfg.stride))
    if eval_cfg.align:
        rec["align"] = eval_cfg.align
    return rec


def describe_inference(record: Mapping[str, Any] | None) -> str:
    """One phrase for reports: ``whole image, scale 1`` or ``sliding windows 512×512, stride
    384×384, scales 0.5/1/1.5, horizontal flip``."""
    rec = dict(WHOLE_IMAGE) if record is None else record
    if rec.get("mode") == "slide":
        (ch, cw), (sh, sw) = rec["crop_size"], rec["stride"]
        parts = [f"sliding windows {ch}×{cw}, stride {sh}×{sw}"]
    else:
        parts = ["whole image"]
    scales = rec.get("scales", [1.0])
    parts.append(("scale " if len(scales) == 1 else "scales ") + "/".join(f"{s:g}" for s in scales))
    if rec.get("align"):
        parts[-1] += f" (sides aligned to {rec['align']})"
    if rec.get("flip"):
        parts.append("horizontal flip")
    return ", ".join(parts)


def require_single_pass(eval_cfg: Any, command: str, why: str) -> None:
    """Refuse an :class:`~equiseg.config.EvalConfig` asking for more than one whole-image forward at
    scale 1, for a command that cannot run anything else (``why`` says what it measures), naming every
    key that is set otherwise.

    Raises:
        ValueError: ``analyze ...: eval.mode=slide, eval.flip=true are not supported; ...``.
    """
    bad = []
    if eval_cfg.mode != "whole":
        bad.append(f"eval.mode={eval_cfg.mode}")
    if [float(s) for s in eval_cfg.scales] != [1.0]:
        bad.append(f"eval.scales={[float(s) for s in eval_cfg.scales]}")
    if eval_cfg.flip:
        bad.append("eval.flip=true")
    if eval_cfg.align:
        bad.append(f"eval.align={eval_cfg.align}")
    if bad:
        raise ValueError(
            f"{command} {why}, so {', '.join(bad)} cannot be honoured; set eval.mode=whole, "
            "eval.scales=[1.0], eval.flip=false, eval.align=null in the config (or with --set)"
        )


class EvalInference:
    """``model`` called the way an :class:`~equiseg.config.EvalConfig` says: every call goes through
    :func:`infer_logits` with :func:`inference_kwargs`. For callers that take a plain
    ``inputs -> logits`` callable (the robustness benchmark), so they score as ``eval`` does."""

    def __init__(self, model: SegModel, eval_cfg: Any, num_classes: int | None = None) -> None:
        self.model = model
        self.kwargs = inference_kwargs(eval_cfg)
        self.num_classes = num_classes

    def __call__(self, inputs: Inputs) -> torch.Tensor:
        return infer_logits(self.model, inputs, num_classes=self.num_classes, **self.kwargs)
