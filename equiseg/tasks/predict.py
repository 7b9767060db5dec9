"""Inference on new data: segment a data set folder or a set of per-modality files with
a trained model, and write colour, overlay and class-index PNGs.

A training checkpoint carries everything needed (``model_config`` and ``meta``: class names, palette,
modalities, per-modality normalisation; see :func:`equiseg.engine.builders.dataset_meta`), so
prediction needs nothing but the checkpoint and the images.

Inputs (``inputs`` of :func:`predict` / ``--input`` of ``equiseg predict``):

- a **folder in a known data set layout**: DeLiVER (it has ``img/``) or MUSES (it has
  ``frame_camera/``). The data set's own loader reads the checkpoint's modalities from the chosen split
  (default ``val``); a modality whose top folder does not exist at all (e.g. no ``lidar/``) is passed
  to the model as absent (``None``), with a warning.
- **explicit files**, one sample: a mapping ``{modality: path}`` (``rgb=a.png depth=b.png`` on the
  command line) naming any non-empty subset of the checkpoint's modalities; the others are absent
  (``None``). Files are decoded as the data set of those modality names does (DeLiVER's 8-bit PNGs,
  MUSES' projected ``.npz``/``.npy``/OpenCV PNGs); other names are read generically (8-bit images as
  they are, anything else as float). The Python API also takes raw ``C×H×W`` tensors (undecoded
  values, uint8 or float, *not* normalised) in place of paths, and a list of such mappings.

Channels: each modality is read with the model's channel count for it (``model.input_channels``, from
the training config's ``data.channels``): 3-channel modalities as the loaders do (gray repeated, alpha
dropped), any other count exactly as the file holds it.

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
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from equiseg.data import DELIVER_MODALITIES, MUSES_MODALITIES, FolderDataset, NormStats, build_val_transform
from equiseg.data.constants import default_palette
from equiseg.data.deliver import deliver_spec
from equiseg.data.folder import DatasetSpec, ModalitySpec
from equiseg.data.io import IMAGE_EXTENSIONS, check_finite, read_image, to_channels, to_chw_tensor
from equiseg.data.muses import muses_spec
from equiseg.data.panels import colorize, modality_preview
from equiseg.engine.inference import infer_logits
from equiseg.engine.metrics import class_ids
from equiseg.engine.precision import resolve_precision, with_precision
from equiseg.models import EQUISeg
from equiseg.utils import bounded_repr, check_writable_dir, write_atomic

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
SampleInputs = Mapping[str, PathLike | torch.Tensor]
Inputs = PathLike | SampleInputs | Sequence[SampleInputs]

OVERLAY_ALPHA = 0.5
MIN_SHORT_SIDE = 32  # the model's minimum input (its last stage has stride 32)
SUFFIXES = {"pred": "_pred.png", "overlay": "_overlay.png", "raw": "_classes.png"}


@dataclasses.dataclass
class Sample:
    """One sample before normalisation.

    Attributes:
        name: output stem, relative to the output folder (``/``-separated, no extension).
        raw: per model modality, the decoded ``C×H×W`` tensor (uint8 or float32) or ``None`` (absent).
    """

    name: str
    raw: list[torch.Tensor | None]


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


# ----------------------------------------------------------------------------------- the samples


def _modality_specs(modalities: Sequence[str]) -> dict[str, ModalitySpec]:
    """How to decode files of these modality names: DeLiVER's or MUSES' rules, else generic ({})."""
    names = set(modalities)
    if names <= set(DELIVER_MODALITIES):
        return dict(deliver_spec().modalities)
    if names <= set(MUSES_MODALITIES):
        return dict(muses_spec().modalities)
    return {}


def _decode(path: Path, spec: ModalitySpec | None, name: str, channels: int) -> torch.Tensor:
    """A modality file -> ``C×H×W`` tensor (C = ``channels``; uint8 for 8-bit images, float32
    otherwise), decoded by ``spec``'s rules (the data set loader's) when given; NaN/Inf values are
    refused naming the file."""
    array = read_image(path)
    check_finite(array, path, name)
    is_image_file = path.suffix.lower() in IMAGE_EXTENSIONS
    if spec is not None and spec.bgr and is_image_file and array.ndim == 3 and array.shape[2] >= 3:
        array = array[..., [2, 1, 0] + list(range(3, array.shape[2]))]  # written by OpenCV
    array = to_channels(array, channels, str(path))
    if array.dtype == np.uint8 and (spec is None or spec.kind == "image"):
        return to_chw_tensor(array)
    if spec is not None and spec.kind == "image":
        raise ValueError(f"{path}: modality '{spec.name}' expects an 8-bit image, got {array.dtype} data")
    out = array.astype(np.float32)
    if spec is not None and is_image_file and (spec.png_scale != 1.0 or spec.png_shift != 0.0):
        out = out / np.float32(spec.png_scale) - np.float32(spec.png_shift)
    return to_chw_tensor(out)


def _upsample_nearest(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest upsampling of a ``C×h×w`` tensor of any dtype (source index ``⌊i·h/H⌋``, the loaders')."""
    rows = torch.arange(size[0]) * x.shape[1] // size[0]
    cols = torch.arange(size[1]) * x.shape[2] // size[1]
    return x.index_select(1, rows).index_select(2, cols)


