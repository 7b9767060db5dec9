"""Class names, palettes, cases and normalisation statistics of the supported data sets.

Facts from docs/design.md §3.3 (normalisation), §4.1 (DeLiVER) and §4.2 (MUSES / Cityscapes). Normalisation
statistics are :class:`NormStats`: a raw value ``v`` of channel ``c`` becomes
``(v / scale - mean[c]) / std[c]``, so ``mean``/``std`` live in the ``v / scale`` space (0..1 for
8-bit images with ``scale=255``; physical units for MUSES' projected measurements with ``scale=1``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from equiseg.schema import check_keys

__all__ = [
    "NormStats",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DELIVER_CLASSES",
    "DELIVER_PALETTE",
    "DELIVER_MODALITIES",
    "DELIVER_CONDITIONS",
    "DELIVER_FAILURES",
    "DELIVER_CASES",
    "DELIVER_NORM_STATS",
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_PALETTE",
    "MUSES_CLASSES",
    "MUSES_PALETTE",
    "MUSES_MODALITIES",
    "MUSES_CONDITIONS",
    "MUSES_TIMES_OF_DAY",
    "MUSES_CASES",
    "MUSES_NORM_STATS",
    "IGNORE_INDEX",
    "default_palette",
]

IGNORE_INDEX = 255
"""Label value excluded from the loss and the metrics (docs/design.md §3.2, §5)."""


@dataclasses.dataclass(frozen=True)
class NormStats:
    """Per-channel normalisation of one modality: ``(x / scale - mean) / std``.

    Attributes:
        mean: per-channel mean, in the ``x / scale`` space: one value per channel (3 for the
            3-channel modalities), or a single value for every channel.
        std: per-channel standard deviation, in the ``x / scale`` space (as many values as ``mean``,
            all > 0).
        scale: raw values are divided by this first (255 for 8-bit images, 1 for float
            measurements already in physical units).

    A modality with ``C`` channels uses :meth:`for_channels` (C): stats of ``C`` values as given, a
    single value (or values that are all equal, as DeLiVER's 0 / 1 for its non-RGB modalities)
    repeated ``C`` times; anything else does not say how to normalise ``C`` channels and is refused.
    """

    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    scale: float = 1.0

    def __post_init__(self) -> None:
        mean = tuple(float(v) for v in self.mean)
        std = tuple(float(v) for v in self.std)
        if not mean or len(mean) != len(std):
            raise ValueError(
                f"NormStats needs as many means as stds (one per channel, or one for all), got {mean} / {std}"
            )
        if min(std) <= 0 or float(self.scale) <= 0:
            raise ValueError(f"NormStats std and scale must be positive, got std={std} scale={self.scale}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "scale", float(self.scale))

    @classmethod
    def coerce(cls, value: NormStats | Mapping[str, Any], where: str = "norm") -> NormStats:
        """Accept a :class:`NormStats` or a ``{mean, std, scale}`` mapping (e.g. from YAML).

        Raises:
            ValueError: unknown keys or malformed values, naming ``where``.
        """
        if isinstance(value, NormStats):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: expected a mapping with mean/std/scale, got {value!r}")
        check_keys(value, ("mean", "std", "scale"), where)
        try:
            return cls(**{k: tuple(v) if k != "scale" else v for k, v in value.items()})
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: {e}") from None

    def for_channels(self, channels: int, where: str = "norm") -> NormStats:
        """These statistics for a ``channels``-channel modality (see the class docstring).

        Raises:
            ValueError: ``{where}: has 3 different means/stds, which do not say how to normalise 20
                channels; give one value for all channels or 20 ...``.
        """
        n = len(self.mean)
        if n == channels:
            return self
        if len(set(self.mean)) == 1 and len(set(self.std)) == 1:
            return dataclasses.replace(self, mean=self.mean[:1] * channels, std=self.std[:1] * channels)
        raise ValueError(
            f"{where}: has {n} different means/stds, which do not say how to normalise {channels} "
            f"channel(s); give one value for all channels or {channels}"
        )

    def to_dict(self) -> dict[str, Any]:
        """YAML-safe view: ``{"mean": [...], "std": [...], "scale": s}``."""
        return {"mean": list(self.mean), "std": list(self.std), "scale": self.scale}

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` (C×H×W or B×C×H×W, any dtype) to float32."""
        st = self.for_channels(x.shape[-3])
        shift = torch.tensor(st.mean, dtype=torch.float64) * st.scale
        factor = 1.0 / (torch.tensor(st.std, dtype=torch.float64) * st.scale)
        return (x.to(torch.float32) - shift.float().view(-1, 1, 1)) * factor.float().view(-1, 1, 1)

    def invert(self, x: torch.Tensor) -> torch.Tensor:
        """Undo :meth:`apply`: back to raw values (float32)."""
        st = self.for_channels(x.shape[-3])
        mean = torch.tensor(st.mean, dtype=torch.float32).view(-1, 1, 1)
        std = torch.tensor(st.std, dtype=torch.float32).view(-1, 1, 1)
        return (x.to(torch.float32) * std + mean) * st.scale


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_RGB_STATS = NormStats(IMAGENET_MEAN, IMAGENET_STD, 255.0)
_UNIT_STATS = NormStats((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 255.0)

# --- DeLiVER (docs/design.md §4.1) -------------------------------------------------------------
DELIVER_CLASSES: tuple[str, ...] = (
    "Building", "Fence", "Other", "Pedestrian", "Pole", "RoadLine", "Road", "SideWalk", "Vegetation",
    "Cars", "Wall", "TrafficSign", "Sky", "Ground", "Bridge", "RailTrack", "GroundRail", "TrafficLight",
    "Static", "Dynamic", "Water", "Terrain", "TwoWheeler", "Bus", "Truck",
)  # fmt: skip
DELIVER_PALETTE: tuple[tuple[int, int, int], ...] = (
    (70, 70, 70), (100, 40, 40), (55, 90, 80), (220, 20, 60), (153, 153, 153), (157, 234, 50),
    (128, 64, 128), (244, 35, 232), (107, 142, 35), (0, 0, 142), (102, 102, 156), (220, 220, 0),
    (70, 130, 180), (81, 0, 81), (150, 100, 100), (230, 150, 140), (180, 165, 180), (250, 170, 30),
    (110, 190, 160), (170, 120, 50), (45, 60, 150), (145, 170, 100), (0, 0, 230), (0, 60, 100), (0, 0, 70),
)  # fmt: skip
DELIVER_MODALITIES: tuple[str, ...] = ("rgb", "depth", "event", "lidar")
DELIVER_CONDITIONS: tuple[str, ...] = ("cloud", "fog", "night", "rain", "sun")
DELIVER_FAILURES: tuple[str, ...] = (
    "motionblur",
    "overexposure",
    "underexposure",
    "lidarjitter",
    "eventlowres",
)
DELIVER_CASES: tuple[str, ...] = DELIVER_CONDITIONS + DELIVER_FAILURES
# RGB: /255 then ImageNet mean/std; depth (HHA), event, LiDAR: /255 only (docs/design.md §3.3).
DELIVER_NORM_STATS: dict[str, NormStats] = {
    "rgb": _RGB_STATS,
    "depth": _UNIT_STATS,
    "event": _UNIT_STATS,
    "lidar": _UNIT_STATS,
}

# --- MUSES / Cityscapes (docs/design.md §4.2) --------------------------------------------------
CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip
CITYSCAPES_PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip
MUSES_CLASSES = CITYSCAPES_CLASSES
MUSES_PALETTE = CITYSCAPES_PALETTE
MUSES_MODALITIES: tuple[str, ...] = ("frame_camera", "lidar", "radar", "event_camera")
MUSES_CONDITIONS: tuple[str, ...] = ("clear", "fog", "rain", "snow")
MUSES_TIMES_OF_DAY: tuple[str, ...] = ("day", "night")
MUSES_CASES: tuple[str, ...] = MUSES_CONDITIONS + MUSES_TIMES_OF_DAY
# CAFuser's per-channel statistics of the projected measurements, in physical units (scale 1).
# lidar [range, intensity, height]; radar [range, intensity, 0]; events [pos count, neg count, 0].
MUSES_NORM_STATS: dict[str, NormStats] = {
    "frame_camera": _RGB_STATS,
    "lidar": NormStats((4.917, 6.149, 0.270), (13.35, 17.64, 1.232), 1.0),
    "radar": NormStats((4.004, 9.343, 0.0), (14.61, 19.29, 1.0), 1.0),
    "event_camera": NormStats((0.126, 0.127, 0.0), (0.544, 0.476, 1.0), 1.0),
}


def default_palette(num_classes: int) -> tuple[tuple[int, int, int], ...]:
    """Distinct colours for ``num_classes`` classes (the PASCAL VOC bit-interleaving colour map).

    Args:
        num_classes: number of classes (≥ 1).

    Returns:
        ``num_classes`` RGB triples in 0..255.
    """
    ids = torch.arange(num_classes, dtype=torch.int64)
    rgb = torch.zeros(num_classes, 3, dtype=torch.int64)
    for bit in range(8):  # spread the id's bits over the high bits of the three channels
        for ch in range(3):
            rgb[:, ch] |= ((ids >> (3 * bit + ch)) & 1) << (7 - bit)
    return tuple(tuple(int(v) for v in row) for row in rgb)


def check_palette(
    palette: Sequence[Sequence[int]], num_classes: int, where: str
) -> tuple[tuple[int, ...], ...]:
    """Validate a palette: ``num_classes`` RGB triples in 0..255.

    Raises:
        ValueError: wrong length or a malformed colour, naming ``where``.
    """
    if len(palette) != num_classes:
        raise ValueError(f"{where}: palette has {len(palette)} colours for {num_classes} classes")
    out = []
    for i, c in enumerate(palette):
        if len(c) != 3 or not all(isinstance(v, int) and 0 <= v <= 255 for v in c):
            raise ValueError(f"{where}: palette[{i}] = {c!r} is not an RGB triple of ints in 0..255")
        out.append(tuple(int(v) for v in c))
    return tuple(out)
