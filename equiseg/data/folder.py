"""A multimodal segmentation data set described by a YAML file or dict: :class:`FolderDataset`.

The engine behind :class:`~equiseg.data.DeLiVER` and :class:`~equiseg.data.MUSES` (docs/design.md §4) and the
way to add a new data set without Python. A spec names, per modality, a path *pattern* whose
``{fields}`` identify a sample; the samples are the files matching the ``samples`` pattern (by
default the first modality's), and every other path is that pattern with the same fields filled in.
``{root}`` and ``{split}`` are reserved fields; relative patterns are taken relative to the root.

Example (YAML)::

    root: /data/mine                   # or FolderDataset(spec, root=...); default: the YAML's folder
    classes: [road, car, sky]
    palette: [[128, 64, 128], [0, 0, 142], [70, 130, 180]]    # optional
    ignore_index: 255                  # optional
    cases: [day, night]                # optional: known case names ...
    case_fields: [time]                # ... matched on these fields (whole value or '_'-tokens)
    modalities:                        # the order of the inputs
      rgb:
        path: "rgb/{split}/{time}/{key}.png"
        type: image                    # image: 8-bit file -> uint8 3xHxW ; array: float32 3xHxW
        rgb: true                      # receives the photometric augmentation (docs/design.md §3.3)
        norm: {mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], scale: 255}
      depth:
        path: ["depth/{split}/{time}/{key}.npz", "depth/{split}/{time}/{key}.png"]  # first found
        type: array
        png_scale: 1000                # PNG values decode as raw / png_scale - png_shift
        norm: {mean: [20, 20, 20], std: [15, 15, 15], scale: 1}
      multispectral:
        path: "ms/{split}/{time}/{key}.npy"
        type: array
        channels: 20                   # the file's channels, taken as they are (default 3: see below)
        norm: {mean: [0.3], std: [0.2], scale: 1}                # one value for all channels, or 20
    label:
      path: "label/{split}/{time}/{key}.png"
      channel: 0                       # channel of a multi-channel label image
      offset: 0                        # class = raw + offset (for raws that land in 0..C-1)
      ignore_values: [255]             # raws mapped to ignore_index
      mapping: {}                      # explicit raw -> class (or ignore_index) overrides

Modality options: ``bgr`` (the file was written by OpenCV: reverse colour channels of PNG/JPEG
files), ``lowres`` (the file may be smaller than the label; upsampled with nearest, like DeLiVER's
low-resolution events), ``channels`` (the modality's channel count). Every label value outside the
declared raw values is an error.

Channels: a modality has 3 channels unless its ``channels`` (or the experiment's ``data.channels``,
which must agree with it) says otherwise. For 3 channels a gray file is repeated and an alpha channel
dropped; for any other count the file must hold exactly that many channels (nothing repeated or cut)
and its ``norm`` gives one value per channel or one for all (:meth:`NormStats.for_channels
<equiseg.data.NormStats.for_channels>`); without ``norm``, mean 0 / std 1 after ``/ scale``.

Values are parsed by the experiment config's typed machinery (:func:`equiseg.config.coerce`), so a
bad one is an error naming its dotted key and what was expected (``modalities.rgb.bgr: expected
true/false, got 'flase'``), prefixed with the spec file when the spec came from one.

``dataset[i]`` returns ``(inputs, label)``: a list of ``C×H×W`` tensors in the order of the
modalities (C = the modality's channels; uint8 for ``type: image``, float32 for ``type: array``) and an
int64 ``H×W`` label, or the output of ``transform(inputs, label)``.
"""

from __future__ import annotations

import dataclasses
import glob
import math
import os
import re
import string
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from equiseg.data.constants import IGNORE_INDEX, NormStats, check_palette, default_palette
from equiseg.data.io import IMAGE_EXTENSIONS, check_finite, read_image, to_channels, to_chw_tensor
from equiseg.schema import coerce, load_yaml, suggest
from equiseg.utils import DEFAULT_CHANNELS

__all__ = ["FolderDataset", "DatasetSpec", "ModalitySpec", "LabelSpec", "Transform"]

Transform = Callable[[list[torch.Tensor], torch.Tensor], tuple[list[torch.Tensor], torch.Tensor]]

_RESERVED = ("root", "split")
_KINDS = ("image", "array")
_RAW_MAX = (1 << 16) - 1  # label files are 8- or 16-bit: raw values (and the lookup table) span 0..65535