def _check_names(names: Sequence[str], modalities: Sequence[str]) -> None:
    for name in names:
        if name not in modalities:
            raise ValueError(
                f"unknown modality '{name}': the checkpoint's modalities are {', '.join(modalities)}"
            )


def _decode_sample(
    item: SampleInputs,
    modalities: Sequence[str],
    specs: Mapping[str, ModalitySpec],
    index: int,
    channels: Sequence[int],
) -> list[torch.Tensor | None]:
    """Decode one ``{modality: path or raw tensor}`` sample (modality i with ``channels[i]``
    channels); absent modalities become ``None``."""
    raw: list[torch.Tensor | None] = [None] * len(modalities)
    for i, m in enumerate(modalities):
        if m not in item:
            continue
        value = item[m]
        if isinstance(value, torch.Tensor):
            c = channels[i]
            if value.ndim != 3 or value.shape[0] != c:
                raise ValueError(f"sample {index}: '{m}' must be a {c}×H×W tensor, got {tuple(value.shape)}")
            if value.is_floating_point():  # fp16/bf16 via float32, which numpy always has
                check_finite(value.detach().cpu().float().numpy(), f"sample {index}", m)
            raw[i] = value.cpu()
            continue
        try:
            raw[i] = _decode(Path(value), specs.get(m), m, channels[i])
        except FileNotFoundError as e:
            raise FileNotFoundError(f"input '{m}': {e}") from None
        except ValueError as e:
            raise ValueError(f"input '{m}': {e}") from None
    # sizes: the first present modality that is not allowed to be low-resolution is the reference
    present = [i for i, x in enumerate(raw) if x is not None]
    full = [i for i in present if not (modalities[i] in specs and specs[modalities[i]].lowres)]
    ref = (full or present)[0]
    size = tuple(raw[ref].shape[1:])
    for i in present:
        s = tuple(raw[i].shape[1:])
        if s == size:
            continue
        spec = specs.get(modalities[i])
        if spec is not None and spec.lowres and s[0] <= size[0] and s[1] <= size[1]:
            raw[i] = _upsample_nearest(raw[i], size)  # e.g. DeLiVER's low-resolution events
            continue
        raise ValueError(
            f"sample {index}: '{modalities[i]}' is {s[0]}×{s[1]} but '{modalities[ref]}' is "
            f"{size[0]}×{size[1]}; all modalities of a sample must have the same size"
        )
    return raw


def _top_folder(spec: ModalitySpec) -> str:
    """The literal folder part of a modality's path pattern (``img/``, ``projected_to_rgb/lidar/``)."""
    return spec.paths[0].split("{", 1)[0]


class _FolderSamples:
    """The samples of a DeLiVER- or MUSES-layout folder, read by the data set's own loader."""

    def __init__(self, root: Path, modalities: Sequence[str], split: str, channels: Sequence[int]) -> None:
        if not root.is_dir():
            raise FileNotFoundError(f"input folder {root} does not exist")
        spec = self._detect(root)
        unknown = [m for m in modalities if m not in spec.modalities]
        if unknown:
            raise ValueError(
                f"{root} is a {spec.name} folder (modalities {', '.join(spec.modalities)}), but the "
                f"checkpoint's modalities {unknown} are not among them; pass files as MODALITY=PATH instead"
            )
        self.present = [m for m in modalities if (root / _top_folder(spec.modalities[m])).is_dir()]
        absent = [m for m in modalities if m not in self.present]
        if not self.present:
            raise FileNotFoundError(
                f"{root}: none of the checkpoint's modalities {list(modalities)} has a folder"
            )
        if absent:
            folders = ", ".join(_top_folder(spec.modalities[m]) for m in absent)
            warnings.warn(f"{root} has no {folders}: predicting with {absent} absent", stacklevel=3)
        self.root, self.spec, self.modalities = root, spec, tuple(modalities)
        counts = dict(zip(modalities, channels, strict=True))
        self.dataset = FolderDataset(
            spec, root=root, split=split, modalities=self.present, labels=False, channels=counts
        )
        self._strip = len(Path(_top_folder(spec.modalities[self.present[0]])).parts)

    @staticmethod
    def _detect(root: Path) -> DatasetSpec:
        if (root / "img").is_dir():
            # the reference reads depth from hha/; fall back to depth/ when only that exists
            depth = "depth" if not (root / "hha").is_dir() and (root / "depth").is_dir() else "hha"
            return deliver_spec(depth)
        if (root / "frame_camera").is_dir():
            return muses_spec()
        raise ValueError(
            f"{root}: not a known data set layout (DeLiVER has img/, MUSES has frame_camera/); "
            "pass per-modality files as MODALITY=PATH instead"
        )

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Sample:
        inputs, _ = self.dataset.load(index)
        loaded = dict(zip(self.present, inputs, strict=True))
        path = self.dataset.paths(index)[self.present[0]]
        rel = Path(*path.relative_to(self.root).parts[self._strip :]).with_suffix("")
        return Sample(rel.as_posix(), [loaded.get(m) for m in self.modalities])


