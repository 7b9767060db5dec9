"""The MUSES data set (docs/design.md §4.2): camera, lidar, radar and event camera in adverse conditions,
19 classes.

Read from the raw tree and the MUSES SDK's projections (``scripts/project_sensors_to_rgb.py``)::

    ROOT/frame_camera/<split>/<condition>/<time>/<stem>_frame_camera.png         8-bit RGB, 1920×1080
    ROOT/gt_semantic/<split>/<condition>/<time>/<stem>_gt_labelTrainIds.png      0..18, 255 = ignore
    ROOT/projected_to_rgb/{lidar,radar,event_camera}/<split>/<condition>/<time>/<stem>_<modality>.{npz,npy,png}

with ``<condition>`` in clear/fog/rain/snow and ``<time>`` in day/night (both are cases). The projected
files are decoded by extension: ``.npz`` (``np.savez_compressed``: a float H×W×3 array under
``arr_0``), ``.npy``, or ``.png`` written by OpenCV (channels stored B, G, R, so they are reversed after
reading; lidar and radar PNGs are uint16 holding ``(v + 100)·150`` and are decoded as
``png / 150 - 100``; event PNGs hold the values unscaled). Images keep their size (no square resize)
and label 255 stays ignore (the reference loaders' 255 → road mapping is a bug, docs/design.md §4.2).

``dataset[i]`` with ``transform=None`` returns ``(inputs, label)``: ``frame_camera`` as a uint8
``3×H×W`` tensor, ``lidar`` / ``radar`` / ``event_camera`` as float32 ``3×H×W`` tensors in physical
units (lidar [range, intensity, height], radar [range, intensity, 0], events [positive count,
negative count, 0]), and an int64 ``H×W`` label. :attr:`norm_stats` holds CAFuser's statistics in
those units (scale 1) and ImageNet's for the camera (scale 255).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from equiseg.data.constants import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_PALETTE,
    IGNORE_INDEX,
    MUSES_CASES,
    MUSES_MODALITIES,
    MUSES_NORM_STATS,
)
from equiseg.data.folder import DatasetSpec, FolderDataset, LabelSpec, ModalitySpec, Transform

__all__ = ["MUSES", "muses_spec", "MUSES_PNG_SCALE", "MUSES_PNG_SHIFT"]

MUSES_PNG_SCALE = 150.0
"""Lidar/radar PNGs store ``(v + MUSES_PNG_SHIFT) * MUSES_PNG_SCALE`` as uint16."""
MUSES_PNG_SHIFT = 100.0

_TREE = "{split}/{condition}/{time}/{stem}"
_PROJECTED_EXTENSIONS = ("npz", "npy", "png")


def muses_spec() -> DatasetSpec:
    """The :class:`DatasetSpec` of MUSES (projected modalities in any of the three encodings)."""
    mods = {
        "frame_camera": ModalitySpec(
            "frame_camera", (f"frame_camera/{_TREE}_frame_camera.png",), kind="image",
            norm=MUSES_NORM_STATS["frame_camera"], rgb=True,
        ),
    }  # fmt: skip
    for m in MUSES_MODALITIES[1:]:
        scaled = m in ("lidar", "radar")
        mods[m] = ModalitySpec(
            m,
            tuple(f"projected_to_rgb/{m}/{_TREE}_{m}.{ext}" for ext in _PROJECTED_EXTENSIONS),
            kind="array",
            norm=MUSES_NORM_STATS[m],
            bgr=True,
            png_scale=MUSES_PNG_SCALE if scaled else 1.0,
            png_shift=MUSES_PNG_SHIFT if scaled else 0.0,
        )
    return DatasetSpec(
        modalities=mods,
        classes=CITYSCAPES_CLASSES,
        label=LabelSpec(
            (f"gt_semantic/{_TREE}_gt_labelTrainIds.png",), offset=0, ignore_values=(IGNORE_INDEX,)
        ),
        palette=CITYSCAPES_PALETTE,
        ignore_index=IGNORE_INDEX,
        samples=f"frame_camera/{_TREE}_frame_camera.png",
        cases=MUSES_CASES,
        case_fields=("condition", "time"),
        name="MUSES",
    )


class MUSES(FolderDataset):
    """MUSES (docs/design.md §4.2); see the module docstring for the files and what ``dataset[i]`` returns.

    Args:
        root: the MUSES folder (holding ``frame_camera/``, ``gt_semantic/``, ``projected_to_rgb/``).
        split: ``train``, ``val`` or ``test``.
        modalities: any subset and order of ``frame_camera``, ``lidar``, ``radar``, ``event_camera``.
        case: one of clear, fog, rain, snow, day, night; ``None`` keeps all.
        transform: ``(inputs, label) -> (inputs, label)``.
        verify: check up front that every file exists.
        channels: the experiment's ``data.channels`` (see :class:`~equiseg.data.FolderDataset`).
        labels: ``False`` for splits without ground truth (MUSES' test labels are withheld): the
            label is then all 255.

    Raises:
        FileNotFoundError: empty split or case, missing files.
        ValueError: unknown modality or case, undecodable files, label values outside 0..18 and 255.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        modalities: tuple[str, ...] | list[str] = MUSES_MODALITIES,
        case: str | None = None,
        transform: Transform | None = None,
        verify: bool = False,
        labels: bool = True,
        channels: Mapping[str, int] | None = None,
    ):
        super().__init__(
            muses_spec(),
            root=root,
            split=split,
            transform=transform,
            modalities=modalities,
            case=case,
            verify=verify,
            labels=labels,
            channels=channels,
        )
