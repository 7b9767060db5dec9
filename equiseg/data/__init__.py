"""Data: DeLiVER and MUSES loaders, a YAML-described folder data set, joint transforms
(docs/design.md §3, §4).

The synthetic scene generator lives in :mod:`equiseg.data.synth` and is imported on first use
(``equiseg.data.synth``), not with this package.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from equiseg.data.constants import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_PALETTE,
    DELIVER_CASES,
    DELIVER_CLASSES,
    DELIVER_MODALITIES,
    DELIVER_NORM_STATS,
    DELIVER_PALETTE,
    IGNORE_INDEX,
    MUSES_CASES,
    MUSES_MODALITIES,
    MUSES_NORM_STATS,
    NormStats,
)
from equiseg.data.deliver import DeLiVER, deliver_spec
from equiseg.data.folder import DatasetSpec, FolderDataset, LabelSpec, ModalitySpec
from equiseg.data.io import read_image, read_png16, write_png16
from equiseg.data.muses import MUSES, muses_spec
from equiseg.data.transforms import (
    TrainTransform,
    ValTransform,
    build_train_transform,
    build_val_transform,
)

__all__ = [
    "DeLiVER",
    "MUSES",
    "FolderDataset",
    "DatasetSpec",
    "ModalitySpec",
    "LabelSpec",
    "deliver_spec",
    "muses_spec",
    "NormStats",
    "TrainTransform",
    "ValTransform",
    "build_train_transform",
    "build_val_transform",
    "read_image",
    "read_png16",
    "write_png16",
    "DELIVER_CLASSES",
    "DELIVER_PALETTE",
    "DELIVER_MODALITIES",
    "DELIVER_CASES",
    "DELIVER_NORM_STATS",
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_PALETTE",
    "MUSES_MODALITIES",
    "MUSES_CASES",
    "MUSES_NORM_STATS",
    "IGNORE_INDEX",
]


def __getattr__(name: str) -> ModuleType:
    # ``equiseg.data.synth`` is imported lazily: it is optional for loading data and heavier.
    if name == "synth":
        return importlib.import_module(f"{__name__}.synth")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
