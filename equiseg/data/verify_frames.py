"""The checks of one frame and one split for ``equiseg data verify``: every file of a frame decoded
with the loaders' reader (missing, undecodable, non-finite, size, label values), the files of frames
whose sample-defining file is gone, and the splits a folder data set has on disk."""

from __future__ import annotations

import dataclasses
import glob
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from equiseg.data.folder import FolderDataset, _Sample
from equiseg.data.folder_spec import DatasetSpec, _Pattern
from equiseg.data.io import read_image
from equiseg.data.verify_report import Problem


class _Walker(FolderDataset):
    """A :class:`FolderDataset` that finds frames without insisting that the first one is complete:
    the verifier reports a missing file of frame 0 like any other."""

    def _check_first_sample(self) -> None:
        pass


def _group_function(layout: str, spec: DatasetSpec) -> Callable[[Mapping[str, str], tuple[str, ...]], str]:
    """How a frame's fields name its condition row."""
    if layout == "deliver":
        return lambda fields, cases: fields.get("condition", "-")
    if layout == "muses":
        return lambda fields, cases: f"{fields.get('condition', '-')}/{fields.get('time', '-')}"
    if spec.cases:
        return lambda fields, cases: "+".join(cases) if cases else "(none)"
    return lambda fields, cases: "-"


@dataclasses.dataclass
class _FrameResult:
    group: str
    problems: list[Problem]


def _nonfinite(array: np.ndarray) -> int:
    if array.dtype.kind not in "fc":
        return 0
    with np.errstate(over="ignore"):
        finite = np.isfinite(array.astype(np.float32, copy=False) if array.dtype.kind == "f" else array)
    return int(finite.size - np.count_nonzero(finite))


class _SplitChecker:
    """Checks the frames of one split (one instance per split; :meth:`check` is called from threads)."""

    def __init__(self, ds: _Walker, split: str, group: Callable, with_labels: bool):
        self.ds, self.split, self.group, self.with_labels = ds, split, group, with_labels
        self.mods = [ds.spec.modalities[m] for m in ds.modalities]
        spec = ds.spec
        self.lut = spec.label.lookup_table(len(spec.classes), spec.ignore_index) if with_labels else None

    def check(self, sample: _Sample) -> _FrameResult:
        ds, split = self.ds, self.split
        group = self.group(sample.fields, sample.cases)
        problems: list[Problem] = []

        def add(kind: str, message: str, file: Path | None, modality: str) -> None:
            problems.append(Problem(kind, split, message, str(file) if file else None, group, modality))

        names = [m.name for m in self.mods] + (["label"] if self.with_labels else [])
        paths: dict[str, Path] = {}
        for name in names:
            try:
                path = ds._resolve(name, sample)
            except FileNotFoundError as e:  # several alternatives, none there: the message lists them
                add("missing", str(e), None, name)
                continue
            if path.is_file():
                paths[name] = path
            else:
                add(
                    "missing", f"{path}: missing '{name}' file of frame {ds._sample_name(sample)}", path, name
                )

        sizes: dict[str, tuple[int, int]] = {}
        for m in self.mods:
            path = paths.get(m.name)
            if path is None:
                continue
            try:
                array = read_image(path)
            except (ValueError, OSError) as e:
                add("decode", _line(e, path), path, m.name)
                continue
            if array.ndim not in (2, 3) or 0 in array.shape[:2]:
                add(
                    "decode", f"{path}: expected an H×W or H×W×C array, got shape {array.shape}", path, m.name
                )
                continue
            if m.kind == "image" and array.dtype != np.uint8:
                add(
                    "decode",
                    f"{path}: modality '{m.name}' expects an 8-bit image, got {array.dtype}",
                    path,
                    m.name,
                )
                continue
            bad = _nonfinite(array)
            if bad:
                add(
                    "nonfinite",
                    f"{path}: modality '{m.name}' has {bad} non-finite value(s) (NaN/Inf) among {array.size}",
                    path,
                    m.name,
                )
            sizes[m.name] = tuple(array.shape[:2])

        ref: tuple[tuple[int, int], Path] | None = None
        label_path = paths.get("label")
        if label_path is not None:
            size = self._check_label(label_path, add)
            if size is not None:
                ref = (size, label_path)
        if ref is None:  # no usable label: compare the modalities with the first full-size one
            first = next((m for m in self.mods if m.name in sizes and not m.lowres), None)
            if first is not None:
                ref = (sizes[first.name], paths[first.name])
        if ref is not None:
            (H, W), ref_path = ref
            for m in self.mods:
                if m.name not in sizes or paths[m.name] == ref_path:
                    continue
                h, w = sizes[m.name]
                if (h, w) == (H, W) or (m.lowres and h <= H and w <= W):
                    continue
                allowed = " (it may be smaller, not larger)" if m.lowres else ""
                add(
                    "size",
                    f"{paths[m.name]}: modality '{m.name}' is {h}×{w} (H×W) but {ref_path} is {H}×{W}{allowed}",
                    paths[m.name],
                    m.name,
                )
        return _FrameResult(group, problems)

    def _check_label(self, path: Path, add: Callable) -> tuple[int, int] | None:
        """Decode a label and check its values; its H×W, or None when it cannot be read."""
        spec = self.ds.spec
        try:
            raw = read_image(path, as_label=True)
        except (ValueError, OSError) as e:
            add("decode", _line(e, path), path, "label")
            return None
        if raw.ndim == 3:
            if spec.label.channel >= raw.shape[2]:
                msg = f"{path}: label channel {spec.label.channel} asked, the file has {raw.shape[2]}"
                add("label", msg, path, "label")
                return None
            raw = raw[..., spec.label.channel]
        if raw.ndim != 2 or raw.dtype.kind not in "ui":
            msg = f"{path}: expected an H×W integer label, got shape {raw.shape} dtype {raw.dtype}"
            add("label", msg, path, "label")
            return None
        values = np.unique(raw)
        outside = values[(values < 0) | (values >= self.lut.size)]
        inside = values[(values >= 0) & (values < self.lut.size)]
        bad = np.concatenate([outside, inside[self.lut[inside.astype(np.int64)] < 0]])
        if bad.size:
            shown = ", ".join(str(int(v)) for v in np.sort(bad)[:10]) + (" ..." if bad.size > 10 else "")
            add(
                "label",
                f"{path}: raw label value(s) {shown} outside the expected values: "
                f"{spec.label.describe(len(spec.classes), spec.ignore_index)}",
                path,
                "label",
            )
        return tuple(raw.shape)


