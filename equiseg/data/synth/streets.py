"""Random streets for the synthetic generator: road layout, markings and every object (docs/design.md §9).

:func:`sample_scene` draws a right-hand-traffic street — 1–2 lanes each way (or one-way), optional
parking strips, grass verges, sidewalks, a side street with crosswalks and signals — lined with
buildings (walls, hedges, fences, front yards, parks in the gaps), street lamps, trees, traffic
signs, parked and moving cars and buses, parked two-wheelers and pedestrians, and where the camera
sits. Placement avoids overlaps with a simple footprint occupancy list.

The road users (vehicles, two-wheelers, pedestrians) are built in :mod:`equiseg.data.synth.road_users`,
the helpers both share (the rig, the footprint list) live in :mod:`equiseg.data.synth.placement`.
"""

from __future__ import annotations

import math

import numpy as np

from equiseg.data.synth import scene as sc
from equiseg.data.synth.placement import Rig, _crossing_free, _Occupancy, _pick, _side_x, _span
from equiseg.data.synth.road_users import _pedestrians, _traffic

_BUILDING_COLOURS = np.array(
    [[0.55, 0.45, 0.33], [0.42, 0.42, 0.42], [0.42, 0.19, 0.12], [0.68, 0.67, 0.63], [0.22, 0.22, 0.24],
     [0.30, 0.34, 0.42], [0.58, 0.50, 0.30], [0.50, 0.36, 0.28]], dtype=np.float32,
)  # fmt: skip


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
