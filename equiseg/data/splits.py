"""Which splits a data set has, and the check that a split a command is asked to score is one of them.

``eval``, ``robustness`` and ``analyze`` score one split (``--split``, default ``data.val_split``), and
every number they write says which. A misspelt or absent split should stop them with one line naming
the flag before a checkpoint is read -- not after a model is built, and not with a glob pattern only a
reader of the loader understands. So the split is checked here, against

- the names the layout defines: DeLiVER and MUSES have ``train``, ``val`` and ``test``;
- the splits on disk: the names filling ``{split}`` in the data set's sample pattern (for DeLiVER the
  folders ``img/<condition>/<split>``, for MUSES ``frame_camera/<split>``, for a folder data set the
  directories its spec's pattern reaches). Only the directory level holding ``{split}`` is listed, so
  this costs a few ``listdir`` calls, not a walk over every frame.

A folder data set whose patterns do not use ``{split}`` has one split: the spec's ``split`` when it
names one (any other name is refused), else any name, which then only labels the outputs.
When nothing is found on disk at all (a wrong root), the check passes and the loader's own error, which
names the root, is the one the user sees.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any

from equiseg.data.folder_spec import DatasetSpec, _Pattern
from equiseg.data.meta import dataset_spec
from equiseg.utils import bounded_repr, check_names

__all__ = ["LAYOUT_SPLITS", "check_split", "splits_on_disk"]

LAYOUT_SPLITS: dict[str, tuple[str, ...]] = {
    "deliver": ("train", "val", "test"),
    "muses": ("train", "val", "test"),
}
"""The splits a built-in layout defines (the published ones)."""


def _split_dir_pattern(spec: DatasetSpec) -> str | None:
    """The sample pattern cut after the path component holding ``{split}`` (None: no ``{split}``)."""
    text = (spec.samples or next(iter(spec.modalities.values())).paths[0]).replace(os.sep, "/")
    at = text.find("{split}")
    if at < 0:
        return None
    end = text.find("/", at)
    return text if end < 0 else text[:end]


def splits_on_disk(spec: DatasetSpec, root: str | os.PathLike) -> list[str] | None:
    """The split names found under ``root`` for ``spec`` (sorted), or None when its sample pattern does
    not use ``{split}``. Where ``{split}`` sits in a directory name only that directory level is listed."""
    text = _split_dir_pattern(spec)
    if text is None:
        return None
    pattern = _Pattern(text.replace("{split}", "{split_name_}"), "samples")
    gl, regex = pattern.glob_and_regex(str(root), None)
    names = set()
    for path in glob.glob(gl):
        m = regex.fullmatch(path.replace(os.sep, "/"))
        if m is not None and m["split_name_"]:
            names.add(m["split_name_"])
    return sorted(names)


def _dataset_spec(data: Any) -> tuple[DatasetSpec, str, str]:
    """``(spec, root, name)`` of a :class:`~equiseg.config.DataConfig`."""
    spec = dataset_spec(data)
    if data.dataset in LAYOUT_SPLITS:
        return spec, str(data.root), spec.name
    root = data.root if data.root is not None else spec.root  # as the loader takes it
    return spec, str(root), f"folder data set '{spec.name}'"


def check_split(data: Any, split: Any, where: str = "split") -> str:
    """``split`` if it names a split of the data set ``data`` describes (a
    :class:`~equiseg.config.DataConfig`; see the module docstring for what counts).

    Args:
        data: the experiment's data section (``dataset``, ``root``, ``spec``).
        split: the split asked for.
        where: the flag or key it came from, named by the error (``--split``, ``data.val_split``).

    Raises:
        ValueError: one line naming ``where``: an empty name, a name the layout does not define
            (``--split: unknown DeLiVER split 'tset'; choose from train, val, test``), a split not on
            disk (``--split: no 'test' split in DeLiVER under ROOT; splits found: train, val``), or,
            for a folder data set with one fixed split, another name.
    """
    if not isinstance(split, str) or not split.strip():
        raise ValueError(f"{where}: expected a split name, got {split!r}")
    spec, root, name = _dataset_spec(data)
    if data.dataset in LAYOUT_SPLITS:
        check_names([split], LAYOUT_SPLITS[data.dataset], what=f"{name} split", where=where)
    found = splits_on_disk(spec, root)
    if found is None:  # the patterns do not use {split}: the spec's split, if it names one
        if spec.split is not None and split != spec.split:
            raise ValueError(
                f"{where}: {name} has one split, '{spec.split}' (its patterns do not use {{split}}); "
                f"got {bounded_repr(split, 80)}"
            )
        return split
    if found and split not in found:
        raise ValueError(
            f"{where}: no {bounded_repr(split, 80)} split in {name} under {Path(root)}; splits found: "
            f"{', '.join(found)}"
        )
    return split