def _check_keys(data: Mapping[str, Any], valid: Sequence[str], where: str) -> None:
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a mapping, got {data!r}")
    for key in data:
        if key not in valid:
            raise ValueError(f"{where}: unknown key '{key}'{suggest(str(key), valid)}")


def _get(
    data: Mapping[str, Any], key: str, tp: Any, default: Any, where: str = "", **constraints: Any
) -> Any:
    """``data[key]`` coerced to ``tp`` (with :func:`~equiseg.config.check_value` constraints), or
    ``default`` when the key is absent or null; errors name ``where.key``."""
    value = data.get(key)
    if value is None:
        return default
    return coerce(value, tp, f"{where}.{key}" if where else key, **constraints)


def _finite(value: float) -> str | None:
    """``png_scale``/``png_shift`` check: nan or inf would silently turn every pixel into nan."""
    return None if math.isfinite(value) else "a finite number"


def _as_patterns(value: Any, where: str) -> tuple[str, ...]:
    patterns = (value,) if isinstance(value, str) else tuple(value) if isinstance(value, Sequence) else ()
    if not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise ValueError(f"{where}: expected a path pattern or a list of them, got {value!r}")
    return patterns


@dataclasses.dataclass(frozen=True)
class ModalitySpec:
    """How to find and decode one modality.

    Attributes:
        name: modality name (the key under ``modalities``).
        paths: path patterns; the first one that exists for a sample is used.
        kind: ``image`` (8-bit file, returned as uint8) or ``array`` (any file, returned as float32).
        norm: normalisation statistics used by the transforms.
        rgb: the modality receives photometric augmentation (colour jitter, blur).
        bgr: reverse the colour channels of image files (written by OpenCV).
        png_scale: PNG/JPEG values of an ``array`` modality decode as ``raw / png_scale - png_shift``.
        png_shift: see ``png_scale``.
        lowres: the file may be smaller than the label; it is upsampled with nearest.
        channels: the modality's channel count; ``None`` (not declared): 3 unless the experiment's
            ``data.channels`` says otherwise.
    """

    name: str
    paths: tuple[str, ...]
    kind: str = "image"
    norm: NormStats | None = None
    rgb: bool = False
    bgr: bool = False
    png_scale: float = 1.0
    png_shift: float = 0.0
    lowres: bool = False
    channels: int | None = None

    _KEYS = ("path", "type", "norm", "rgb", "bgr", "png_scale", "png_shift", "lowres", "channels")

    def __post_init__(self) -> None:
        where = f"modalities.{self.name}"
        if self.kind not in _KINDS:
            raise ValueError(f"{where}: type must be one of {', '.join(_KINDS)}, got {self.kind!r}")
        if self.png_scale == 0:
            raise ValueError(f"{where}.png_scale: expected a non-zero number, got {self.png_scale!r}")
        if self.channels is not None:
            object.__setattr__(self, "channels", coerce(self.channels, int, f"{where}.channels", ge=1))
        if self.norm is None:  # 8-bit images default to /255, arrays to their raw values
            object.__setattr__(self, "norm", NormStats(scale=255.0 if self.kind == "image" else 1.0))

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any]) -> ModalitySpec:
        where = f"modalities.{name}"
        _check_keys(data, cls._KEYS, where)
        if "path" not in data:
            raise ValueError(f"{where}: missing required key 'path'")
        kw = {k: _get(data, k, bool, False, where) for k in ("rgb", "bgr", "lowres")}
        kw["png_scale"] = _get(data, "png_scale", float, 1.0, where, check=_finite)
        kw["png_shift"] = _get(data, "png_shift", float, 0.0, where, check=_finite)
        kw["channels"] = _get(data, "channels", int, None, where, ge=1)
        norm = NormStats.coerce(data["norm"], f"{where}.norm") if "norm" in data else None
        kind = _get(data, "type", str, "image", where)
        return cls(name, _as_patterns(data["path"], f"{where}.path"), kind, norm, **kw)


