"""What the street builders share (docs/design.md §9): the camera :class:`Rig` a street is sampled with,
the ground footprints already taken, the sides of the road and the colour picker of the object tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from equiseg.data.synth import scene as sc


@dataclass
class Rig:
    """Where the camera is in a sampled scene (metres, degrees)."""

    x: float
    height: float
    pitch: float
    yaw: float


def _pick(rng: np.random.Generator, table: np.ndarray, jitter: float = 0.1) -> np.ndarray:
    c = table[rng.integers(len(table))] * rng.uniform(1 - jitter, 1 + jitter)
    return np.clip(c, 0.0, 1.0).astype(np.float32)


class _Occupancy:
    """Footprints already taken on the ground, to keep objects from overlapping."""

    def __init__(self) -> None:
        self.rects: list[tuple[float, float, float, float]] = []

    def free(self, x0: float, z0: float, x1: float, z1: float) -> bool:
        return all(x1 <= a0 or x0 >= a1 or z1 <= b0 or z0 >= b1 for a0, b0, a1, b1 in self.rects)

    def take(self, x0: float, z0: float, x1: float, z1: float) -> bool:
        if not self.free(x0, z0, x1, z1):
            return False
        self.rects.append((x0, z0, x1, z1))
        return True


def _side_x(scene: sc.Scene, side: int, offset: float) -> float:
    """X at ``offset`` metres beyond the curb on ``side`` (+1 right, -1 left)."""
    return scene.right_edge + offset if side > 0 else scene.left_edge - offset


def _span(side: int, a: float, b: float) -> tuple[float, float]:
    """The X interval between ``|X| = a`` and ``|X| = b`` on ``side``, as (lo, hi)."""
    return (a, b) if side > 0 else (-b, -a)


def _crossing_free(scene: sc.Scene, z0: float, z1: float, margin: float) -> bool:
    c = scene.crossing
    return c is None or z1 <= c[0] - margin or z0 >= c[1] + margin
