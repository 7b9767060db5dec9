"""Inference on new data: segment a data set folder or a set of per-modality files with
a trained model, and write colour, overlay and class-index PNGs.

A training checkpoint carries everything needed (``model_config`` and ``meta``: class names, palette,
modalities, per-modality normalisation; see :func:`equiseg.engine.builders.dataset_meta`), so
prediction needs nothing but the checkpoint and the images.

Inputs (``inputs`` of :func:`predict` / ``--input`` of ``equiseg predict``): a folder in a known data set
layout, or per-modality files (or raw tensors) of one or more samples; how each is read is
:mod:`equiseg.tasks.predict_inputs`.

Processing: each present modality is normalised with the checkpoint's ``meta.norm_stats`` by the data
layer's :class:`~equiseg.data.ValTransform` -- with ``short_side`` it is also resized like validation
(short side to ``short_side``, sides rounded up to a multiple of ``align``), otherwise kept at its
size -- then one whole-image forward (:func:`~equiseg.engine.inference.infer_logits`) runs with the
absent modalities as ``None`` (the model-aware way, not zero-filled). Logits are resized back to the
input size (bilinear) before the argmax, so predictions always have the original ``H×W``. The forward
runs in ``precision`` (default ``auto``, as ``equiseg predict``: bf16 autocast where the hardware runs it
fast, else fp32; see :mod:`equiseg.engine.precision`; ``fp32`` gives exactly the model's own argmax); the
logits are fp32 before the resize and the argmax either way.

Outputs per sample (:func:`predict_to_dir`), named after the sample's input file so reruns overwrite
the same files: ``<stem>_pred.png`` (palette colours), with ``overlay`` ``<stem>_overlay.png`` (colours
blended 50 % over the RGB image, or over a preview of the first present modality when no RGB modality
is present), with ``raw`` ``<stem>_classes.png`` (uint8 class indices, 255 = ignore). For a data set
folder the stem keeps the sample's sub-folders (``cloud/val/MAP_1_point0/000000_rgb_front``), so
samples of different sequences cannot collide.

Output safety: each file is written whole or not at all (a full disk leaves no 0-byte or partial PNG,
and the error names the file); a read-only ``out_dir`` is refused before the model is loaded; and an
``out_dir`` inside the input data set folder is refused, since the next run would read the predictions
as samples.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from equiseg.data import NormStats, build_val_transform
from equiseg.data.constants import default_palette
from equiseg.data.panels import colorize, modality_preview
from equiseg.engine.inference import infer_logits
from equiseg.engine.metrics import class_ids
from equiseg.engine.precision import resolve_precision, with_precision
from equiseg.models import EQUISeg
from equiseg.utils import bounded_repr, check_writable_dir, write_atomic

from .predict_inputs import FolderSamples, Inputs, Sample, parse_input_args, sample_source

__all__ = [
    "Prediction",
    "Sample",
    "iter_predict",
    "load_for_inference",
    "parse_input_args",
    "predict",
    "predict_to_dir",
    "write_prediction",
]

PathLike = str | os.PathLike

OVERLAY_ALPHA = 0.5
MIN_SHORT_SIDE = 32  # the model's minimum input (its last stage has stride 32)
SUFFIXES = {"pred": "_pred.png", "overlay": "_overlay.png", "raw": "_classes.png"}


@dataclasses.dataclass
class Prediction:
    """What :func:`iter_predict` yields: the sample, its ``H×W`` int64 class indices and the precision
    its forward ran in (``"fp32"`` / ``"bf16"``)."""

    name: str
    pred: torch.Tensor
    raw: list[torch.Tensor | None]
    precision: str = "fp32"


# ------------------------------------------------------------------------------------- the model


def load_for_inference(
    model_or_checkpoint: EQUISeg | PathLike, meta: Mapping[str, Any] | None = None, device: str | None = None
) -> tuple[EQUISeg, dict[str, Any]]:
    """An eval-mode model on ``device`` and its class/normalisation meta.

    Args:
        model_or_checkpoint: an :class:`~equiseg.models.EQUISeg` (its ``meta`` attribute, set by the
            loader -- ``equiseg.load(...).model``, :func:`equiseg.load_model` -- is used unless ``meta``
            is given), or the path of a training checkpoint or an ``equiseg export`` folder (loaded by
            the one loader, :func:`equiseg.engine.eval_setup.load_with_config`).
        meta: overrides the model's meta (``classes``, ``palette``, ``norm_stats`` ...).
        device: ``auto``, ``cpu``, ``cuda`` ...; ``None``: the CPU for a checkpoint, where it is for a
            model.

    Raises:
        ValueError: meta without normalisation statistics for a modality, or a file the loader refuses
            (not a model, weights that do not fit their config ...).
        CheckpointError: a corrupt or unsafe checkpoint file.
    """
    from equiseg.engine.device import resolve_device
    from equiseg.engine.eval_setup import load_with_config

    dev = resolve_device(device) if device is not None else None
    if isinstance(model_or_checkpoint, (str, os.PathLike)):
        model = load_with_config(model_or_checkpoint, device=dev).model
    else:
        model = (model_or_checkpoint if dev is None else model_or_checkpoint.to(dev)).eval()
    meta = dict(meta if meta is not None else getattr(model, "meta", None) or {})
    stats = meta.get("norm_stats") or {}
    missing = [m for m in model.modalities if m not in stats]
    if missing:
        raise ValueError(
            f"no normalisation statistics for modalities {missing} (meta.norm_stats has {sorted(stats)}); "
            "use a checkpoint written by `equiseg train`, or pass meta={'norm_stats': {...}}"
        )
    meta["norm_stats"] = {m: NormStats.coerce(stats[m], f"meta.norm_stats[{m!r}]") for m in model.modalities}
    k = model.cfg.num_classes
    meta.setdefault("palette", [list(c) for c in default_palette(k)])
    meta.setdefault("classes", [str(i) for i in range(k)])
    meta.setdefault("ignore_index", model.cfg.ignore_index)
    meta.setdefault("rgb_modalities", [m for m in model.modalities if m in ("rgb", "frame_camera")])
    return model, meta


# ----------------------------------------------------------------------------------- prediction


@torch.inference_mode()
def _predict_sample(
    model: EQUISeg,
    raw: Sequence[torch.Tensor | None],
    meta: Mapping[str, Any],
    short_side: int | None,
    align: int,
    device: torch.device,
) -> torch.Tensor:
    """Normalise (and optionally resize) the present modalities, forward, argmax at the input size."""
    present = [i for i, x in enumerate(raw) if x is not None]
    names = [model.modalities[i] for i in present]
    h, w = raw[present[0]].shape[1:]
    transform = build_val_transform(names, meta["norm_stats"], short_side=short_side, align=align)
    normed, _ = transform([raw[i] for i in present], torch.zeros((h, w), dtype=torch.uint8))
    inputs: list[torch.Tensor | None] = [None] * len(raw)
    for i, x in zip(present, normed, strict=True):
        inputs[i] = x.unsqueeze(0).to(device)
    logits = infer_logits(model, inputs, mode="whole", num_classes=model.cfg.num_classes)
    if logits.shape[-2:] != (h, w):  # resized for the forward: back to the input size
        logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
    return class_ids(logits)[0].cpu()


def _check_resize(short_side: Any, align: Any) -> None:
    """``short_side`` is None or an integer >= 32 and ``align`` an integer >= 1 (0 divides by zero)."""
    if short_side is not None and (
        isinstance(short_side, bool) or not isinstance(short_side, int) or short_side < MIN_SHORT_SIDE
    ):
        raise ValueError(
            f"--short-side: expected an integer >= {MIN_SHORT_SIDE} (the model's minimum input), "
            f"got {bounded_repr(short_side)}"
        )
    if isinstance(align, bool) or not isinstance(align, int) or align < 1:
        raise ValueError(f"align: expected an integer >= 1, got {bounded_repr(align)}")


def _check_out_outside_input(out: Path, inputs: Any) -> None:
    """Refuse an output folder inside the data set folder being read: its ``<stem>_pred.png`` files
    match the samples' patterns, so every rerun would predict on the previous run's predictions too."""
    if not isinstance(inputs, (str, os.PathLike)):
        return  # explicit files: only those files are read, wherever the outputs go
    if Path(inputs).is_dir():
        FolderSamples.detect(Path(inputs))  # a folder in no known layout: that error first
    root = Path(inputs).resolve()
    target = out.resolve()
    if target == root or root in target.parents:
        raise ValueError(
            f"--out {out} is inside the input folder {inputs}: the predictions would be read as samples "
            "on the next run; write them outside the data set"
        )


def iter_predict(
    model_or_checkpoint: EQUISeg | PathLike,
    inputs: Inputs,
    *,
    split: str = "val",
    short_side: int | None = None,
    align: int = 32,
    device: str | None = None,
    meta: Mapping[str, Any] | None = None,
    progress: bool = False,
    precision: str = "auto",
) -> Iterator[Prediction]:
    """Predict sample by sample (memory stays flat on large splits); see :func:`predict`.

    Yields:
        :class:`Prediction` per sample, in the data set's (or the given) order.
    """
    _check_resize(short_side, align)
    model, meta = load_for_inference(model_or_checkpoint, meta, device)
    dev = next(model.parameters()).device
    precision = resolve_precision(precision, dev, key="precision")
    net = with_precision(model, precision, dev)  # bf16: autocast forward, fp32 logits
    samples = sample_source(inputs, model.modalities, split, model.input_channels)
    for i in tqdm(
        range(len(samples)), desc="predict", unit="sample", disable=not progress, dynamic_ncols=True
    ):
        sample = samples[i]
        pred = _predict_sample(net, sample.raw, meta, short_side, align, dev)
        yield Prediction(sample.name, pred, sample.raw, precision)


def predict(
    model_or_checkpoint: EQUISeg | PathLike,
    inputs: Inputs,
    *,
    split: str = "val",
    short_side: int | None = None,
    align: int = 32,
    device: str | None = None,
    meta: Mapping[str, Any] | None = None,
    progress: bool = False,
    precision: str = "auto",
) -> list[torch.Tensor]:
    """Segment samples with a trained model.

    Args:
        model_or_checkpoint: a training checkpoint path, or an :class:`~equiseg.models.EQUISeg` with a
            ``meta`` attribute (or pass ``meta``).
        inputs: a DeLiVER/MUSES-layout folder; or one sample as ``{modality: file or raw C×H×W
            tensor}`` naming any non-empty subset of the model's modalities (the rest are absent);
            or a list of such mappings.
        split: the split read from a data set folder.
        short_side: resize like validation (short side, sides aligned to ``align``) before the
            forward; ``None`` keeps the input size. Predictions are at the input size either way.
        align: side multiple used with ``short_side``.
        device: ``auto``, ``cpu``, ``cuda`` ...; ``None``: the CPU for a checkpoint, where it is for a
            model.
        meta: classes / palette / ``norm_stats`` overriding the model's.
        progress: show a progress bar.
        precision: ``"auto"`` (default: bf16 autocast where this machine runs it fast, else fp32),
            ``"fp32"`` or ``"bf16"``.

    Returns:
        Per sample, an ``H×W`` int64 tensor of class indices at the sample's original size. For large
        splits use :func:`iter_predict` or :func:`predict_to_dir`, which do not keep them all.

    Raises:
        ValueError: an unknown modality name (listing the valid ones), an unreadable file, a folder in
            an unknown layout, mismatched sizes.
        FileNotFoundError: a missing file or folder, an empty split.
    """
    return [
        p.pred
        for p in iter_predict(
            model_or_checkpoint,
            inputs,
            split=split,
            short_side=short_side,
            align=align,
            device=device,
            meta=meta,
            progress=progress,
            precision=precision,
        )
    ]


def _overlay_base(
    raw: Sequence[torch.Tensor | None], modalities: Sequence[str], rgb: Sequence[str]
) -> np.ndarray:
    """The image under the overlay: the first present RGB modality, else the first present one."""
    order = [i for i, m in enumerate(modalities) if m in rgb] + list(range(len(modalities)))
    i = next(i for i in order if raw[i] is not None)
    x = raw[i]
    if x.dtype != torch.uint8 and modalities[i] in rgb and float(x.max()) <= 255:
        x = x.round().to(torch.uint8)  # raw 8-bit-range RGB in a float tensor: show as is
    return modality_preview(x)


def write_prediction(
    pred: torch.Tensor,
    out_dir: PathLike,
    name: str,
    palette: Sequence[Sequence[int]],
    *,
    ignore_index: int = 255,
    overlay_on: np.ndarray | None = None,
    raw: bool = False,
) -> list[Path]:
    """Write ``<name>_pred.png`` (+ ``_overlay.png`` when ``overlay_on`` is given, + ``_classes.png``).

    Args:
        pred: ``H×W`` class indices.
        out_dir: output folder; ``name`` may contain sub-folders.
        name: output stem.
        palette: one RGB colour per class.
        ignore_index: painted black in colour images; its value in the class-index PNG.
        overlay_on: ``H×W×3`` uint8 image to blend the colours over (alpha 0.5).
        raw: also write the uint8 class-index PNG.

    Returns:
        The files written.
    """
    base = Path(out_dir) / name
    base.parent.mkdir(parents=True, exist_ok=True)
    labels = pred.cpu().numpy()
    colour = colorize(labels, palette, ignore_index)
    written = [base.with_name(base.name + SUFFIXES["pred"])]
    _save_png(Image.fromarray(colour), written[-1])
    if overlay_on is not None:
        if overlay_on.shape != colour.shape:
            raise ValueError(f"overlay image is {overlay_on.shape}, the prediction {colour.shape}")
        blend = OVERLAY_ALPHA * colour.astype(np.float32) + (1 - OVERLAY_ALPHA) * overlay_on.astype(
            np.float32
        )
        written.append(base.with_name(base.name + SUFFIXES["overlay"]))
        _save_png(Image.fromarray(np.clip(blend + 0.5, 0, 255).astype(np.uint8)), written[-1])
    if raw:
        if labels.size and int(labels.max()) > 255:
            raise ValueError("class indices above 255 do not fit a uint8 class-index PNG")
        written.append(base.with_name(base.name + SUFFIXES["raw"]))
        _save_png(Image.fromarray(labels.astype(np.uint8), mode="L"), written[-1])
    return written


def _save_png(image: Image.Image, path: Path) -> None:
    """Encode in memory, then write the file whole (:func:`~equiseg.utils.write_atomic`)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    write_atomic(path, buffer.getvalue())


