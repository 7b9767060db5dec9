"""The DeLiVER data set (docs/design.md §4.1): RGB, depth (HHA), event and LiDAR images of CARLA scenes,
25 classes.

Layout ``ROOT/{img,hha,depth,event,lidar,semantic}/<condition>/<split>/<sequence>/<frame>_<modal><view>.png``
(e.g. ``img/cloud/val/MAP_10_point98/045050_rgb_front.png``). Samples are the files of
``img/*/<split>/*/`` whose name contains ``_rgb``; the other modalities are the same path with the top
folder (``img`` → ``hha`` (or ``depth``), ``event``, ``lidar``, ``semantic``) and the ``_rgb`` part of
the name (→ ``_depth``, ``_event``, ``_lidar``, ``_semantic``) replaced — only inside the data set,
never in the root path.

Decoding: every modality is an 8-bit PNG returned as a uint8 ``3×H×W`` tensor (RGBA → RGB, gray →
repeated); events may have a lower resolution and are upsampled to the label's (= RGB's) size with
nearest. Label = channel 0 of the semantic PNG: raw 1..25 → classes 0..24, raw 0 and 255 → 255
(ignore); any other raw value is an error naming the file and the value.

Cases: the conditions cloud/fog/night/rain/sun and the sensor failures motionblur, overexposure,
underexposure, lidarjitter, eventlowres. A sample has a case when the case word is its condition folder
or a ``_``-separated token of its sequence folder or file name (never a substring of the root or of
the split: 'rain' does not match 'train').
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from equiseg.data.constants import (
    DELIVER_CASES,
    DELIVER_CLASSES,
    DELIVER_MODALITIES,
    DELIVER_NORM_STATS,
    DELIVER_PALETTE,
    IGNORE_INDEX,
)
from equiseg.data.folder import DatasetSpec, FolderDataset, LabelSpec, ModalitySpec, Transform

__all__ = ["DeLiVER", "deliver_spec"]

_FOLDERS = {"rgb": "img", "depth": "hha", "event": "event", "lidar": "lidar"}
_DEPTH_FOLDERS = ("hha", "depth")


def _pattern(folder: str, modal: str) -> str:
    return f"{folder}/{{condition}}/{{split}}/{{sequence}}/{{frame}}_{modal}{{view}}.png"


def deliver_spec(depth_folder: str = "hha") -> DatasetSpec:
    """The :class:`DatasetSpec` of DeLiVER, with depth read from ``depth_folder`` (``hha`` or ``depth``)."""
    if depth_folder not in _DEPTH_FOLDERS:
        raise ValueError(f"DeLiVER: depth_folder must be one of {_DEPTH_FOLDERS}, got {depth_folder!r}")
    folders = {**_FOLDERS, "depth": depth_folder}
    mods = {
        m: ModalitySpec(
            m,
            (_pattern(folders[m], m),),
            kind="image",
            norm=DELIVER_NORM_STATS[m],
            rgb=m == "rgb",
            lowres=m == "event",
        )
        for m in DELIVER_MODALITIES
    }
    return DatasetSpec(
        modalities=mods,
        classes=DELIVER_CLASSES,
        label=LabelSpec((_pattern("semantic", "semantic"),), channel=0, offset=-1, ignore_values=(0, 255)),
        palette=DELIVER_PALETTE,
        ignore_index=IGNORE_INDEX,
        samples=_pattern("img", "rgb"),
        cases=DELIVER_CASES,
        case_fields=("condition", "sequence", "frame", "view"),
        name="DeLiVER",
    )


class DeLiVER(FolderDataset):
    """DeLiVER (docs/design.md §4.1).

    Args:
        root: the folder holding ``img/``, ``hha/``, ``event/``, ``lidar/``, ``semantic/``.
        split: ``train``, ``val`` or ``test``.
        modalities: any subset and order of ``rgb``, ``depth``, ``event``, ``lidar``.
        case: keep only one case (see the module docstring); ``None`` keeps all.
        transform: ``(inputs, label) -> (inputs, label)``, e.g. from
            :func:`equiseg.data.build_train_transform`.
        depth_folder: ``hha`` (the reference's choice) or ``depth``.
        verify: check up front that every sibling file exists.
        channels: the experiment's ``data.channels`` (see :class:`~equiseg.data.FolderDataset`).

    ``dataset[i]`` with ``transform=None`` returns ``(inputs, label)``: ``inputs`` a list of uint8
    ``3×H×W`` tensors in the order of ``modalities``, ``label`` an int64 ``H×W`` tensor (0..24, 255).
    :attr:`norm_stats` holds, per modality, :class:`~equiseg.data.NormStats` applied as
    ``(x / 255 - mean) / std``: ImageNet mean/std for RGB, mean 0 / std 1 for the others
    (docs/design.md §3.3).

    Raises:
        FileNotFoundError: empty split or case, missing files.
        ValueError: unknown modality, case or depth folder.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        modalities: tuple[str, ...] | list[str] = DELIVER_MODALITIES,
        case: str | None = None,
        transform: Transform | None = None,
        depth_folder: str = "hha",
        verify: bool = False,
        channels: Mapping[str, int] | None = None,
    ):
        self.depth_folder = depth_folder
        super().__init__(
            deliver_spec(depth_folder),
            root=root,
            split=split,
            transform=transform,
            modalities=modalities,
            case=case,
            verify=verify,
            channels=channels,
        )