@dataclasses.dataclass(frozen=True)
class LabelSpec:
    """How to find and decode the label.

    Attributes:
        paths: path patterns; the first one that exists is used.
        channel: channel read from multi-channel label images.
        offset: raw value ``r`` becomes class ``r + offset`` when that lies in ``0..C-1``.
        ignore_values: raw values that become ``ignore_index``.
        mapping: explicit ``raw -> class`` (or ``raw -> ignore_index``) entries, overriding the rest.
    """

    paths: tuple[str, ...]
    channel: int = 0
    offset: int = 0
    ignore_values: tuple[int, ...] = (IGNORE_INDEX,)
    mapping: Mapping[int, int] = dataclasses.field(default_factory=dict)

    _KEYS = ("path", "channel", "offset", "ignore_values", "mapping")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelSpec:
        _check_keys(data, cls._KEYS, "label")
        if "path" not in data:
            raise ValueError("label: missing required key 'path'")
        raw = data.get("mapping") or {}
        if not isinstance(raw, Mapping):
            raise ValueError(f"label.mapping: expected a mapping of raw value -> class, got {raw!r}")
        mapping = {}
        for k, v in raw.items():  # raw value (a file's 8/16-bit value) -> class; classes checked later
            where = f"label.mapping[{k!r}]"
            mapping[coerce(k, int, where, ge=0, le=_RAW_MAX)] = coerce(v, int, where)
        return cls(
            _as_patterns(data["path"], "label.path"),
            _get(data, "channel", int, 0, "label", ge=0),
            _get(data, "offset", int, 0, "label"),
            _get(data, "ignore_values", tuple[int, ...], (IGNORE_INDEX,), "label", ge=0, le=_RAW_MAX),
            mapping,
        )

    def lookup_table(self, num_classes: int, ignore_index: int) -> np.ndarray:
        """(65536,) int16 table raw -> class, ``ignore_index``, or -1 for values that are errors."""
        lut = np.full(1 << 16, -1, np.int16)
        lo, hi = max(0, -self.offset), min(1 << 16, num_classes - self.offset)
        if hi > lo:
            lut[lo:hi] = np.arange(lo, hi) + self.offset
        for raw in self.ignore_values:
            lut[raw] = ignore_index
        for raw, cls in self.mapping.items():
            if not (0 <= cls < num_classes or cls == ignore_index):
                raise ValueError(
                    f"label.mapping: {raw} -> {cls} is neither a class (0..{num_classes - 1}) "
                    f"nor ignore_index {ignore_index}"
                )
            lut[raw] = cls
        return lut

    def describe(self, num_classes: int, ignore_index: int) -> str:
        """Human-readable list of valid raw values, for error messages."""
        lo, hi = max(0, -self.offset), num_classes - self.offset - 1
        parts = [f"{lo}..{hi} (classes {lo + self.offset}..{hi + self.offset})"] if hi >= lo else []
        if self.ignore_values:
            parts.append(f"{', '.join(map(str, self.ignore_values))} (ignored as {ignore_index})")
        if self.mapping:
            parts.append(f"mapped values {sorted(self.mapping)}")
        return "; ".join(parts)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A whole data set description (see the module docstring for the YAML form)."""

    modalities: dict[str, ModalitySpec]
    classes: tuple[str, ...]
    label: LabelSpec | None = None
    palette: tuple[tuple[int, ...], ...] | None = None
    ignore_index: int = IGNORE_INDEX
    samples: str | None = None
    cases: tuple[str, ...] = ()
    case_fields: tuple[str, ...] = ()
    root: str | None = None
    split: str | None = None
    name: str = "folder"

    _KEYS = (
        "name",
        "root",
        "split",
        "classes",
        "palette",
        "ignore_index",
        "samples",
        "modalities",
        "label",
        "cases",
        "case_fields",
    )

    def __post_init__(self) -> None:
        if not self.modalities:
            raise ValueError("spec: 'modalities' must name at least one modality")
        if not self.classes:
            raise ValueError("spec: 'classes' must list at least one class name")
        palette = self.palette if self.palette is not None else default_palette(len(self.classes))
        object.__setattr__(self, "palette", check_palette(palette, len(self.classes), "spec"))
        object.__setattr__(self, "cases", tuple(c.lower() for c in self.cases))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base_dir: str | None = None) -> DatasetSpec:
        """Build from a plain mapping (a parsed YAML file); ``base_dir`` is the default root."""
        _check_keys(data, cls._KEYS, "spec")
        mods = data.get("modalities")
        if not isinstance(mods, Mapping) or not mods:
            raise ValueError("spec: 'modalities' must be a mapping of modality name -> settings")
        names = tuple[str, ...]
        return cls(
            modalities={str(n): ModalitySpec.from_dict(str(n), m or {}) for n, m in mods.items()},
            classes=_get(data, "classes", names, ()),
            label=LabelSpec.from_dict(data["label"]) if data.get("label") is not None else None,
            palette=_get(data, "palette", tuple[tuple[int, ...], ...], None),
            # the label lookup table is int16 and marks invalid raw values with -1
            ignore_index=_get(data, "ignore_index", int, IGNORE_INDEX, ge=0, le=(1 << 15) - 1),
            samples=_get(data, "samples", str, None),
            cases=_get(data, "cases", names, ()),
            case_fields=_get(data, "case_fields", names, ()),
            root=_get(data, "root", str, base_dir),
            split=_get(data, "split", str, None),
            name=_get(data, "name", str, "folder"),
        )

    @classmethod
    def load(cls, spec: DatasetSpec | Mapping[str, Any] | str | os.PathLike) -> DatasetSpec:
        """Accept a spec, a mapping, or the path of a YAML file.

        Raises:
            FileNotFoundError: the file does not exist.
            ValueError: a malformed file (one line naming the file, with line and column for a YAML
                syntax error) or a bad value in it (the file, then the dotted key and what was expected).
        """
        if isinstance(spec, DatasetSpec):
            return spec
        if isinstance(spec, Mapping):
            return cls.from_dict(spec)
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"data set spec {path} does not exist")
        data = load_yaml(path)  # its errors already start with the path
        try:
            return cls.from_dict(data, base_dir=str(path.parent))
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None


class _Pattern:
    """A path pattern with ``{fields}``: glob for discovery, regex to read the fields back, format."""

    def __init__(self, pattern: str, where: str):
        pattern = pattern.replace(os.sep, "/")
        if not pattern.startswith(("{root}", "/")) and not re.match(r"^[A-Za-z]:/", pattern):
            pattern = "{root}/" + pattern
        self.text, self.where = pattern, where
        self.parts: list[tuple[str, str | None]] = []
        try:
            for literal, field, spec, conv in string.Formatter().parse(pattern):
                if spec or conv:
                    raise ValueError(f"{where}: format specs are not supported in '{{{field}}}'")
                if field is not None and not field.isidentifier():
                    raise ValueError(f"{where}: field names must be identifiers, got '{{{field}}}'")
                self.parts.append((literal, field))
        except ValueError as e:
            if where in str(e):
                raise
            raise ValueError(f"{where}: malformed pattern {pattern!r} ({e})") from None
        self.fields = {f for _, f in self.parts if f is not None} - set(_RESERVED)

    def glob_and_regex(self, root: str, split: str | None) -> tuple[str, re.Pattern[str]]:
        fixed = {"root": root.replace(os.sep, "/").rstrip("/"), "split": split}
        globs, regex, seen = [], [], set()
        for literal, field in self.parts:
            globs.append(glob.escape(literal))
            regex.append(re.escape(literal))
            if field is None:
                continue
            if field in fixed:
                if fixed[field] is None:
                    raise ValueError(f"{self.where}: the pattern uses {{split}} but no split was given")
                globs.append(glob.escape(fixed[field]))
                regex.append(re.escape(fixed[field]))
            elif field in seen:
                globs.append("*")
                regex.append(f"(?P={field})")
            else:
                seen.add(field)
                globs.append("*")
                regex.append(f"(?P<{field}>[^/]*)")
        return "".join(globs), re.compile("".join(regex))

    def format(self, fields: Mapping[str, str]) -> Path:
        return Path("".join(lit + (fields[f] if f is not None else "") for lit, f in self.parts))


@dataclasses.dataclass(frozen=True)
class _Sample:
    fields: dict[str, str]
    cases: tuple[str, ...]


class FolderDataset(Dataset):
    """Multimodal segmentation samples found on disk by path patterns (see the module docstring).

    Args:
        spec: a :class:`DatasetSpec`, a mapping, or the path of a YAML file.
        root: data root (overrides the spec's ``root``).
        split: split name filling ``{split}`` (overrides the spec's ``split``).
        transform: callable ``(inputs, label) -> (inputs, label)`` applied in ``__getitem__``.
        modalities: subset and order of the spec's modalities to load (default: all, spec order).
        case: keep only samples of this case (one of the spec's ``cases``).
        verify: check up front that every file of every sample exists (otherwise only the first
            sample is checked up front, the others when loaded).
        labels: read labels; ``False`` returns an all-``ignore_index`` label (e.g. withheld test GT).
        channels: the experiment's ``data.channels`` (``{modality: count}``, 3 for a modality it does
            not name), which then decides each modality's channel count and must agree with the
            spec's ``channels`` where the spec declares one; ``None``: the spec's (3 where undeclared).

    Attributes:
        classes, palette, ignore_index, modalities, channels (per loaded modality), norm_stats,
        rgb_modalities, samples, cases, report_cases (the cases per-case evaluation reports; see
        :meth:`set_report_cases`).

    Raises:
        FileNotFoundError: no samples for the split, or (``verify``) missing files.
        ValueError: malformed spec, unknown modality or case, a channel count the spec contradicts,
            or normalisation / augmentation that does not fit a modality's channels.
    """

    def __init__(
        self,
        spec: DatasetSpec | Mapping[str, Any] | str | os.PathLike,
        root: str | os.PathLike | None = None,
        split: str | None = None,
        transform: Transform | None = None,
        *,
        modalities: Sequence[str] | None = None,
        case: str | None = None,
        verify: bool = False,
        labels: bool = True,
        channels: Mapping[str, int] | None = None,
    ):
        self.spec = DatasetSpec.load(spec)
        root = root if root is not None else self.spec.root
        if root is None:
            raise ValueError(f"{self.spec.name}: no data root given (pass root= or set 'root' in the spec)")
        self.root = Path(root)
        self.split = split if split is not None else self.spec.split
        self.transform = transform
        self.with_labels = labels and self.spec.label is not None
        self.modalities = self._select_modalities(modalities)
        self._mods = [self.spec.modalities[m] for m in self.modalities]
        self.channels = self._resolve_channels(channels)
        self._norm = {
            m.name: m.norm.for_channels(self.channels[m.name], f"modalities.{m.name}.norm")
            for m in self._mods
        }
        self._lut = (
            self.spec.label.lookup_table(len(self.classes), self.ignore_index) if self.spec.label else None
        )
        self._alt_hint: dict[str, int] = {}

        index = _Pattern(self.spec.samples or next(iter(self.spec.modalities.values())).paths[0], "samples")
        self._patterns = {
            m.name: [_Pattern(p, f"modalities.{m.name}.path") for p in m.paths] for m in self._mods
        }
        if self.with_labels:
            self._patterns["label"] = [_Pattern(p, "label.path") for p in self.spec.label.paths]
        for pats in self._patterns.values():
            for p in pats:
                missing = p.fields - index.fields
                if missing:
                    raise ValueError(
                        f"{p.where}: pattern {p.text!r} uses field(s) {sorted(missing)} "
                        f"that the samples pattern {index.text!r} does not define"
                    )
        for f in self.spec.case_fields:
            if f not in index.fields:
                raise ValueError(f"case_fields: '{f}' is not a field of the samples pattern {index.text!r}")

        self.samples = self._discover(index)
        if case is not None:
            self.samples = self._filter_case(case)
        self.case = case
        self.report_cases: tuple[str, ...] | None = None
        self._check_first_sample()
        if verify:
            self.verify()

    # ----------------------------------------------------------------------------------- metadata
    @property
    def classes(self) -> tuple[str, ...]:
        """Class names, index = class id."""
        return self.spec.classes

    @property
    def num_classes(self) -> int:
        return len(self.spec.classes)

    @property
    def palette(self) -> tuple[tuple[int, ...], ...]:
        """One RGB colour per class."""
        return self.spec.palette

    @property
    def ignore_index(self) -> int:
        return self.spec.ignore_index

    @property
    def norm_stats(self) -> dict[str, NormStats]:
        """Per loaded modality: ``(x / scale - mean) / std`` statistics (see :class:`NormStats`), one
        value per channel of the modality."""
        return dict(self._norm)

    @property
    def rgb_modalities(self) -> tuple[str, ...]:
        """Loaded modalities that receive photometric augmentation."""
        return tuple(m.name for m in self._mods if m.rgb)

    @property
    def cases(self) -> list[tuple[str, ...]]:
        """Each sample's cases (known case names found in its ``case_fields``)."""
        return [s.cases for s in self.samples]

    def case_of(self, index: int) -> tuple[str, ...]:
        """The cases of sample ``index`` (e.g. ``("rain",)`` or ``("fog", "night")``)."""
        return self.samples[index].cases

    def set_report_cases(self, cases: Sequence[str] | None, key: str = "data.cases") -> None:
        """Which cases the per-case evaluation tables report, in this order (:attr:`report_cases`;
        ``None``: every case the spec defines). The samples are not filtered: every sample still counts
        in the overall numbers (``case=`` restricts the samples).

        Raises:
            ValueError: naming ``key``: the data set defines no cases, the list is empty, or a name is
                not one of the spec's cases.
        """
        from equiseg.utils import check_names

        if cases is None:
            self.report_cases = None
            return
        if not self.spec.cases:
            raise ValueError(f"{key}: the {self.spec.name} data set defines no cases, got {list(cases)}")
        names = [c.lower() if isinstance(c, str) else c for c in cases]
        self.report_cases = tuple(
            check_names(names, self.spec.cases, what=f"{self.spec.name} case", where=key)
        )

    @property
    def files(self) -> list[dict[str, Path]]:
        """Per sample: ``{modality: path, ..., "label": path}`` (alternatives resolved on disk)."""
        return [self.paths(i) for i in range(len(self))]

    def paths(self, index: int) -> dict[str, Path]:
        """The files of sample ``index``; raises :class:`FileNotFoundError` if one is missing."""
        return {name: self._resolve(name, self.samples[index]) for name in self._patterns}

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        case = f", case={self.case!r}" if self.case else ""
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
            f"modalities={self.modalities}{case}, samples={len(self)})"
        )

    # ---------------------------------------------------------------------------------- discovery
    def _select_modalities(self, modalities: Sequence[str] | None) -> tuple[str, ...]:
        valid = tuple(self.spec.modalities)
        if modalities is None:
            return valid
        if isinstance(modalities, str):
            modalities = (modalities,)
        modalities = tuple(modalities)
        if not modalities:
            raise ValueError(f"{self.spec.name}: at least one modality is needed; valid: {', '.join(valid)}")
        for m in modalities:
            if m not in valid:
                raise ValueError(
                    f"{self.spec.name}: unknown modality {m!r}; valid modalities: {', '.join(valid)}"
                )
        if len(set(modalities)) != len(modalities):
            raise ValueError(f"{self.spec.name}: modality listed twice in {modalities}")
        return modalities

    def _resolve_channels(self, channels: Mapping[str, int] | None) -> dict[str, int]:
        """Each loaded modality's channel count (see the ``channels`` argument), checked against the
        spec's declared counts and against photometric augmentation, which needs 3 (RGB) channels."""
        out = {}
        for m in self._mods:
            declared = m.channels
            if channels is None:
                count = declared if declared is not None else DEFAULT_CHANNELS
            else:
                count = channels.get(m.name, DEFAULT_CHANNELS)
                if declared is not None and declared != count:
                    said = f"{count}" if m.name in channels else f"not set ({count})"
                    raise ValueError(
                        f"data.channels.{m.name}: is {said} but the {self.spec.name} spec declares "
                        f"modalities.{m.name}.channels: {declared}; set data.channels.{m.name}: {declared}"
                    )
            if m.rgb and count != DEFAULT_CHANNELS:
                raise ValueError(
                    f"modalities.{m.name}.rgb: colour jitter and blur need 3 (RGB) channels, but "
                    f"'{m.name}' has {count}; set rgb: false for it"
                )
            out[m.name] = count
        return out

    def _discover(self, index: _Pattern) -> list[_Sample]:
        pattern, regex = index.glob_and_regex(str(self.root), self.split)
        samples = []
        for path in sorted(glob.glob(pattern)):
            m = regex.fullmatch(path.replace(os.sep, "/"))
            if m is None:
                continue
            fields = m.groupdict()
            samples.append(_Sample(fields, self._cases_from_fields(fields)))
        if not samples:
            split = f"split '{self.split}'" if self.split is not None else "this data set"
            raise FileNotFoundError(
                f"{self.spec.name}: no samples found for {split} under {self.root}: "
                f"no file matches {pattern!r}"
            )
        return samples

    def _cases_from_fields(self, fields: Mapping[str, str]) -> tuple[str, ...]:
        if not self.spec.cases:
            return ()
        tokens = set()
        for f in self.spec.case_fields:
            value = fields[f].lower()
            tokens.add(value)
            tokens.update(value.split("_"))
        return tuple(c for c in self.spec.cases if c in tokens)

    def _filter_case(self, case: str) -> list[_Sample]:
        if not self.spec.cases:
            raise ValueError(f"{self.spec.name}: case={case!r} given but this data set defines no cases")
        if not isinstance(case, str) or case.lower() not in self.spec.cases:
            raise ValueError(
                f"{self.spec.name}: unknown case {case!r}; valid cases: {', '.join(self.spec.cases)}"
            )
        kept = [s for s in self.samples if case.lower() in s.cases]
        if not kept:
            raise FileNotFoundError(
                f"{self.spec.name}: no samples of case '{case}' in split '{self.split}' "
                f"under {self.root} ({len(self.samples)} samples of other cases)"
            )
        return kept

    def _fields(self, sample: _Sample) -> dict[str, str]:
        return {
            **sample.fields,
            "root": str(self.root).replace(os.sep, "/").rstrip("/"),
            "split": self.split or "",
        }

    def _resolve(self, name: str, sample: _Sample) -> Path:
        patterns = self._patterns[name]
        fields = self._fields(sample)
        if len(patterns) == 1:
            return patterns[0].format(fields)
        hint = self._alt_hint.get(name, 0)  # data sets use one encoding throughout: try the last hit first
        order = [hint] + [i for i in range(len(patterns)) if i != hint]
        for i in order:
            path = patterns[i].format(fields)
            if path.is_file():
                self._alt_hint[name] = i
                return path
        tried = ", ".join(str(p.format(fields)) for p in patterns)
        raise FileNotFoundError(
            f"missing '{name}' file for sample {self._sample_name(sample)}: none of {tried} exists"
        )

    def _sample_name(self, sample: _Sample) -> str:
        return "/".join(sample.fields.values())

    def _missing_files(self, sample: _Sample) -> list[str]:
        missing = []
        for name in self._patterns:
            try:
                path = self._resolve(name, sample)
            except FileNotFoundError as e:
                missing.append(str(e))
                continue
            if not path.is_file():
                missing.append(f"missing '{name}' file {path}")
        return missing

    def _check_first_sample(self) -> None:
        missing = self._missing_files(self.samples[0])
        if missing:
            raise FileNotFoundError(f"{self.spec.name}: {missing[0]}")

    def verify(self) -> None:
        """Check that every file of every sample exists.

        Raises:
            FileNotFoundError: naming the number of incomplete samples and up to five missing files.
        """
        problems = [m for s in self.samples for m in self._missing_files(s)]
        if problems:
            shown = "\n  ".join(problems[:5])
            more = f"\n  ... and {len(problems) - 5} more" if len(problems) > 5 else ""
            raise FileNotFoundError(
                f"{self.spec.name}: {len(problems)} missing file(s) in split "
                f"'{self.split}' under {self.root}:\n  {shown}{more}"
            )

    # ------------------------------------------------------------------------------------ loading
    def load_modality(self, spec: ModalitySpec, path: Path) -> torch.Tensor:
        """Decode one modality file to a C×H×W tensor (C = its :attr:`channels`; uint8 for images,
        float32 for arrays).

        Raises:
            ValueError: an unreadable file, a wrong dtype, or NaN/Inf values (naming the file).
        """
        if not path.is_file():
            raise FileNotFoundError(f"missing '{spec.name}' file {path}")
        array = read_image(path)
        check_finite(array, path, spec.name)
        is_image_file = path.suffix.lower() in IMAGE_EXTENSIONS
        if spec.bgr and is_image_file and array.ndim == 3 and array.shape[2] >= 3:
            array = array[..., [2, 1, 0] + list(range(3, array.shape[2]))]
        array = to_channels(array, self.channels.get(spec.name, DEFAULT_CHANNELS), str(path))
        if spec.kind == "image":
            if array.dtype != np.uint8:
                raise ValueError(
                    f"{path}: modality '{spec.name}' expects an 8-bit image, got {array.dtype} "
                    "data (declare the modality as type: array to read it as float)"
                )
            return to_chw_tensor(array)
        out = array.astype(np.float32)
        if is_image_file and (spec.png_scale != 1.0 or spec.png_shift != 0.0):
            out = out / np.float32(spec.png_scale) - np.float32(spec.png_shift)
        return to_chw_tensor(out)

    def load_label(self, path: Path) -> torch.Tensor:
        """Decode a label file to an int64 H×W tensor of class ids and ``ignore_index``.

        Raises:
            ValueError: a raw value outside the declared ones (naming the file and the values).
        """
        label_spec = self.spec.label
        raw = read_image(path, as_label=True)
        if raw.ndim == 3:
            if label_spec.channel >= raw.shape[2]:
                raise ValueError(
                    f"{path}: label channel {label_spec.channel} requested, "
                    f"the file has {raw.shape[2]} channel(s)"
                )
            raw = raw[..., label_spec.channel]
        if raw.ndim != 2:
            raise ValueError(f"{path}: expected an H×W label image, got shape {raw.shape}")
        if raw.dtype.kind not in "ui":
            raise ValueError(f"{path}: expected integer label values, got dtype {raw.dtype}")
        if raw.dtype not in (np.uint8, np.uint16):
            lo, hi = int(raw.min()), int(raw.max())
            if lo < 0 or hi >= self._lut.size:
                bad = lo if lo < 0 else hi
                raise ValueError(
                    f"{path}: raw label value {bad} out of range; expected "
                    f"{label_spec.describe(self.num_classes, self.ignore_index)}"
                )
        out = self._lut[raw]
        bad = out < 0
        if bad.any():
            values = np.unique(raw[bad])
            shown = ", ".join(str(int(v)) for v in values[:10]) + (" ..." if values.size > 10 else "")
            raise ValueError(
                f"{path}: raw label value(s) {shown} outside the expected values: "
                f"{label_spec.describe(self.num_classes, self.ignore_index)}"
            )
        return torch.from_numpy(out.astype(np.int64))

    def load(self, index: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Sample ``index`` decoded, sizes checked, low-res modalities upsampled; no transform.

        Returns:
            inputs: list of C×H×W tensors in the order of :attr:`modalities`.
            label: int64 H×W.
        """
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        sample = self.samples[index]
        paths = [self._resolve(m.name, sample) for m in self._mods]
        inputs = [self.load_modality(m, p) for m, p in zip(self._mods, paths, strict=True)]
        label = None
        if self.with_labels:
            label_path = self._resolve("label", sample)
            if not label_path.is_file():
                raise FileNotFoundError(f"missing 'label' file {label_path}")
            label = self.load_label(label_path)
            ref_size, ref_name = tuple(label.shape), f"the label {label_path}"
        else:
            ref = next((i for i, m in enumerate(self._mods) if not m.lowres), 0)
            ref_size, ref_name = tuple(inputs[ref].shape[1:]), f"{paths[ref]}"
        for i, (m, p) in enumerate(zip(self._mods, paths, strict=True)):
            size = tuple(inputs[i].shape[1:])
            if size == ref_size:
                continue
            if m.lowres and size[0] <= ref_size[0] and size[1] <= ref_size[1]:
                inputs[i] = _upsample_nearest(inputs[i], ref_size)
                continue
            allowed = " (may be smaller, not larger)" if m.lowres else ""
            raise ValueError(
                f"{p}: modality '{m.name}' is {size[0]}×{size[1]} (H×W) but {ref_name} is "
                f"{ref_size[0]}×{ref_size[1]}; sizes must match{allowed}"
            )
        if label is None:
            label = torch.full(ref_size, self.ignore_index, dtype=torch.int64)
        return inputs, label

    def __getitem__(self, index: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        inputs, label = self.load(index)
        if self.transform is not None:
            inputs, label = self.transform(inputs, label)
        return inputs, label


def _upsample_nearest(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest upsampling of a C×h×w tensor of any dtype to ``size`` (source index ``⌊i·h/H⌋``).

    This is ``F.interpolate(mode="nearest")``'s rule (what torchvision's NEAREST resize used by the
    DeLiVER reference does), in exact integer arithmetic.
    """
    h, w = x.shape[1:]
    rows = torch.arange(size[0]) * h // size[0]
    cols = torch.arange(size[1]) * w // size[1]
    return x.index_select(1, rows).index_select(2, cols)