class _ExplicitSamples:
    """Samples given as ``{modality: file or raw tensor}`` mappings, decoded when reached."""

    def __init__(
        self, items: Sequence[SampleInputs], modalities: Sequence[str], channels: Sequence[int]
    ) -> None:
        if not items:
            raise ValueError("no inputs given")
        for i, item in enumerate(items):
            if not isinstance(item, Mapping) or not item:
                raise ValueError(
                    f"sample {i}: expected a non-empty mapping modality -> file (or raw C×H×W tensor), "
                    f"got {item!r}"
                )
            _check_names(list(item), modalities)
            for m, value in item.items():  # fail before any work, not at the n-th sample
                if not isinstance(value, torch.Tensor) and not Path(value).is_file():
                    what = "is a directory, expected a file" if Path(value).is_dir() else "does not exist"
                    raise FileNotFoundError(f"input '{m}': {value} {what}")
        stems = [self._stem(item, modalities) for item in items]
        dupes = sorted({s for s in stems if s is not None and stems.count(s) > 1})
        if dupes:  # the output files would overwrite each other
            raise ValueError(f"several samples are named after files with the stem(s) {dupes}")
        self.items, self.modalities, self.channels = list(items), tuple(modalities), tuple(channels)
        self.specs = _modality_specs(modalities)

    @staticmethod
    def _stem(item: SampleInputs, modalities: Sequence[str]) -> str | None:
        """The stem of the sample's first file, in model order (None: only tensors)."""
        paths = [item[m] for m in modalities if m in item and not isinstance(item[m], torch.Tensor)]
        return Path(paths[0]).stem if paths else None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Sample:
        item = self.items[index]
        name = self._stem(item, self.modalities) or f"sample_{index:04d}"
        return Sample(name, _decode_sample(item, self.modalities, self.specs, index, self.channels))


def _sample_source(
    inputs: Inputs, modalities: Sequence[str], split: str, channels: Sequence[int]
) -> _FolderSamples | _ExplicitSamples:
    """The samples of ``inputs``, each modality read with its ``channels`` (the model's)."""
    if isinstance(inputs, (str, os.PathLike)):
        return _FolderSamples(Path(inputs), modalities, split, channels)
    items = [inputs] if isinstance(inputs, Mapping) else list(inputs)
    return _ExplicitSamples(items, modalities, channels)


def parse_input_args(items: Sequence[str]) -> Path | dict[str, Path]:
    """Command-line ``--input`` values -> a data set folder or ``{modality: file}``.

    Args:
        items: one folder, or ``MODALITY=FILE`` items (each modality at most once).

    Raises:
        ValueError: a mix of the two forms, a bare file, or a modality given twice.
        FileNotFoundError: a bare path that does not exist.
    """
    if not items:
        raise ValueError("--input: give a data set folder or MODALITY=FILE items")
    if all("=" not in it for it in items):
        if len(items) > 1:
            raise ValueError("--input: give one data set folder, or MODALITY=FILE items for one sample")
        path = Path(items[0])
        if path.is_dir():
            return path
        if path.exists():
            raise ValueError(f"--input: {path} is a file; name its modality, e.g. rgb={path}")
        raise FileNotFoundError(f"--input: {path} does not exist")
    files: dict[str, Path] = {}
    for it in items:
        name, sep, value = it.partition("=")
        name = name.strip()
        if not sep or not name or not value:
            raise ValueError(f"--input: {it!r} is not MODALITY=FILE (do not mix a folder with files)")
        if name in files:
            raise ValueError(f"--input: modality '{name}' given twice")
        files[name] = Path(value)
    return files


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
        _FolderSamples._detect(Path(inputs))  # a folder in no known layout: that error first
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
    samples = _sample_source(inputs, model.modalities, split, model.input_channels)
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
