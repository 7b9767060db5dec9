"""Is a downloaded data set complete and readable? :func:`verify_dataset` (``equiseg data verify``).

A training run finds a bad file when it reaches it, hours in; this walks the whole data set first and
reports, per split and per condition:

* **counts** -- frames found against the expected number: the published split sizes
  (:data:`PUBLISHED_COUNTS`) for DeLiVER and MUSES, or, for a root written by ``equiseg synth``, the
  counts in the manifest it leaves there (:data:`SYNTH_MANIFEST`: per split and per condition);
* **missing files** -- a frame without one of its modality files or its label, and files of a frame
  whose sample-defining file (DeLiVER's ``img/``, MUSES' ``frame_camera/``) is gone;
* **undecodable files** -- every file is decoded with the loaders' own reader
  (:func:`equiseg.data.io.read_image`: truncated or corrupt PNGs, bad ``.npz``, images over the pixel
  limit), and an ``image`` modality must be 8-bit;
* **non-finite values** -- NaN/Inf in float files (MUSES' projected ``.npz``);
* **size mismatches** -- a modality whose H×W differs from its frame's label (a ``lowres`` modality,
  DeLiVER's events, may be smaller, not larger);
* **label values** outside the classes and the ignore values the layout declares (DeLiVER: raw 1..25
  and 0/255 ignored; MUSES: train ids 0..18 and 255);
* **depth** (DeLiVER) -- which of ``hha/`` and ``depth/`` is present and which one was checked.

Frames are found as the loaders find them (the same :class:`~equiseg.data.folder.DatasetSpec`): a
DeLiVER condition is its condition folder, a MUSES one ``weather/time`` (read from the SDK's
``projected_to_rgb/`` outputs); a folder data set (its YAML spec) is grouped by the spec's cases and has
no expected counts.

The decoding runs on a thread pool (``workers``): OpenCV and zlib release the GIL while they decode,
and threads share the walker's state without pickling. The result is a :class:`VerifyReport`
(:meth:`~VerifyReport.format_table` for the terminal, :meth:`~VerifyReport.to_dict` for JSON);
``report.ok`` is False when anything is wrong.
The checks of one frame are in :mod:`equiseg.data.verify_frames`, the report in
:mod:`equiseg.data.verify_report`.

Published split sizes, and how sure they are:

* DeLiVER, front view: 3,983 train / 2,005 val / 1,897 test (7,885 frames). Source: the DeLiVER
  paper (Zhang et al., "Delivering Arbitrary-Modal Semantic Segmentation", CVPR 2023, data set
  section), as quoted when this check was asked for; the data set's repository
  (github.com/jamycheung/DELIVER) gives the split only as a figure and confirms the released folders
  (``depth, event, hha, img, lidar, semantic`` / condition / split / ``MAP_*``). The paper's text could
  not be read where this was written, so the three numbers are *not independently confirmed*.
* MUSES: 1,500 train / 250 val / 750 test. The total, 2,500 scenes, is confirmed by the MUSES SDK's
  README (github.com/timbroed/MUSES); the split into 1,500 / 250 / 750 could *not* be confirmed there
  (the README gives no split sizes) and is taken as quoted. The same README says the test labels are
  withheld (a later version of the data set's page says all labels are public), so a MUSES ``test``
  split without any label file is reported as a note, not a problem.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from equiseg.data.deliver import deliver_spec
from equiseg.data.folder import DatasetSpec
from equiseg.data.muses import muses_spec
from equiseg.data.verify_frames import (
    _discover_splits,
    _group_function,
    _label_exists,
    _orphans,
    _SplitChecker,
    _Walker,
)
from equiseg.data.verify_report import _ALL, PROBLEM_KINDS, Problem, VerifyReport, _Row

__all__ = [
    "LAYOUTS",
    "PUBLISHED_COUNTS",
    "SYNTH_MANIFEST",
    "PROBLEM_KINDS",
    "Problem",
    "VerifyReport",
    "verify_dataset",
    "read_synth_manifest",
    "write_synth_manifest",
]

LAYOUTS = ("deliver", "muses", "folder")
SPLITS = ("train", "val", "test")
DEPTH_FOLDERS = ("auto", "hha", "depth")

PUBLISHED_COUNTS: dict[str, dict[str, int]] = {
    "deliver": {"train": 3983, "val": 2005, "test": 1897},
    "muses": {"train": 1500, "val": 250, "test": 750},
}
"""Frames per split as published (see the module docstring for the sources and their certainty)."""

_PUBLISHED_SOURCE = {
    "deliver": "published DeLiVER front-view split (3,983 / 2,005 / 1,897; not independently confirmed)",
    "muses": "published MUSES split (1,500 / 250 / 750; total 2,500 confirmed, split not)",
}

SYNTH_MANIFEST = "equiseg_synth.json"
"""File ``equiseg synth`` writes into the root it generates: its layout and, per split, the number of
frames and the frames per condition, so that :func:`verify_dataset` compares a generated root with
what was generated rather than with the real data set's sizes."""

