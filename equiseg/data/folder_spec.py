"""The YAML spec of a folder data set: :class:`DatasetSpec`, :class:`ModalitySpec`, :class:`LabelSpec`,
and the path patterns they name (:class:`_Pattern`). :class:`~equiseg.data.folder.FolderDataset` finds
and loads the files a spec describes.

A spec names, per modality, a path *pattern* whose ``{fields}`` identify a sample; the samples are the
files matching the ``samples`` pattern (by default the first modality's), and every other path is that
pattern with the same fields filled in. ``{root}`` and ``{split}`` are reserved fields; relative
patterns are taken relative to the root.

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

Values are parsed by the experiment config's typed machinery (:func:`equiseg.schema.coerce`), so a
bad one is an error naming its dotted key and what was expected (``modalities.rgb.bgr: expected
true/false, got 'flase'``), prefixed with the spec file when the spec came from one.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from equiseg.data.constants import IGNORE_INDEX, NormStats, check_palette, default_palette
from equiseg.schema import check_keys, check_value, coerce, finite, get_typed, load_yaml

__all__ = ["DatasetSpec", "ModalitySpec", "LabelSpec"]

_RESERVED = ("root", "split")
_KINDS = ("image", "array")
_RAW_MAX = (1 << 16) - 1  # label files are 8- or 16-bit: raw values (and the lookup table) span 0..65535


def _scale_form(value: float) -> str | None:
    """``png_scale`` check: finite (nan or inf would turn every pixel into nan) and not 0 (a division)."""
    return finite(value) or (None if value != 0 else "a non-zero number")


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
        check_value(self.png_scale, f"{where}.png_scale", check=_scale_form)
        check_value(self.png_shift, f"{where}.png_shift", check=finite)
        if self.channels is not None:
            object.__setattr__(self, "channels", coerce(self.channels, int, f"{where}.channels", ge=1))
        if self.norm is None:  # 8-bit images default to /255, arrays to their raw values
            object.__setattr__(self, "norm", NormStats(scale=255.0 if self.kind == "image" else 1.0))

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any]) -> ModalitySpec:
        where = f"modalities.{name}"
        check_keys(data, cls._KEYS, where)
        if "path" not in data:
            raise ValueError(f"{where}: missing required key 'path'")
        kw = {k: get_typed(data, k, bool, False, where) for k in ("rgb", "bgr", "lowres")}
        kw["png_scale"] = get_typed(data, "png_scale", float, 1.0, where)
        kw["png_shift"] = get_typed(data, "png_shift", float, 0.0, where)
        kw["channels"] = data.get("channels")  # checked (an integer >= 1) with the rest, on construction
        norm = NormStats.coerce(data["norm"], f"{where}.norm") if "norm" in data else None
        kind = get_typed(data, "type", str, "image", where)
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
        check_keys(data, cls._KEYS, "label")
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
            get_typed(data, "channel", int, 0, "label", ge=0),
            get_typed(data, "offset", int, 0, "label"),
            get_typed(data, "ignore_values", tuple[int, ...], (IGNORE_INDEX,), "label", ge=0, le=_RAW_MAX),
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
        check_keys(data, cls._KEYS, "spec")
        mods = data.get("modalities")
        if not isinstance(mods, Mapping) or not mods:
            raise ValueError("spec: 'modalities' must be a mapping of modality name -> settings")
        names = tuple[str, ...]
        return cls(
            modalities={str(n): ModalitySpec.from_dict(str(n), m or {}) for n, m in mods.items()},
            classes=get_typed(data, "classes", names, ()),
            label=LabelSpec.from_dict(data["label"]) if data.get("label") is not None else None,
            palette=get_typed(data, "palette", tuple[tuple[int, ...], ...], None),
            # the label lookup table is int16 and marks invalid raw values with -1
            ignore_index=get_typed(data, "ignore_index", int, IGNORE_INDEX, ge=0, le=(1 << 15) - 1),
            samples=get_typed(data, "samples", str, None),
            cases=get_typed(data, "cases", names, ()),
            case_fields=get_typed(data, "case_fields", names, ()),
            root=get_typed(data, "root", str, base_dir),
            split=get_typed(data, "split", str, None),
            name=get_typed(data, "name", str, "folder"),
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