def _line(exc: BaseException, path: Path) -> str:
    text = " ".join(str(exc).split())
    return text if str(path) in text else f"{path}: {text}"


def _orphans(ds: _Walker, split: str, group: Callable, with_labels: bool) -> list[Problem]:
    """Files of frames whose sample-defining file is missing (e.g. a label and a LiDAR image with no
    RGB image): one problem per such frame, naming the missing file and the ones that exist."""
    samples_text = ds.spec.samples or next(iter(ds.spec.modalities.values())).paths[0]
    index = _Pattern(samples_text, "samples")
    owner = next((m.name for m in ds.spec.modalities.values() if samples_text in m.paths), "samples")
    keys = sorted(index.fields)
    known = {tuple(s.fields[k] for k in keys) for s in ds.samples}
    found: dict[tuple[str, ...], tuple[dict[str, str], list[str]]] = {}
    names = list(ds.modalities) + (["label"] if with_labels else [])
    for name in names:
        for pattern in ds._patterns[name]:
            if pattern.fields != index.fields or pattern.text == index.text:
                continue
            gl, regex = pattern.glob_and_regex(str(ds.root), ds.split)
            for path in glob.glob(gl):
                m = regex.fullmatch(path.replace(os.sep, "/"))
                if m is None:
                    continue
                fields = m.groupdict()
                key = tuple(fields[k] for k in keys)
                if key not in known:
                    found.setdefault(key, (fields, []))[1].append(path)
    problems = []
    for key in sorted(found):
        fields, files = found[key]
        sample = _Sample(dict(fields), ds._cases_from_fields(fields))
        expected = index.format(ds._fields(sample))
        shown = ", ".join(sorted(files)[:3]) + (" ..." if len(files) > 3 else "")
        problems.append(
            Problem(
                "missing",
                split,
                f"{expected}: missing '{owner}' file of a frame whose other files exist ({shown})",
                str(expected),
                group(fields, sample.cases),
                owner,
            )
        )
    return problems


def _discover_splits(spec: DatasetSpec, root: Path) -> tuple[list[str] | None, str]:
    """Split names found on disk for a spec whose samples pattern uses ``{split}`` (None when it does
    not), and the glob that was searched."""
    text = spec.samples or next(iter(spec.modalities.values())).paths[0]
    if "{split}" not in text:
        return None, ""
    pattern = _Pattern(text.replace("{split}", "{split_name_}"), "samples")
    gl, regex = pattern.glob_and_regex(str(root), None)
    names = set()
    for path in glob.glob(gl):
        m = regex.fullmatch(path.replace(os.sep, "/"))
        if m is not None:
            names.add(m["split_name_"])
    return sorted(names), gl


def _label_exists(ds: _Walker, sample: _Sample) -> bool:
    try:
        return ds._resolve("label", sample).is_file()
    except FileNotFoundError:
        return False
