"""A multimodal segmentation data set described by a YAML file or dict: :class:`FolderDataset`.

The engine behind :class:`~equiseg.data.DeLiVER` and :class:`~equiseg.data.MUSES` (docs/design.md §4) and the
way to add a new data set without Python. A spec names, per modality, a path *pattern* whose
``{fields}`` identify a sample; the samples are the files matching the ``samples`` pattern (by
default the first modality's), and every other path is that pattern with the same fields filled in.
``{root}`` and ``{split}`` are reserved fields; relative patterns are taken relative to the root.

The spec's YAML form (modalities, label, classes, cases; channels and normalisation) is described in
:mod:`equiseg.data.folder_spec`, with the classes that parse it (importable from here too).

``dataset[i]`` returns ``(inputs, label)``: a list of ``C×H×W`` tensors in the order of the
modalities (C = the modality's channels; uint8 for ``type: image``, float32 for ``type: array``) and an
int64 ``H×W`` label, or the output of ``transform(inputs, label)``.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from equiseg.data.constants import NormStats
from equiseg.data.folder_spec import DatasetSpec, LabelSpec, ModalitySpec, _Pattern
from equiseg.data.io import IMAGE_EXTENSIONS, check_finite, read_image, to_channels, to_chw_tensor
from equiseg.utils import DEFAULT_CHANNELS

__all__ = ["FolderDataset", "DatasetSpec", "ModalitySpec", "LabelSpec", "Transform"]

Transform = Callable[[list[torch.Tensor], torch.Tensor], tuple[list[torch.Tensor], torch.Tensor]]


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