def predict_to_dir(
    model_or_checkpoint: EQUISeg | PathLike,
    inputs: Inputs,
    out_dir: PathLike,
    *,
    overlay: bool = False,
    raw: bool = False,
    split: str = "val",
    short_side: int | None = None,
    align: int = 32,
    device: str | None = None,
    meta: Mapping[str, Any] | None = None,
    progress: bool = False,
    precision: str = "auto",
) -> list[Path]:
    """:func:`predict` and write each sample's PNGs to ``out_dir`` as it goes (``equiseg predict``).

    Args:
        overlay: also write ``<stem>_overlay.png`` (colours at 50 % over the RGB image).
        raw: also write ``<stem>_classes.png`` (uint8 class indices, 255 = ignore).
        Others: as :func:`predict`.

    Returns:
        Every file written.

    Raises:
        ValueError: ``out_dir`` exists and is not a folder, or lies inside the input data set folder;
            a bad ``short_side``; and as :func:`predict`.
        WriteError: ``out_dir`` is not writable. These are checked before the model is loaded; a
            write that fails later (a full disk) names its file and leaves no partial file.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, expected a folder (it is created if missing)")
    _check_resize(short_side, align)
    _check_out_outside_input(out, inputs)
    check_writable_dir(out, "--out")
    model, meta = load_for_inference(model_or_checkpoint, meta, device)
    if raw and model.cfg.num_classes > 255:
        raise ValueError(
            f"--raw: {model.cfg.num_classes} classes do not fit a uint8 PNG (0..254, 255 ignore)"
        )
    written: list[Path] = []
    for p in iter_predict(
        model,
        inputs,
        split=split,
        short_side=short_side,
        align=align,
        device=device,
        meta=meta,
        progress=progress,
        precision=precision,
    ):
        base = _overlay_base(p.raw, model.modalities, meta["rgb_modalities"]) if overlay else None
        written += write_prediction(
            p.pred,
            out_dir,
            p.name,
            meta["palette"],
            ignore_index=int(meta["ignore_index"]),
            overlay_on=base,
            raw=raw,
        )
    return written
