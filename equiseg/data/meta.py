"""What a data set is, without its files: the spec a data config names, and the metadata a checkpoint
carries so that inference needs nothing else (classes, palette, ignore index, modalities and their
normalisation; docs/design.md §4).

The functions take the experiment's data section (:class:`~equiseg.config.DataConfig`) as any object
with its attributes (``dataset``, ``spec``, ``depth_folder``, ``modalities``): ``data/`` sits below the
config and does not import it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from equiseg.data.deliver import deliver_spec
from equiseg.data.folder import FolderDataset
from equiseg.data.folder_spec import DatasetSpec
from equiseg.data.muses import muses_spec

__all__ = ["config_meta", "dataset_meta", "dataset_spec", "spec_meta"]


def dataset_spec(data: Any) -> DatasetSpec:
    """The :class:`DatasetSpec` of the data set ``data`` names: DeLiVER (with its ``depth_folder``),
    MUSES, or the folder data set of ``data.spec``. No file of the data set is read.

    Raises:
        ValueError: ``data.dataset`` is none of deliver, muses, folder, or it is folder and ``data.spec``
            is not set; a malformed spec file.
        FileNotFoundError: the spec file does not exist.
    """
    if data.dataset == "deliver":
        return deliver_spec(data.depth_folder)
    if data.dataset == "muses":
        return muses_spec()
    if data.dataset != "folder":
        raise ValueError(f"data.dataset must be deliver, muses or folder, got {data.dataset!r}")
    if not data.spec:
        raise ValueError("data.dataset is 'folder' but data.spec (the data set's YAML spec) is not set")
    return DatasetSpec.load(data.spec)


def dataset_meta(ds: FolderDataset) -> dict[str, Any]:
    """What a checkpoint carries so that inference needs nothing else."""
    return spec_meta(ds.spec, ds.modalities)


def spec_meta(spec: DatasetSpec, modalities: Sequence[str]) -> dict[str, Any]:
    """:func:`dataset_meta` from a data set's spec alone (no files read): classes, palette, ignore index
    and per-modality normalisation of ``modalities``."""
    unknown = [m for m in modalities if m not in spec.modalities]
    if unknown:
        raise ValueError(f"{spec.name}: unknown modalities {unknown}; valid: {', '.join(spec.modalities)}")
    mods = [spec.modalities[m] for m in modalities]
    return {
        "classes": list(spec.classes),
        "palette": [list(c) for c in spec.palette],
        "modalities": list(modalities),
        "ignore_index": int(spec.ignore_index),
        "rgb_modalities": [m.name for m in mods if m.rgb],
        "norm_stats": {
            m.name: {"mean": list(m.norm.mean), "std": list(m.norm.std), "scale": float(m.norm.scale)}
            for m in mods
        },
    }


def config_meta(data: Any) -> dict[str, Any]:
    """:func:`spec_meta` of the data set a data config names (DeLiVER, MUSES or a folder spec), without
    its files."""
    return spec_meta(dataset_spec(data), data.modalities)
