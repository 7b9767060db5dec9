"""The road users of a synthetic street (docs/design.md §9): moving and parked cars and buses, parked
two-wheelers and pedestrians, placed where the footprint list has room
(:func:`~equiseg.data.synth.streets.sample_scene` calls them once the street sides are built)."""

from __future__ import annotations

import numpy as np

from equiseg.data.synth import scene as sc
from equiseg.data.synth.placement import Rig, _crossing_free, _Occupancy, _pick, _side_x

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
