"""The samples ``equiseg predict`` reads: a data set folder in a known layout, or per-modality files
(or raw tensors) of one or more samples, each decoded with the model's channel count for it.

Inputs (``inputs`` of :func:`equiseg.tasks.predict.predict` / ``--input`` of ``equiseg predict``):

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
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from equiseg.data import DELIVER_MODALITIES, MUSES_MODALITIES, FolderDataset
from equiseg.data.deliver import deliver_spec
from equiseg.data.folder import DatasetSpec, ModalitySpec
from equiseg.data.io import IMAGE_EXTENSIONS, check_finite, read_image, to_channels, to_chw_tensor
from equiseg.data.muses import muses_spec

__all__ = ["ExplicitSamples", "FolderSamples", "Sample", "parse_input_args", "sample_source"]

PathLike = str | os.PathLike
SampleInputs = Mapping[str, PathLike | torch.Tensor]
Inputs = PathLike | SampleInputs | Sequence[SampleInputs]


@dataclasses.dataclass
class Sample:
    """One sample before normalisation.

    Attributes:
        name: output stem, relative to the output folder (``/``-separated, no extension).
        raw: per model modality, the decoded ``C×H×W`` tensor (uint8 or float32) or ``None`` (absent).
    """

    name: str
    raw: list[torch.Tensor | None]


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


class FolderSamples:
    """The samples of a DeLiVER- or MUSES-layout folder, read by the data set's own loader."""

    def __init__(self, root: Path, modalities: Sequence[str], split: str, channels: Sequence[int]) -> None:
        if not root.is_dir():
            raise FileNotFoundError(f"input folder {root} does not exist")
        spec = self.detect(root)
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
    def detect(root: Path) -> DatasetSpec:
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


class ExplicitSamples:
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


def sample_source(
    inputs: Inputs, modalities: Sequence[str], split: str, channels: Sequence[int]
) -> FolderSamples | ExplicitSamples:
    """The samples of ``inputs``, each modality read with its ``channels`` (the model's)."""
    if isinstance(inputs, (str, os.PathLike)):
        return FolderSamples(Path(inputs), modalities, split, channels)
    items = [inputs] if isinstance(inputs, Mapping) else list(inputs)
    return ExplicitSamples(items, modalities, channels)


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
