"""Random streets for the synthetic generator: road layout, markings and every object (docs/design.md §9).

:func:`sample_scene` draws a right-hand-traffic street — 1–2 lanes each way (or one-way), optional
parking strips, grass verges, sidewalks, a side street with crosswalks and signals — lined with
buildings (walls, hedges, fences, front yards, parks in the gaps), street lamps, trees, traffic
signs, parked and moving cars and buses, parked two-wheelers and pedestrians, and where the camera
sits. Placement avoids overlaps with a simple footprint occupancy list.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from equiseg.data.synth import scene as sc

_BUILDING_COLOURS = np.array(
    [[0.55, 0.45, 0.33], [0.42, 0.42, 0.42], [0.42, 0.19, 0.12], [0.68, 0.67, 0.63], [0.22, 0.22, 0.24],
     [0.30, 0.34, 0.42], [0.58, 0.50, 0.30], [0.50, 0.36, 0.28]], dtype=np.float32,
)  # fmt: skip
_CAR_COLOURS = np.array(
    [[0.80, 0.80, 0.80], [0.03, 0.03, 0.035], [0.45, 0.46, 0.48], [0.20, 0.20, 0.21], [0.55, 0.05, 0.04],
     [0.05, 0.12, 0.40], [0.03, 0.05, 0.15], [0.10, 0.25, 0.12], [0.75, 0.55, 0.05], [0.65, 0.62, 0.55]],
    dtype=np.float32,
)  # fmt: skip
_CLOTH_COLOURS = np.array(
    [[0.03, 0.03, 0.03], [0.08, 0.10, 0.20], [0.35, 0.05, 0.05], [0.60, 0.60, 0.58], [0.15, 0.25, 0.10],
     [0.45, 0.35, 0.20], [0.10, 0.15, 0.35], [0.50, 0.30, 0.05], [0.25, 0.25, 0.27]], dtype=np.float32,
)  # fmt: skip
_SKIN_COLOURS = np.array([[0.60, 0.42, 0.32], [0.40, 0.26, 0.18], [0.20, 0.12, 0.08], [0.70, 0.52, 0.42]],
                         dtype=np.float32)  # fmt: skip


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


def sample_scene(rng: np.random.Generator) -> tuple[sc.Scene, Rig]:
    """Draw a random street: road layout, markings and all objects, plus the camera rig.

    Args:
        rng: the sample's generator; the scene is a pure function of its state.

    Returns:
        The scene and where the camera sits in it.
    """
    lane_w = rng.uniform(3.0, 3.6)
    n_right = int(rng.integers(1, 3))
    n_left = int(rng.choice([0, 1, 1, 2]))
    park_r = rng.uniform(2.1, 2.5) if rng.random() < 0.55 else 0.0
    park_l = rng.uniform(2.1, 2.5) if (n_left > 0 and rng.random() < 0.45) else 0.0
    right_edge = n_right * lane_w + park_r
    left_edge = -(n_left * lane_w + park_l) if n_left else -(0.3 + park_l)
    crossing = None
    if rng.random() < 0.4:
        z0 = rng.uniform(18.0, 55.0)
        crossing = (z0, z0 + rng.uniform(8.0, 13.0))
    lines: list[tuple[float, float, float, float, float, int]] = []
    two_way = n_left > 0
    if two_way:  # double yellow centre line
        lines += [(-0.12, 0.12, 0, 0, 0, sc.PID_PAINT_YELLOW), (0.12, 0.12, 0, 0, 0, sc.PID_PAINT_YELLOW)]
    for k in range(1, n_right):
        lines.append((k * lane_w, 0.14, 9.0, 3.0, rng.uniform(0, 9), sc.PID_PAINT_WHITE))
    for k in range(1, n_left):
        lines.append((-k * lane_w, 0.14, 9.0, 3.0, rng.uniform(0, 9), sc.PID_PAINT_WHITE))
    lines.append((n_right * lane_w - 0.1 if park_r else right_edge - 0.35, 0.15, 0, 0, 0, sc.PID_PAINT_WHITE))
    if two_way:
        lines.append(
            (-(n_left * lane_w) + 0.1 if park_l else left_edge + 0.35, 0.15, 0, 0, 0, sc.PID_PAINT_WHITE)
        )
    else:  # one-way street: solid edge line left of the leftmost lane
        lines.append((0.0, 0.15, 0, 0, 0, sc.PID_PAINT_WHITE))
    zebras, stops = [], []
    if crossing is not None:
        zebras += [(crossing[0] - 4.2, crossing[0] - 1.0), (crossing[1] + 1.0, crossing[1] + 4.2)]
        stops.append((crossing[0] - 5.0, crossing[0] - 4.55, 0.2, n_right * lane_w))
    elif rng.random() < 0.3:
        z0 = rng.uniform(10.0, 40.0)
        zebras.append((z0, z0 + 3.5))
    night_lamp = np.array([1.0, 0.72, 0.38] if rng.random() < 0.6 else [0.95, 0.95, 1.0], np.float32)
    scene = sc.Scene(
        lane_width=lane_w,
        left_edge=left_edge,
        right_edge=right_edge,
        curb=rng.uniform(0.10, 0.15),
        verge_left=rng.uniform(0.8, 2.0) if rng.random() < 0.35 else 0.0,
        verge_right=rng.uniform(0.8, 2.0) if rng.random() < 0.35 else 0.0,
        sidewalk_left=rng.uniform(2.0, 5.0),
        sidewalk_right=rng.uniform(2.0, 5.0),
        crossing=crossing,
        corner=rng.uniform(2.0, 4.0),
        lines=lines,
        zebras=zebras,
        stop_lines=stops,
        lamp_colour=night_lamp,
    )
    lane = int(rng.integers(0, n_right))
    rig = Rig(
        x=(lane + 0.5) * lane_w + rng.uniform(-0.35, 0.35),
        height=rng.uniform(1.45, 1.9),
        pitch=rng.uniform(-4.0, 1.0),
        yaw=rng.uniform(-7.0, 7.0),
    )

    blocked = _Occupancy()
    for side in (1, -1):
        _buildings(scene, rng, side)
        _street_furniture(scene, rng, side, blocked)
    _far_skyline(scene, rng)
    _traffic(scene, rng, lane_w, n_right, n_left, park_r, park_l, rig, blocked)
    _pedestrians(scene, rng, blocked)
    return scene, rig


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


def _buildings(scene: sc.Scene, rng: np.random.Generator, side: int) -> None:
    sw = scene.verge(side) + scene.sidewalk(side)  # raised strip in front of the building line
    edge = scene.right_edge if side > 0 else -scene.left_edge  # |X| of the curb
    z = rng.uniform(-18.0, -6.0)
    greenery = rng.uniform(0.0, 1.0)
    while z < 150.0:
        length = rng.uniform(8.0, 28.0)
        if scene.crossing is not None and not _crossing_free(scene, z, z + length, scene.corner):
            if z < scene.crossing[0] - scene.corner - 3.0:
                length = scene.crossing[0] - scene.corner - z
            else:
                z = scene.crossing[1] + scene.corner + rng.uniform(0.0, 3.0)
                continue
        if rng.random() < 0.15 + 0.15 * greenery:  # a gap: a park with trees
            gap = rng.uniform(5.0, 14.0)
            for _ in range(int(rng.integers(1, 4))):
                _tree(scene, rng, side * (edge + sw + rng.uniform(1.5, 9.0)), z + rng.uniform(0, gap))
            z += gap
            continue
        setback = 0.0 if rng.random() < 0.5 else rng.uniform(1.0, 7.0)
        height = float(np.clip(rng.lognormal(math.log(12.0), 0.5), 4.0, 45.0))
        face = edge + sw + setback
        x0, x1 = _span(side, face, face + rng.uniform(10.0, 20.0))
        colour = _pick(rng, _BUILDING_COLOURS, 0.15)
        floor_h = rng.uniform(2.8, 3.6)
        aux = (
            floor_h,
            rng.uniform(1.8, 3.8),
            rng.uniform(0.35, 0.65),
            rng.uniform(0.35, 0.6),
            rng.uniform(0, 100),
            rng.uniform(0.0, 1.0),
        )
        scene.box(
            (x0, 0.0, z),
            (x1, height, z + length),
            sc.BUILDING,
            sc.CS_BUILDING,
            sc.M_FACADE,
            colour,
            aux,
            caster=True,
        )
        if setback > 1.5:
            kind = rng.random()
            xa, xb = _span(side, edge + sw, edge + sw + (0.3 if kind < 0.7 else 0.05))
            if kind < 0.35:  # wall
                scene.box(
                    (xa, 0.0, z),
                    (xb, rng.uniform(0.7, 2.2), z + length),
                    sc.WALL,
                    sc.CS_WALL,
                    sc.M_WALL,
                    _pick(rng, _BUILDING_COLOURS, 0.2),
                    caster=True,
                )
            elif kind < 0.55:  # hedge
                xa, xb = _span(side, edge + sw, edge + sw + rng.uniform(0.6, 1.0))
                scene.box(
                    (xa, 0.0, z + 0.3),
                    (xb, rng.uniform(0.8, 1.4), z + length - 0.3),
                    sc.VEGETATION,
                    sc.CS_VEGETATION,
                    sc.M_LEAVES,
                    np.array([0.08, 0.17, 0.05], np.float32),
                    caster=True,
                )
            elif kind < 0.75:  # fence
                grey = rng.choice([0.25, 0.45, 0.12])
                scene.box(
                    (xa, 0.0, z),
                    (xb, rng.uniform(1.0, 1.9), z + length),
                    sc.FENCE,
                    sc.CS_FENCE,
                    sc.M_FENCE,
                    np.array([grey, grey * 1.05, grey], np.float32),
                    alpha=sc.A_MESH,
                )
            if rng.random() < greenery:
                _tree(scene, rng, side * (edge + sw + setback * rng.uniform(0.3, 0.7)), z + length / 2)
        z += length


def _far_skyline(scene: sc.Scene, rng: np.random.Generator) -> None:
    """Buildings across the end of the street, or nothing (the road runs to the horizon)."""
    if rng.random() < 0.35:
        return
    z = rng.uniform(110.0, 200.0)
    x = -140.0
    while x < 140.0:
        w = rng.uniform(15.0, 40.0)
        h = rng.uniform(12.0, 55.0)
        scene.box(
            (x, 0.0, z + rng.uniform(0, 30)),
            (x + w, h, z + 60.0),
            sc.BUILDING,
            sc.CS_BUILDING,
            sc.M_FACADE,
            _pick(rng, _BUILDING_COLOURS, 0.15),
            (3.2, 3.0, 0.5, 0.5, rng.uniform(0, 100), 0.5),
        )
        x += w


def _tree(scene: sc.Scene, rng: np.random.Generator, x: float, z: float) -> None:
    trunk = rng.uniform(1.8, 3.2)
    rx, ry = rng.uniform(1.3, 2.8), rng.uniform(1.6, 3.2)
    bark = np.array([0.16, 0.11, 0.07], np.float32) * rng.uniform(0.8, 1.2)
    leaves = np.array([0.07, 0.16, 0.04], np.float32) * rng.uniform(0.7, 1.3)
    scene.cylinder(
        1,
        x,
        z,
        rng.uniform(0.12, 0.25),
        0.0,
        trunk + ry * 0.5,
        sc.VEGETATION,
        sc.CS_VEGETATION,
        sc.M_BARK,
        bark,
    )
    scene.ellipsoid(
        (x, trunk + ry * 0.85, z),
        (rx, ry, rx * rng.uniform(0.85, 1.15)),
        sc.VEGETATION,
        sc.CS_VEGETATION,
        sc.M_LEAVES,
        leaves,
        alpha=sc.A_LEAVES,
        caster=True,
    )


def _street_furniture(scene: sc.Scene, rng: np.random.Generator, side: int, blocked: _Occupancy) -> None:
    """Street lamps, trees in sidewalk pits or verges, traffic signs and traffic lights along one curb."""
    verge, sw = scene.verge(side), scene.sidewalk(side)
    metal = np.array([0.32, 0.33, 0.34], np.float32)
    # street lamps: pole, arm over the road, lamp head
    z = rng.uniform(-5.0, 15.0)
    spacing = rng.uniform(18.0, 32.0)
    while z < 120.0:
        x = _side_x(scene, side, max(0.5, verge / 2))
        if _crossing_free(scene, z - 1, z + 1, 0.0) and blocked.take(x - 0.3, z - 0.3, x + 0.3, z + 0.3):
            h = rng.uniform(6.0, 8.5)
            arm = rng.uniform(1.2, 2.2)
            scene.cylinder(1, x, z, 0.11, 0.0, h, sc.POLE, sc.CS_POLE, sc.M_METAL, metal)
            xe = x - side * arm
            xa, xb = sorted((x, xe))
            scene.box((xa, h - 0.12, z - 0.05), (xb, h, z + 0.05), sc.POLE, sc.CS_POLE, sc.M_METAL, metal)
            scene.box(
                (xe - 0.3, h - 0.3, z - 0.15),
                (xe + 0.3, h - 0.1, z + 0.15),
                sc.POLE,
                sc.CS_POLE,
                sc.M_LAMP,
                np.array([0.6, 0.6, 0.55], np.float32),
            )
            scene.lamps.append((xe, h - 0.35, z))
        z += spacing
    # trees in sidewalk pits
    if rng.random() < 0.5:
        z = rng.uniform(0.0, 10.0)
        step = rng.uniform(8.0, 15.0)
        while z < 90.0:
            x = _side_x(scene, side, verge / 2 if verge else rng.uniform(0.8, max(0.9, sw - 1.0)))
            if _crossing_free(scene, z, z, scene.corner) and blocked.take(x - 0.5, z - 0.5, x + 0.5, z + 0.5):
                _tree(scene, rng, x, z)
            z += step
    # traffic signs
    for _ in range(int(rng.integers(1, 4))):
        z = rng.uniform(6.0, 60.0)
        x = _side_x(scene, side, rng.uniform(0.3, 0.7))
        if not (_crossing_free(scene, z, z, 0.5) and blocked.take(x - 0.3, z - 0.3, x + 0.3, z + 0.3)):
            continue
        size = rng.uniform(0.6, 0.9)
        bottom = rng.uniform(1.9, 2.5)
        kind = int(
            rng.integers(0, 5)
        )  # 0 red ring, 1 blue disk, 2 warning triangle, 3 blue square, 4 diamond
        alpha = (sc.A_DISK, sc.A_DISK, sc.A_TRIANGLE, sc.A_NONE, sc.A_DIAMOND)[kind]
        scene.cylinder(1, x, z + 0.05, 0.04, 0.0, bottom + size * 0.6, sc.POLE, sc.CS_POLE, sc.M_METAL, metal)
        scene.box(
            (x - size / 2, bottom, z),
            (x + size / 2, bottom + size, z + 0.03),
            sc.TRAFFICSIGN,
            sc.CS_SIGN,
            sc.M_SIGN,
            np.array([0.7, 0.7, 0.7], np.float32),
            (kind,),
            alpha=alpha,
        )
    # traffic lights at the near corner of a crossing (a mast arm over the road on the right) or at a
    # mid-block crosswalk
    signal_z = None
    if scene.crossing is not None:
        signal_z = scene.crossing[0] - rng.uniform(0.8, 1.5)
    elif scene.zebras:
        signal_z = scene.zebras[0][0] - rng.uniform(0.3, 0.8)
    if signal_z is not None and (side > 0 or rng.random() < 0.6):
        z = signal_z
        x = _side_x(scene, side, 0.5)
        if blocked.take(x - 0.3, z - 0.3, x + 0.3, z + 0.3):
            state = float(rng.integers(0, 3))
            if side > 0 and scene.crossing is not None and rng.random() < 0.6:  # mast arm over the lanes
                h = rng.uniform(5.2, 6.2)
                reach = rng.uniform(3.0, 6.0)
                scene.cylinder(1, x, z, 0.13, 0.0, h + 0.3, sc.POLE, sc.CS_POLE, sc.M_METAL, metal)
                scene.box(
                    (x - reach, h + 0.1, z - 0.07),
                    (x, h + 0.25, z + 0.07),
                    sc.POLE,
                    sc.CS_POLE,
                    sc.M_METAL,
                    metal,
                )
                xl = x - reach + 0.5
                scene.box(
                    (xl - 0.18, h - 0.9, z - 0.3),
                    (xl + 0.18, h + 0.1, z),
                    sc.TRAFFICLIGHT,
                    sc.CS_LIGHT,
                    sc.M_TLIGHT,
                    np.array([0.05, 0.05, 0.04], np.float32),
                    (state,),
                )
            else:
                h = rng.uniform(2.6, 3.3)
                scene.cylinder(1, x, z, 0.07, 0.0, h, sc.POLE, sc.CS_POLE, sc.M_METAL, metal)
                scene.box(
                    (x - 0.18, h, z - 0.3),
                    (x + 0.18, h + 1.0, z),
                    sc.TRAFFICLIGHT,
                    sc.CS_LIGHT,
                    sc.M_TLIGHT,
                    np.array([0.06, 0.06, 0.05], np.float32),
                    (state,),
                )


def _vehicle(scene: sc.Scene, rng: np.random.Generator, x: float, z: float, facing: int, bus: bool) -> float:
    """A car or a bus centred at ``x`` with its camera-facing end at ``z``; returns its length.

    ``facing`` is +1 for a vehicle driving away (its rear, with tail lights, faces the camera) and -1
    for an oncoming one (head lights face the camera).
    """
    lights = 2.0 if facing > 0 else 1.0
    if bus:
        length, width, height = rng.uniform(10.0, 12.5), 2.55, rng.uniform(2.9, 3.3)
        colour = _pick(rng, _CAR_COLOURS[[0, 4, 5, 8, 9]], 0.1)
        scene.box(
            (x - width / 2, 0.35, z),
            (x + width / 2, height, z + length),
            sc.BUS,
            sc.CS_BUS,
            sc.M_BUS,
            colour,
            (lights, x, width / 2, 0.35),
            caster=True,
        )
        for zw in (z + 2.3, z + length - 2.8):
            for xs in (x - width / 2 - 0.02, x + width / 2 - 0.28):
                scene.cylinder(
                    0,
                    0.5,
                    zw,
                    0.5,
                    xs,
                    xs + 0.3,
                    sc.BUS,
                    sc.CS_BUS,
                    sc.M_TIRE,
                    np.array([0.03] * 3, np.float32),
                )
        return length
    suv = rng.random() < 0.3
    length, width = rng.uniform(3.9, 4.9), rng.uniform(1.72, 1.95)
    body_top = rng.uniform(0.95, 1.1) + (0.2 if suv else 0.0)
    roof = body_top + rng.uniform(0.42, 0.55)
    colour = _pick(rng, _CAR_COLOURS, 0.1)
    scene.box(
        (x - width / 2, 0.28, z),
        (x + width / 2, body_top, z + length),
        sc.CARS,
        sc.CS_CAR,
        sc.M_CARPAINT,
        colour,
        (lights, x, width / 2, 0.28, body_top),
        caster=True,
    )
    cab0 = z + length * rng.uniform(0.22, 0.32) if facing > 0 else z + length * rng.uniform(0.3, 0.4)
    cab1 = cab0 + length * (0.55 if suv else rng.uniform(0.4, 0.48))
    inset = 0.08
    scene.box(
        (x - width / 2 + inset, body_top, cab0),
        (x + width / 2 - inset, roof, cab1),
        sc.CARS,
        sc.CS_CAR,
        sc.M_GLASS,
        colour,
        (roof,),
        caster=True,
    )
    for zw in (z + 0.8, z + length - 0.85):
        for xs in (x - width / 2 - 0.02, x + width / 2 - 0.2):
            scene.cylinder(
                0,
                0.33,
                zw,
                0.33,
                xs,
                xs + 0.22,
                sc.CARS,
                sc.CS_CAR,
                sc.M_TIRE,
                np.array([0.03] * 3, np.float32),
            )
    return length


def _traffic(scene, rng, lane_w, n_right, n_left, park_r, park_l, rig: Rig, blocked: _Occupancy) -> None:
    """Moving vehicles in the lanes, parked cars along the curbs and parked two-wheelers."""
    lanes = [((k + 0.5) * lane_w, 1) for k in range(n_right)] + [
        (-(k + 0.5) * lane_w, -1) for k in range(n_left)
    ]
    for xc, facing in lanes:
        ego = facing > 0 and abs(xc - rig.x) < lane_w / 2
        z = rng.uniform(9.0 if ego else 3.0, 25.0)
        while z < 110.0:
            if rng.random() < 0.55:
                bus = rng.random() < 0.12
                x = xc + rng.uniform(-0.3, 0.3)
                if blocked.free(x - 1.4, z - 0.5, x + 1.4, z + (13 if bus else 5.5)):
                    length = _vehicle(scene, rng, x, z, facing, bus)
                    blocked.take(x - 1.3, z - 0.3, x + 1.3, z + length + 0.3)
                    z += length
            z += rng.uniform(6.0, 25.0)
    for side, park in ((1, park_r), (-1, park_l)):
        if park <= 0:
            continue
        x = (scene.right_edge - park / 2) if side > 0 else (scene.left_edge + park / 2)
        z = rng.uniform(-2.0, 6.0)
        while z < 80.0:
            if (
                rng.random() < 0.65
                and _crossing_free(scene, z, z + 5, 4.5)
                and blocked.free(x - 1, z, x + 1, z + 5)
            ):
                length = _vehicle(
                    scene, rng, x + rng.uniform(-0.15, 0.15), z, 1 if rng.random() < 0.7 else -1, False
                )
                blocked.take(x - 1.1, z, x + 1.1, z + length)
                z += length
            z += rng.uniform(0.8, 6.0)
    for _ in range(int(rng.integers(0, 4))):  # parked bicycles / motorcycles on the sidewalks
        side = 1 if rng.random() < 0.6 else -1
        sw = scene.sidewalk(side)
        x = _side_x(scene, side, scene.verge(side) + rng.uniform(0.6, max(0.7, sw - 0.8)))
        z = rng.uniform(4.0, 35.0)
        if _crossing_free(scene, z, z + 2, 1.0) and blocked.take(x - 0.4, z - 0.1, x + 0.4, z + 2.0):
            _two_wheeler(scene, rng, x, z, scene.curb)


def _two_wheeler(scene: sc.Scene, rng: np.random.Generator, x: float, z: float, base: float) -> None:
    motor = rng.random() < 0.4
    cs = sc.CS_MOTORCYCLE if motor else sc.CS_BICYCLE
    colour = _pick(rng, _CAR_COLOURS, 0.2)
    r = 0.3 if motor else 0.34
    wheel_w = 0.12 if motor else 0.05
    wheelbase = 1.4 if motor else 1.05
    tyre = np.array([0.03, 0.03, 0.03], np.float32)
    for zw in (z + r, z + r + wheelbase):
        scene.cylinder(
            0, base + r, zw, r, x - wheel_w / 2, x + wheel_w / 2, sc.TWOWHEELER, cs, sc.M_TIRE, tyre, (1.0,)
        )
    if motor:
        scene.box(
            (x - 0.18, base + 0.35, z + r),
            (x + 0.18, base + 0.85, z + r + wheelbase),
            sc.TWOWHEELER,
            cs,
            sc.M_CARPAINT,
            colour,
            (0.0, x, 0.18, base + 0.35, base + 0.85),
        )
    else:
        scene.box(
            (x - 0.03, base + r + 0.05, z + r),
            (x + 0.03, base + r + 0.45, z + r + wheelbase),
            sc.TWOWHEELER,
            cs,
            sc.M_METAL,
            colour,
        )
    scene.box(
        (x - 0.3, base + 0.95, z + r + wheelbase - 0.08),
        (x + 0.3, base + 1.0, z + r + wheelbase),
        sc.TWOWHEELER,
        cs,
        sc.M_METAL,
        np.array([0.1, 0.1, 0.1], np.float32),
    )  # handlebar


def _person(
    scene: sc.Scene, rng: np.random.Generator, x: float, z: float, base: float, along_z: bool
) -> None:
    h = rng.uniform(1.55, 1.92)
    shirt = _pick(rng, _CLOTH_COLOURS, 0.2)
    pants = _pick(rng, _CLOTH_COLOURS[[0, 1, 6, 8, 5]], 0.2)
    skin = _pick(rng, _SKIN_COLOURS, 0.1)
    hair = np.array([0.04, 0.03, 0.02], np.float32) * rng.uniform(0.5, 3.0)
    leg_h, torso_h = 0.47 * h, 0.32 * h
    stride = rng.uniform(-0.25, 0.25)
    hw, hd = 0.21, 0.13  # half width (across the walking direction) and half depth of the torso

    def rect(c_across: float, c_along: float, half_across: float, half_along: float):
        if along_z:
            return (x + c_across - half_across, z + c_along - half_along), (
                x + c_across + half_across,
                z + c_along + half_along,
            )
        return (x + c_along - half_along, z + c_across - half_across), (
            x + c_along + half_along,
            z + c_across + half_across,
        )

    for s, side in ((stride, -1), (-stride, 1)):
        (xa, za), (xb, zb) = rect(side * 0.1, s / 2, 0.07, 0.08)
        scene.box((xa, base, za), (xb, base + leg_h, zb), sc.PEDESTRIAN, sc.CS_PERSON, sc.M_CLOTH, pants)
    (xa, za), (xb, zb) = rect(0.0, 0.0, hw, hd)
    scene.box(
        (xa, base + leg_h, za),
        (xb, base + leg_h + torso_h, zb),
        sc.PEDESTRIAN,
        sc.CS_PERSON,
        sc.M_CLOTH,
        shirt,
    )
    for side in (-1, 1):
        (xa, za), (xb, zb) = rect(side * (hw + 0.05), -side * stride / 3, 0.045, 0.05)
        scene.box(
            (xa, base + leg_h + 0.02, za),
            (xb, base + leg_h + torso_h - 0.02, zb),
            sc.PEDESTRIAN,
            sc.CS_PERSON,
            sc.M_CLOTH,
            shirt,
        )
    top = base + leg_h + torso_h
    scene.ellipsoid((x, top + 0.12, z), (0.095, 0.125, 0.105), sc.PEDESTRIAN, sc.CS_PERSON, sc.M_SKIN, skin)
    scene.ellipsoid(
        (x, top + 0.17, z + (0.015 if along_z else 0)),
        (0.1, 0.09, 0.11),
        sc.PEDESTRIAN,
        sc.CS_PERSON,
        sc.M_CLOTH,
        hair,
    )


def _pedestrians(scene: sc.Scene, rng: np.random.Generator, blocked: _Occupancy) -> None:
    for side in (1, -1):
        for _ in range(int(rng.poisson(2.5))):
            x = _side_x(scene, side, scene.verge(side) + rng.uniform(0.5, scene.sidewalk(side) - 0.4))
            z = rng.uniform(3.0, 45.0)
            if blocked.take(x - 0.35, z - 0.35, x + 0.35, z + 0.35):
                _person(scene, rng, x, z, scene.curb, along_z=rng.random() < 0.8)
    for z0, z1 in scene.zebras:
        for _ in range(int(rng.integers(0, 4))):
            x = rng.uniform(scene.left_edge + 0.5, scene.right_edge - 0.5)
            z = rng.uniform(z0 + 0.4, z1 - 0.4)
            if blocked.take(x - 0.35, z - 0.35, x + 0.35, z + 0.35):
                _person(scene, rng, x, z, 0.0, along_z=False)
