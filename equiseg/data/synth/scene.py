"""Street-scene geometry of the synthetic generator: the scene description and its ray casting
(docs/design.md §9).

World frame: X to the right, Y up, Z forward along the road, in metres. The road is the plane
``Y = 0``; everything that is not road (sidewalks, verges, the ground under buildings) is raised by a
curb of 10–15 cm. The road runs along Z from the camera to the horizon, optionally crossed by a side
street. Every object is an axis-aligned box, a cylinder (poles, trunks, wheels) or an ellipsoid (tree
crowns, heads), so one ray cast against the analytic ground plus a z-buffer over the primitives gives
exact per-pixel class, planar depth, surface normal and world point. A primitive is only tested on the
pixels of its projected bounding rectangle, which keeps a 256×256 scene of ~150 primitives at a few
tens of milliseconds. :mod:`equiseg.data.synth.streets` samples the scenes.

Primitive ids 0–7 are the ground and the sky (:data:`GROUND_IDS`); objects start at
:data:`FIRST_OBJECT`. Per-primitive tables (class, Cityscapes train id, material, colour, auxiliary
parameters) are indexed by id, so materials are shaded per material, not per primitive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# --- classes: DeLiVER indices and Cityscapes train ids (MUSES); docs/design.md §4.1, §4.2 -----------
BUILDING, FENCE, PEDESTRIAN, POLE, ROADLINE, ROAD, SIDEWALK, VEGETATION = 0, 1, 3, 4, 5, 6, 7, 8
CARS, WALL, TRAFFICSIGN, SKY, TRAFFICLIGHT, TERRAIN, TWOWHEELER, BUS = 9, 10, 11, 12, 17, 21, 22, 23

CS_ROAD, CS_SIDEWALK, CS_BUILDING, CS_WALL, CS_FENCE, CS_POLE, CS_LIGHT, CS_SIGN = 0, 1, 2, 3, 4, 5, 6, 7
CS_VEGETATION, CS_TERRAIN, CS_SKY, CS_PERSON, CS_CAR, CS_BUS, CS_MOTORCYCLE, CS_BICYCLE = (
    8, 9, 10, 11, 13, 15, 17, 18,
)  # fmt: skip

# --- materials: how a surface is textured and shaded (equiseg.data.synth.render) ----------------
(
    M_SKY, M_ROAD, M_PAINT, M_SIDEWALK, M_TERRAIN, M_CURB, M_FACADE, M_WALL, M_FENCE, M_LEAVES,
    M_BARK, M_METAL, M_SIGN, M_TLIGHT, M_CARPAINT, M_GLASS, M_TIRE, M_CLOTH, M_SKIN, M_LAMP, M_BUS,
) = range(21)  # fmt: skip
NUM_MATERIALS = 21

# --- primitive shapes ---------------------------------------------------------------------------
S_BOX, S_CYLINDER, S_ELLIPSOID = 0, 1, 2

# --- alpha shapes of thin plates (cut-outs tested on the hit point) ---------------------------
A_NONE, A_MESH, A_DISK, A_TRIANGLE, A_DIAMOND, A_LEAVES = 0, 1, 2, 3, 4, 5

# Ground / sky pseudo-primitives.
PID_SKY, PID_ROAD, PID_PAINT_WHITE, PID_PAINT_YELLOW, PID_SIDEWALK, PID_TERRAIN, PID_CURB = range(7)
GROUND_IDS = (PID_ROAD, PID_PAINT_WHITE, PID_PAINT_YELLOW, PID_SIDEWALK, PID_TERRAIN, PID_CURB)
FIRST_OBJECT = 8

NEAR = 0.05  # metres: nearer hits are ignored


@dataclass
class Camera:
    """A pinhole camera: square pixels, principal point at the image centre, no roll.

    Attributes:
        height: image rows.
        width: image columns.
        focal: focal length in pixels.
        pos: (3,) position in the world.
        rot: (3, 3) camera-to-world rotation; its columns are the camera's right, up and forward axes.
    """

    height: int
    width: int
    focal: float
    pos: np.ndarray
    rot: np.ndarray

    @classmethod
    def looking_down_road(
        cls, height: int, width: int, *, hfov_deg: float, x: float, y: float, pitch_deg: float, yaw_deg: float
    ) -> Camera:
        """A camera at ``(x, y, 0)`` looking along +Z, turned by ``yaw`` (to the right) and ``pitch`` (up)."""
        focal = width / (2.0 * math.tan(math.radians(hfov_deg) / 2.0))
        p, q = math.radians(pitch_deg), math.radians(yaw_deg)
        pitch = np.array([[1, 0, 0], [0, math.cos(p), math.sin(p)], [0, -math.sin(p), math.cos(p)]])
        yaw = np.array([[math.cos(q), 0, math.sin(q)], [0, 1, 0], [-math.sin(q), 0, math.cos(q)]])
        return cls(height, width, focal, np.array([x, y, 0.0]), yaw @ pitch)

    @property
    def cx(self) -> float:
        return self.width / 2.0

    @property
    def cy(self) -> float:
        return self.height / 2.0

    def rays(self) -> np.ndarray:
        """World directions of the pixel centres, scaled so that their camera-z is 1.

        Returns:
            (3, H, W) float32; ``pos + t * rays`` is at planar depth ``t``.
        """
        xc = ((np.arange(self.width) + 0.5 - self.cx) / self.focal).astype(np.float32)
        yc = (-(np.arange(self.height) + 0.5 - self.cy) / self.focal).astype(np.float32)
        r = self.rot.astype(np.float32)
        return (
            r[:, 0, None, None] * xc[None, None, :]
            + r[:, 1, None, None] * yc[None, :, None]
            + r[:, 2, None, None]
        )

    def to_camera(self, pts: np.ndarray) -> np.ndarray:
        """World points (n, 3) → camera coordinates (n, 3): x right, y up, z forward."""
        return (pts - self.pos) @ self.rot

    def pixel_rect(self, corners: np.ndarray) -> tuple[int, int, int, int] | None:
        """Rows and columns ``(i0, i1, j0, j1)`` covering the projection of a convex hull of ``corners``.

        ``None`` when it is entirely behind the camera or outside the image.
        """
        pc = self.to_camera(corners)
        z = pc[:, 2]
        if (z < NEAR).all():
            return None
        if (z < NEAR).any():  # straddles the camera plane: no finite bound
            return 0, self.height, 0, self.width
        u = self.cx + self.focal * pc[:, 0] / z
        v = self.cy - self.focal * pc[:, 1] / z
        j0, j1 = max(0, math.floor(u.min() - 0.5)), min(self.width, math.ceil(u.max() - 0.5) + 1)
        i0, i1 = max(0, math.floor(v.min() - 0.5)), min(self.height, math.ceil(v.max() - 0.5) + 1)
        if j0 >= j1 or i0 >= i1:
            return None
        return i0, i1, j0, j1


@dataclass
class Scene:
    """Everything the renderer needs to know about one street scene.

    Attributes:
        lane_width: width of a lane (lanes are centred at ``(k + 0.5) · lane_width``, ``k`` ∈ ℤ).
        left_edge, right_edge: X of the road's curbs (left negative).
        curb: height of everything that is not road.
        verge_left, verge_right: grass strips between the curbs and the sidewalks (0 = none).
        sidewalk_left, sidewalk_right: sidewalk widths beyond the verges.
        crossing: (z0, z1) of a side street crossing the road, or None.
        corner: sidewalk width around the crossing's corners.
        lines: road markings along Z: (x, width, dash period (0 = solid), dash length, phase, pid).
        zebras: crosswalks (z0, z1); stripes run along Z across the whole road.
        stop_lines: (z0, z1, x0, x1) solid white bars across lanes.
        lamps: (n, 3) street-lamp light positions (lit at night).
        lamp_colour: (3,) their colour.
    """

    lane_width: float
    left_edge: float
    right_edge: float
    curb: float
    verge_left: float
    verge_right: float
    sidewalk_left: float
    sidewalk_right: float
    crossing: tuple[float, float] | None
    corner: float
    lines: list[tuple[float, float, float, float, float, int]]
    zebras: list[tuple[float, float]]
    stop_lines: list[tuple[float, float, float, float]]
    lamp_colour: np.ndarray
    shape: list[int] = field(default_factory=list)
    params: list[tuple[float, ...]] = field(default_factory=list)
    cls: list[int] = field(default_factory=list)
    cs: list[int] = field(default_factory=list)
    mat: list[int] = field(default_factory=list)
    colour: list[np.ndarray] = field(default_factory=list)
    aux: list[tuple[float, ...]] = field(default_factory=list)
    alpha: list[int] = field(default_factory=list)
    caster: list[bool] = field(default_factory=list)
    lamps: list[tuple[float, float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Pseudo-primitives 0..7: sky and ground. Their colours are set by the renderer.
        ground = [
            (SKY, CS_SKY, M_SKY), (ROAD, CS_ROAD, M_ROAD), (ROADLINE, CS_ROAD, M_PAINT),
            (ROADLINE, CS_ROAD, M_PAINT), (SIDEWALK, CS_SIDEWALK, M_SIDEWALK),
            (TERRAIN, CS_TERRAIN, M_TERRAIN), (SIDEWALK, CS_SIDEWALK, M_CURB), (SKY, CS_SKY, M_SKY),
        ]  # fmt: skip
        paint = {PID_PAINT_WHITE: (0.80, 0.80, 0.78), PID_PAINT_YELLOW: (0.75, 0.55, 0.08)}
        for pid, (c, s, m) in enumerate(ground):
            self._append(
                -1, (0.0,) * 6, c, s, m, np.array(paint.get(pid, (0.5, 0.5, 0.5)), np.float32), (), 0
            )

    # --- building the primitive list ----------------------------------------------------------
    def _append(self, shape, params, cls, cs, mat, colour, aux, alpha, caster=False) -> int:
        self.shape.append(shape)
        self.params.append(tuple(float(v) for v in params))
        self.cls.append(cls)
        self.cs.append(cs)
        self.mat.append(mat)
        self.colour.append(np.asarray(colour, np.float32))
        self.aux.append(tuple(float(v) for v in aux) + (0.0,) * (6 - len(aux)))
        self.alpha.append(alpha)
        self.caster.append(caster)
        return len(self.shape) - 1

    def box(self, lo, hi, cls, cs, mat, colour, aux=(), alpha=A_NONE, caster=False) -> int:
        """Add an axis-aligned box ``lo``–``hi`` (x, y, z)."""
        return self._append(S_BOX, (*lo, *hi), cls, cs, mat, colour, aux, alpha, caster)

    def cylinder(self, axis, c1, c2, radius, a0, a1, cls, cs, mat, colour, aux=()) -> int:
        """Add a capped cylinder along ``axis`` (0 x, 1 y, 2 z) spanning ``a0``–``a1`` on it.

        ``c1, c2`` are its centre on the two other axes in x, y, z order.
        """
        return self._append(S_CYLINDER, (axis, c1, c2, radius, a0, a1), cls, cs, mat, colour, aux, A_NONE)

    def ellipsoid(self, centre, radii, cls, cs, mat, colour, aux=(), alpha=A_NONE, caster=False) -> int:
        """Add an ellipsoid with the given centre and semi-axes (``alpha=A_LEAVES``: a ragged outline)."""
        return self._append(S_ELLIPSOID, (*centre, *radii), cls, cs, mat, colour, aux, alpha, caster)

    def tables(self) -> dict[str, np.ndarray]:
        """Per-primitive arrays indexed by primitive id."""
        return {
            "shape": np.array(self.shape, np.int64),
            "params": np.array(self.params, np.float64),
            "cls": np.array(self.cls, np.int64),
            "cs": np.array(self.cs, np.int64),
            "mat": np.array(self.mat, np.int64),
            "colour": np.stack(self.colour).astype(np.float32),
            "aux": np.array(self.aux, np.float32),
        }

    def verge(self, side: int) -> float:
        """Width of the grass strip at the curb on ``side`` (+1 right, -1 left)."""
        return self.verge_right if side > 0 else self.verge_left

    def sidewalk(self, side: int) -> float:
        """Width of the sidewalk on ``side``."""
        return self.sidewalk_right if side > 0 else self.sidewalk_left

    # --- ground --------------------------------------------------------------------------------
    def in_crossing(self, z: np.ndarray) -> np.ndarray:
        if self.crossing is None:
            return np.zeros(z.shape, bool)
        return (z >= self.crossing[0]) & (z <= self.crossing[1])

    def is_road(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        return ((x >= self.left_edge) & (x <= self.right_edge)) | self.in_crossing(z)

    def raised_ids(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Sidewalk or terrain for points of the raised (non-road) ground."""
        r0, l0 = self.right_edge + self.verge_right, self.left_edge - self.verge_left
        side = ((x > r0) & (x <= r0 + self.sidewalk_right)) | ((x < l0) & (x >= l0 - self.sidewalk_left))
        if self.crossing is not None:  # sidewalks wrap around the corners of the side street
            z0, z1 = self.crossing
            side |= ((z >= z0 - self.corner) & (z < z0)) | ((z > z1) & (z <= z1 + self.corner))
        return np.where(side, PID_SIDEWALK, PID_TERRAIN).astype(np.int32)

    def road_ids(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Road or lane-marking paint for points of the road plane."""
        pid = np.full(x.shape, PID_ROAD, np.int32)
        main = (x >= self.left_edge) & (x <= self.right_edge) & ~self.in_crossing(z)
        for x0, width, period, dash, phase, paint in self.lines:
            on = main & (np.abs(x - x0) <= width / 2)
            if period > 0:
                on &= np.mod(z - phase, period) < dash
            pid[on] = paint
        for z0, z1 in self.zebras:
            on = (z >= z0) & (z <= z1) & (x >= self.left_edge + 0.3) & (x <= self.right_edge - 0.3)
            pid[on & (np.mod(x, 1.1) < 0.55)] = PID_PAINT_WHITE
        for z0, z1, x0, x1 in self.stop_lines:
            pid[(z >= z0) & (z <= z1) & (x >= x0) & (x <= x1)] = PID_PAINT_WHITE
        return pid


@dataclass
class GBuffer:
    """The result of ray casting a scene: per pixel, the first surface hit.

    Attributes:
        t: (H, W) float32 planar depth in metres (camera z), ``inf`` for sky.
        pid: (H, W) int32 primitive id (0 = sky).
        normal: (3, H, W) float32 world-space unit normal (0 for sky).
        point: (3, H, W) float32 world position (0 for sky).
        rays: (3, H, W) float32 ray directions (camera-z = 1).
    """

    t: np.ndarray
    pid: np.ndarray
    normal: np.ndarray
    point: np.ndarray
    rays: np.ndarray


# --- ray casting ---------------------------------------------------------------------------------
def _cast_ground(scene: Scene, cam: Camera, d: np.ndarray) -> tuple[np.ndarray, ...]:
    """Road plane ``Y = 0``, raised ground ``Y = curb`` and the curb faces between them."""
    o = cam.pos.astype(np.float32)
    dx, dy, dz = d
    down = dy < -1e-6
    inv = np.where(down, -1.0 / np.where(down, dy, -1.0), np.inf).astype(np.float32)
    t_road = o[1] * inv
    t_raise = (o[1] - scene.curb) * inv
    with np.errstate(invalid="ignore"):
        x1, z1 = o[0] + t_raise * dx, o[2] + t_raise * dz
        x0, z0 = o[0] + t_road * dx, o[2] + t_road * dz
        x1, z1, x0, z0 = (np.where(down, v, 0.0) for v in (x1, z1, x0, z0))  # no ground above the horizon
        raised1 = down & ~scene.is_road(x1, z1)
        raised0 = down & ~scene.is_road(x0, z0)
    t = np.where(raised1, t_raise, t_road)
    pid = np.where(raised1, scene.raised_ids(x1, z1), scene.road_ids(x0, z0))
    pid[~down] = PID_SKY
    t[~down] = np.inf
    normal = np.zeros((3, *t.shape), np.float32)
    normal[1] = 1.0
    # Rays that pass over the road edge at curb height but land beyond it hit a curb face: find the
    # face plane (a road edge in X or a crossing edge in Z) they cross between the two planes.
    curb = down & ~raised1 & raised0
    if curb.any():
        cx, cz = dx[curb], dz[curb]
        lo, hi = t_raise[curb], t_road[curb]
        best = np.full(cx.shape, np.inf, np.float32)
        axis = np.zeros(cx.shape, np.int64)
        planes = [(0, scene.left_edge), (0, scene.right_edge)]
        if scene.crossing is not None:
            planes += [(2, scene.crossing[0]), (2, scene.crossing[1])]
        for ax, value in planes:
            comp = cx if ax == 0 else cz
            with np.errstate(divide="ignore", invalid="ignore"):
                tf = (value - o[ax]) / comp
            ok = (tf >= lo - 1e-4) & (tf <= hi + 1e-4) & (tf < best)
            best = np.where(ok, tf, best)
            axis = np.where(ok, ax, axis)
        best = np.where(np.isfinite(best), best, hi)
        t[curb] = best
        pid[curb] = PID_CURB
        n = np.zeros((3, cx.size), np.float32)
        n[0] = np.where(axis == 0, -np.sign(cx), 0.0)
        n[2] = np.where(axis == 2, -np.sign(cz), 0.0)
        n[1] = np.where((n[0] == 0) & (n[2] == 0), 1.0, 0.0)
        normal[:, curb] = n
    normal[:, ~down] = 0.0
    return t.astype(np.float32), pid.astype(np.int32), normal


def _hit_box(o, d, inv, p):
    """Slab test of rays against box ``p = (x0, y0, z0, x1, y1, z1)``: entry t, hit mask, normal."""
    tnear, tfar, axis = None, None, None
    for a in range(3):
        t0 = (p[a] - o[a]) * inv[a]
        t1 = (p[a + 3] - o[a]) * inv[a]
        lo, hi = np.minimum(t0, t1), np.maximum(t0, t1)
        if tnear is None:
            tnear, tfar, axis = lo, hi, np.zeros(lo.shape, np.int8)
        else:
            bigger = lo > tnear
            axis = np.where(bigger, np.int8(a), axis)
            tnear = np.maximum(tnear, lo)
            tfar = np.minimum(tfar, hi)
    hit = (tfar >= tnear) & (tnear > NEAR)
    normal = np.zeros((3, *tnear.shape), np.float32)
    for a in range(3):
        normal[a] = np.where(axis == a, -np.sign(d[a]), 0.0)
    return tnear, hit, normal


def _hit_cylinder(o, d, p):
    """Rays against a capped cylinder ``p = (axis, c1, c2, r, a0, a1)``."""
    ax = int(p[0])
    b, c = [i for i in range(3) if i != ax]
    r = p[3]
    ob, oc = o[b] - p[1], o[c] - p[2]
    db, dc, da = d[b], d[c], d[ax]
    qa = db * db + dc * dc
    qb = 2.0 * (ob * db + oc * dc)
    qc = ob * ob + oc * oc - r * r
    disc = qb * qb - 4.0 * qa * qc
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (-qb - np.sqrt(np.maximum(disc, 0.0))) / (2.0 * np.maximum(qa, 1e-12))
    along = o[ax] + t * da
    side = (disc >= 0) & (t > NEAR) & (along >= p[4]) & (along <= p[5])
    t = np.where(side, t, np.inf)
    cap_axis = np.zeros(t.shape, bool)
    for a_cap in (p[4], p[5]):
        with np.errstate(invalid="ignore", divide="ignore"):
            tc = (a_cap - o[ax]) / np.where(np.abs(da) > 1e-12, da, 1e-12)
        eb, ec = ob + tc * db, oc + tc * dc
        ok = (tc > NEAR) & (eb * eb + ec * ec <= r * r) & (tc < t)
        t = np.where(ok, tc, t)
        cap_axis |= ok
    hit = np.isfinite(t)
    normal = np.zeros((3, *t.shape), np.float32)
    with np.errstate(invalid="ignore"):
        normal[b] = np.where(cap_axis, 0.0, (ob + t * db) / r)
        normal[c] = np.where(cap_axis, 0.0, (oc + t * dc) / r)
    normal[ax] = np.where(cap_axis, -np.sign(da), 0.0)
    return t, hit, normal


def _hit_ellipsoid(o, d, p):
    """Rays against an ellipsoid ``p = (cx, cy, cz, rx, ry, rz)``."""
    oo = [(o[a] - p[a]) / p[a + 3] for a in range(3)]
    dd = [d[a] / p[a + 3] for a in range(3)]
    qa = dd[0] * dd[0] + dd[1] * dd[1] + dd[2] * dd[2]
    qb = 2.0 * (oo[0] * dd[0] + oo[1] * dd[1] + oo[2] * dd[2])
    qc = oo[0] ** 2 + oo[1] ** 2 + oo[2] ** 2 - 1.0
    disc = qb * qb - 4.0 * qa * qc
    t = (-qb - np.sqrt(np.maximum(disc, 0.0))) / (2.0 * qa)
    hit = (disc >= 0) & (t > NEAR)
    n = np.stack([(oo[a] + t * dd[a]) / p[a + 3] for a in range(3)])
    n /= np.maximum(np.sqrt((n * n).sum(0)), 1e-6)
    return t, hit, n.astype(np.float32)


def _alpha_keep(kind: int, p: tuple[float, ...], x, y, z) -> np.ndarray:
    """Which hits on a cut-out surface are solid (``kind`` one of the ``A_*`` codes)."""
    if kind == A_MESH:  # a fence along Z: posts every 2 m, top and bottom rails, a 25 cm mesh
        y0, y1 = p[1], p[4]
        frame = (y > y1 - 0.07) | (y < y0 + 0.07) | (np.mod(z, 2.0) < 0.08)
        return frame | (np.mod(z, 0.25) < 0.06) | (np.mod(y - y0, 0.25) < 0.06)
    # plates facing Z: local coordinates in [-1, 1]
    u = (x - (p[0] + p[3]) / 2) / ((p[3] - p[0]) / 2)
    v = (y - (p[1] + p[4]) / 2) / ((p[4] - p[1]) / 2)
    if kind == A_DISK:
        return u * u + v * v <= 1.0
    if kind == A_TRIANGLE:
        return np.abs(u) <= (1.0 - v) / 2.0 + 1e-3
    if kind == A_DIAMOND:
        return np.abs(u) + np.abs(v) <= 1.0
    return np.ones(np.shape(x), bool)


def _corners(shape: int, p: tuple[float, ...]) -> np.ndarray:
    if shape == S_BOX:
        lo, hi = p[:3], p[3:]
    elif shape == S_ELLIPSOID:
        lo = [p[a] - p[a + 3] for a in range(3)]
        hi = [p[a] + p[a + 3] for a in range(3)]
    else:
        ax = int(p[0])
        b, c = [i for i in range(3) if i != ax]
        lo, hi = [0.0] * 3, [0.0] * 3
        lo[ax], hi[ax] = p[4], p[5]
        lo[b], hi[b] = p[1] - p[3], p[1] + p[3]
        lo[c], hi[c] = p[2] - p[3], p[2] + p[3]
    return np.array(
        [[(lo, hi)[i][0], (lo, hi)[j][1], (lo, hi)[k][2]] for i in (0, 1) for j in (0, 1) for k in (0, 1)],
        np.float64,
    )


def cast(scene: Scene, cam: Camera) -> GBuffer:
    """Ray cast ``scene`` from ``cam``: the ground analytically, then every primitive into a z-buffer."""
    d = cam.rays()
    t, pid, normal = _cast_ground(scene, cam, d)
    safe = np.where(np.abs(d) > 1e-9, d, np.float32(1e-9))
    inv = (1.0 / safe).astype(np.float32)
    o = cam.pos
    for k in range(FIRST_OBJECT, len(scene.shape)):
        shape, p = scene.shape[k], scene.params[k]
        rect = cam.pixel_rect(_corners(shape, p))
        if rect is None:
            continue
        i0, i1, j0, j1 = rect
        ds = d[:, i0:i1, j0:j1]
        if shape == S_BOX:
            tk, hit, nk = _hit_box(o, ds, inv[:, i0:i1, j0:j1], p)
        elif shape == S_CYLINDER:
            tk, hit, nk = _hit_cylinder(o, ds, p)
        else:
            tk, hit, nk = _hit_ellipsoid(o, ds, p)
        zs = t[i0:i1, j0:j1]
        upd = hit & (tk < zs)
        if scene.alpha[k] == A_LEAVES and upd.any():  # ragged crowns: leaf clumps missing near the outline
            tu, du = tk[upd], ds[:, upd]
            cos = np.abs((nk[:, upd] * du).sum(0)) / np.sqrt((du * du).sum(0))
            hit_pt = o[:, None] + tu * du
            cell = np.array([7.919, 10.4729, 12.99709]) @ np.floor(hit_pt / 0.35)
            upd[upd] = cos > 0.15 + 0.45 * np.mod(np.sin(cell) * 437.585453, 1.0)
        elif scene.alpha[k] != A_NONE and upd.any():
            tu = tk[upd]
            keep = _alpha_keep(
                scene.alpha[k], p, o[0] + tu * ds[0][upd], o[1] + tu * ds[1][upd], o[2] + tu * ds[2][upd]
            )
            upd[upd] = keep
        if not upd.any():
            continue
        zs[upd] = tk[upd]
        pid[i0:i1, j0:j1][upd] = k
        normal[:, i0:i1, j0:j1][:, upd] = nk[:, upd]
    finite = np.isfinite(t)
    point = np.where(finite[None], cam.pos.astype(np.float32)[:, None, None] + np.where(finite, t, 0) * d, 0)
    return GBuffer(t=t, pid=pid, normal=normal, point=point.astype(np.float32), rays=d)