_MANIFEST_FORMAT = 1

_LABELS_OPTIONAL = {"muses": ("test",)}  # splits whose labels may be withheld


# ------------------------------------------------------------------------------------- synth manifest
def read_synth_manifest(root: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest ``equiseg synth`` wrote into ``root``, or None when there is none.

    Raises:
        ValueError: the file exists but is not a manifest of this format (naming the file).
    """
    path = Path(root) / SYNTH_MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(
            f"{path}: unreadable synth manifest ({e}); delete it or regenerate the data"
        ) from None
    ok = (
        isinstance(data, dict)
        and data.get("format") == _MANIFEST_FORMAT
        and data.get("layout") in LAYOUTS
        and isinstance(data.get("splits"), dict)
        and all(
            isinstance(s, dict)
            and isinstance(s.get("frames"), int)
            and isinstance(s.get("conditions"), dict)
            and all(isinstance(n, int) for n in s["conditions"].values())
            for s in data["splits"].values()
        )
    )
    if not ok:
        raise ValueError(
            f"{path}: not a synth manifest of format {_MANIFEST_FORMAT} (layout, splits with frames and "
            "conditions); delete it or regenerate the data"
        )
    return data


def write_synth_manifest(
    root: str | os.PathLike, layout: str, splits: Mapping[str, Mapping[str, Any]]
) -> Path:
    """Record what a synth run wrote into ``root``: ``splits`` maps a split to ``{"frames": n,
    "conditions": {condition: n}, ...}`` (more keys, e.g. the size and seed, are kept as given).

    A manifest already there for the same layout keeps its other splits (generating train and val in
    two runs describes both); one for another layout is replaced. Keys are sorted and no time is
    recorded, so the same generation writes the same bytes.
    """
    root = Path(root)
    try:
        old = read_synth_manifest(root)
    except ValueError:
        old = None
    kept = dict(old["splits"]) if old is not None and old["layout"] == layout else {}
    kept.update({s: dict(v) for s, v in splits.items()})
    data = {"format": _MANIFEST_FORMAT, "layout": layout, "written_by": "equiseg synth", "splits": kept}
    from equiseg.utils import write_atomic

    return write_atomic(root / SYNTH_MANIFEST, json.dumps(data, indent=2, sort_keys=True) + "\n")


def _check_names(given: Sequence[str] | None, where: str) -> list[str] | None:
    if given is None:
        return None
    if isinstance(given, str):
        given = [s for s in given.split(",")]
    names = list(dict.fromkeys(s.strip() for s in given if s.strip()))
    if not names:
        raise ValueError(f"{where}: no split given")
    return names


# --------------------------------------------------------------------------------------------- API
def verify_dataset(
    root: str | os.PathLike,
    layout: str,
    *,
    spec: str | os.PathLike | DatasetSpec | Mapping[str, Any] | None = None,
    splits: Sequence[str] | str | None = None,
    workers: int = 1,
    depth_folder: str = "auto",
    progress: bool = False,
) -> VerifyReport:
    """Walk a data set and check every file of every frame (see the module docstring).

    Args:
        root: the data set root (DeLiVER: holding ``img/``, ``hha/`` ...; MUSES: ``frame_camera/`` ...;
            a folder data set: the root its spec's patterns are relative to).
        layout: ``deliver``, ``muses`` or ``folder``.
        spec: the YAML spec (path, mapping or :class:`DatasetSpec`) of a ``folder`` data set; only there.
        splits: the splits that must be there (a list or a comma-separated string). Default: all --
            train, val and test for DeLiVER and MUSES, the splits in the synth manifest for a generated
            root, the splits found on disk for a folder data set. Other splits are not checked.
        workers: threads decoding files (>= 1).
        depth_folder: DeLiVER: ``hha``, ``depth``, or ``auto`` (``hha/`` when present, else ``depth/``).
        progress: show a progress bar over the frames.

    Returns:
        A :class:`VerifyReport`; ``report.ok`` is False when anything is wrong.

    Raises:
        FileNotFoundError: the root or the spec file does not exist.
        NotADirectoryError: the root is a file.
        ValueError: an unknown layout or depth folder, a spec with another layout or none with
            ``folder``, a malformed spec, an unknown split, ``workers`` < 1, a malformed synth manifest.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"--layout: unknown layout {layout!r}; choose from {', '.join(LAYOUTS)}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"--workers: expected an integer >= 1, got {workers!r}")
    if depth_folder not in DEPTH_FOLDERS:
        raise ValueError(f"--depth-folder: expected one of {', '.join(DEPTH_FOLDERS)}, got {depth_folder!r}")
    if depth_folder != "auto" and layout != "deliver":
        raise ValueError(f"--depth-folder: only for --layout deliver, got --layout {layout}")
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"data set root {root} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"data set root {root} is a file, expected a folder")
    if layout != "folder" and spec is not None:
        raise ValueError(f"--spec: only for --layout folder (the {layout} layout is built in)")
    if layout == "folder" and spec is None:
        raise ValueError("--spec: --layout folder needs the data set's YAML spec (--spec FILE)")
    asked = _check_names(splits, "--splits")

    notes: list[str] = []
    depth_info = None
    if layout == "deliver":
        present = {f: (root / f).is_dir() for f in ("hha", "depth")}
        chosen = depth_folder
        if depth_folder == "auto":  # hha/ (the reference's choice) unless only depth/ is there
            chosen = "depth" if present["depth"] and not present["hha"] else "hha"
        depth_info = {"hha": present["hha"], "depth": present["depth"], "checked": chosen}
        other = "depth" if chosen == "hha" else "hha"
        if present["hha"] and present["depth"]:
            notes.append(
                f"depth: hha/ and depth/ are both present (as released); checked {chosen}/ -- the loader "
                f"reads data.depth_folder ({chosen} here), {other}/ was not checked"
            )
        elif present[chosen]:
            hint = (
                " -- train with data.depth_folder: depth (the default reads hha/)"
                if chosen == "depth"
                else ""
            )
            notes.append(f"depth: only {chosen}/ is present; checked {chosen}/{hint}")
        elif present[other]:
            notes.append(
                f"depth: {chosen}/ does not exist but {other}/ does: verify with --depth-folder {other} and "
                f"train with data.depth_folder: {other}"
            )
        else:
            notes.append("depth: neither hha/ nor depth/ exists")
        ds_spec = deliver_spec(chosen)
    elif layout == "muses":
        ds_spec = muses_spec()
    else:
        ds_spec = DatasetSpec.load(spec)

    manifest = read_synth_manifest(root) if layout != "folder" else None
    if manifest is not None and manifest["layout"] != layout:
        notes.append(f"{SYNTH_MANIFEST} describes a {manifest['layout']} root; it was ignored")
        manifest = None
    if manifest is not None:
        expected = {s: v["frames"] for s, v in manifest["splits"].items()}
        expected_conditions = {s: dict(v["conditions"]) for s, v in manifest["splits"].items()}
        source = f"the synth manifest {root / SYNTH_MANIFEST} (what equiseg synth generated)"
        default_splits = sorted(expected, key=lambda s: (SPLITS.index(s) if s in SPLITS else 9, s))
    elif layout in PUBLISHED_COUNTS:
        expected, expected_conditions = dict(PUBLISHED_COUNTS[layout]), {}
        source = _PUBLISHED_SOURCE[layout]
        default_splits = list(SPLITS)
    else:
        expected, expected_conditions, source = {}, {}, "none (a folder data set has no published counts)"
        found, searched = _discover_splits(ds_spec, root)
        if found is None:  # one set of samples: no {split} in the patterns
            default_splits = [ds_spec.split or ""]
        else:
            default_splits = found or ([ds_spec.split] if ds_spec.split else [])
    if asked is not None and layout != "folder" and manifest is None:
        from equiseg.utils import check_names

        asked = check_names(asked, SPLITS, what=f"{layout} split", where="--splits")
    chosen_splits = asked if asked is not None else default_splits
    skipped = [s for s in (expected if manifest is not None else ()) if s not in chosen_splits]
    if skipped:
        notes.append(f"split(s) {', '.join(skipped)} not checked (--splits)")

    report = VerifyReport(str(root), layout, list(chosen_splits), source, notes=notes, depth=depth_info)
    if not chosen_splits:
        report.problems.append(
            Problem("split", "", f"no frames of any split found: no file matches {searched!r}")
        )
    group = _group_function(layout, ds_spec)
    walkers: list[tuple[str, _Walker | None, bool]] = []
    for split in chosen_splits:
        rows = report.rows.setdefault(split, {_ALL: _Row(expected=expected.get(split))})
        for cond, n in expected_conditions.get(split, {}).items():
            rows[cond] = _Row(expected=n)
        try:
            ds = _Walker(ds_spec, root=root, split=split or None)
        except FileNotFoundError as e:
            if expected.get(split) != 0:
                label = f"split '{split}'" if split else "the data set"
                report.problems.append(Problem("split", split, f"{label}: no frames found ({e})"))
            walkers.append((split, None, False))
            continue
        with_labels = ds.with_labels
        if with_labels and split in _LABELS_OPTIONAL.get(layout, ()):
            if not any(_label_exists(ds, s) for s in ds.samples):
                with_labels = False
                report.notes.append(
                    f"split '{split}' has no label files (MUSES withheld its test labels): labels not checked"
                )
        walkers.append((split, ds, with_labels))

    total = sum(len(ds.samples) for _, ds, _ in walkers if ds is not None)
    from tqdm.auto import tqdm

    with (
        tqdm(total=total, disable=not progress, desc="verify", unit="frame") as bar,
        ThreadPoolExecutor(max_workers=workers) if workers > 1 else _Serial() as pool,
    ):
        for split, ds, with_labels in walkers:
            rows = report.rows[split]
            if ds is None:
                continue
            checker = _SplitChecker(ds, split, group, with_labels)
            for result in pool.map(checker.check, ds.samples):
                row = rows.setdefault(result.group, _Row())
                row.frames += 1
                rows[_ALL].frames += 1
                for p in result.problems:
                    row.problems[p.kind] += 1
                    rows[_ALL].problems[p.kind] += 1
                report.problems.extend(result.problems)
                bar.update(1)
            for p in _orphans(ds, split, group, with_labels):
                rows.setdefault(p.condition, _Row()).problems[p.kind] += 1
                rows[_ALL].problems[p.kind] += 1
                report.problems.append(p)

    absent = {p.split for p in report.problems if p.kind == "split"}
    origin = "synth manifest" if manifest is not None else "published"
    for split in chosen_splits:  # counts last: the table's numbers are final here
        rows = report.rows[split]
        where = f"split '{split}'" if split else "the data set"
        for cond, row in sorted(rows.items(), key=lambda kv: (kv[0] != _ALL, kv[0])):
            if row.expected is None or row.frames == row.expected:
                continue
            if cond == _ALL and row.frames == 0 and split in absent:
                continue  # already reported as a missing split
            what = where if cond == _ALL else f"{where}, condition '{cond}'"
            report.problems.append(
                Problem(
                    "count",
                    split,
                    f"{what}: {row.frames} frame(s), expected {row.expected} ({origin})",
                    condition=None if cond == _ALL else cond,
                )
            )
    return report


class _Serial:
    """The executor interface, in the calling thread (``workers=1``)."""

    def __enter__(self) -> _Serial:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    @staticmethod
    def map(fn: Callable, items: Iterable) -> Iterable:
        return map(fn, items)
