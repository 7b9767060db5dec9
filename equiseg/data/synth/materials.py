"""Materials of the synthetic scenes (docs/design.md §9): per-pixel albedo, emission, gloss and lidar
reflectivity of every visible surface -- asphalt and paint, paving, grass, facades with windows, signs,
traffic lights, vehicles -- with procedural value noise, wetness and snow cover from the :class:`Look`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from equiseg.data.synth import scene as sc
from equiseg.data.synth.look import Look, _v


class ValueNoise:
    """Smooth 2-D value noise on a random 256×256 lattice (vectorised; values in [-1, 1])."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.table = rng.random((256, 256), dtype=np.float32) * 2.0 - 1.0

    def __call__(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        xf, yf = np.floor(x), np.floor(y)
        fx, fy = (x - xf).astype(np.float32), (y - yf).astype(np.float32)
        fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
        xi, yi = xf.astype(np.int64) & 255, yf.astype(np.int64) & 255
        xj, yj = (xi + 1) & 255, (yi + 1) & 255
        t = self.table
        a, b, c, d = t[yi, xi], t[yi, xj], t[yj, xi], t[yj, xj]
        return a + (b - a) * fx + (c - a) * fy + (a - b - c + d) * fx * fy

    def fbm(self, x: np.ndarray, y: np.ndarray, octaves: int = 3) -> np.ndarray:
        out = np.zeros(np.shape(x), np.float32)
        amp, norm = 1.0, 0.0
        for k in range(octaves):
            out += amp * self(x * (2**k) + 17.3 * k, y * (2**k) - 9.1 * k)
            norm += amp
            amp *= 0.5
        return out / norm


def _hash01(*ints: np.ndarray) -> np.ndarray:
    """A deterministic per-cell pseudo-random value in [0, 1) from integer cell coordinates."""
    h = np.zeros(np.shape(ints[0]), np.int64)
    for k, v in zip((73856093, 19349663, 83492791, 2654435761), ints, strict=False):
        h ^= np.asarray(v, np.int64) * k
    h = (h ^ (h >> 13)) * 1274126177
    return ((h ^ (h >> 16)) & 0xFFFF).astype(np.float32) / 65536.0


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


# Lidar reflectivity per material (0..1): retro-reflective paint and signs are bright, glass and tyres
# absorb, asphalt is dark.
REFLECTIVITY = np.zeros(sc.NUM_MATERIALS, np.float32)
for _m, _r in {
    sc.M_ROAD: 0.12, sc.M_PAINT: 0.7, sc.M_SIDEWALK: 0.25, sc.M_TERRAIN: 0.2, sc.M_CURB: 0.3,
    sc.M_FACADE: 0.28, sc.M_WALL: 0.32, sc.M_FENCE: 0.4, sc.M_LEAVES: 0.35, sc.M_BARK: 0.2,
    sc.M_METAL: 0.45, sc.M_SIGN: 0.95, sc.M_TLIGHT: 0.3, sc.M_CARPAINT: 0.35, sc.M_GLASS: 0.06,
    sc.M_TIRE: 0.05, sc.M_CLOTH: 0.2, sc.M_SKIN: 0.25, sc.M_LAMP: 0.5, sc.M_BUS: 0.4,
}.items():  # fmt: skip
    REFLECTIVITY[_m] = _r


@dataclass
class Surface:
    """Per-pixel material properties of the visible surfaces (flattened, length H·W).

    Attributes:
        albedo: (n, 3) diffuse reflectance.
        emit: (n, 3) emitted radiance.
        spec: (n,) strength of the mirror reflection of the sky.
        refl: (n,) lidar reflectivity.
    """

    albedo: np.ndarray
    emit: np.ndarray
    spec: np.ndarray
    refl: np.ndarray


def _materials(scene: sc.Scene, g: sc.GBuffer, look: Look, noise: ValueNoise, style: dict) -> Surface:
    """Texture every visible pixel according to its material (one vectorised pass per material)."""
    n = g.t.size
    tab = scene.tables()
    pid = g.pid.ravel()
    mat = tab["mat"][pid]
    P = g.point.reshape(3, -1)
    N = g.normal.reshape(3, -1)
    albedo = np.zeros((n, 3), np.float32)
    emit = np.zeros((n, 3), np.float32)
    spec = np.zeros(n, np.float32)
    refl = REFLECTIVITY[mat].copy()
    order = np.argsort(mat, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(mat, minlength=sc.NUM_MATERIALS))])
    night = look.night
    for m in range(1, sc.NUM_MATERIALS):
        idx = order[bounds[m] : bounds[m + 1]]
        if idx.size == 0:
            continue
        x, y, z = P[0, idx], P[1, idx], P[2, idx]
        nx, ny, nz = N[0, idx], N[1, idx], N[2, idx]
        k = pid[idx]
        col = tab["colour"][k]
        aux = tab["aux"][k]
        a = col.copy()
        e = None
        s = np.zeros(idx.size, np.float32)
        if m == sc.M_ROAD:
            a = (
                np.broadcast_to(style["asphalt"], a.shape)
                * (1.0 + 0.18 * noise.fbm(x * 0.25, z * 0.25) + 0.12 * noise(x * 4.0, z * 4.0))[:, None]
            )
            a = a * np.where(noise.fbm(x * 0.8 + 40, z * 0.8) > 0.5, 0.85, 1.0)[:, None]  # repaired patches
        elif m == sc.M_PAINT:
            a = a * (0.82 + 0.18 * noise(x * 3.0, z * 1.5))[:, None]
        elif m in (sc.M_SIDEWALK, sc.M_CURB):
            a = np.broadcast_to(style["paving"] * (0.85 if m == sc.M_CURB else 1.0), a.shape).copy()
            if m == sc.M_SIDEWALK:
                tile = style["tile"]
                ix, iz = np.floor(x / tile), np.floor(z / tile)
                grout = (x / tile - ix < 0.06) | (z / tile - iz < 0.06)
                a *= ((0.92 + 0.16 * _hash01(ix, iz)) * np.where(grout, 0.7, 1.0))[:, None]
            a *= (1.0 + 0.08 * noise(x * 3.0, z * 3.0))[:, None]
        elif m == sc.M_TERRAIN:
            mix = _smoothstep(-0.3, 0.5, noise.fbm(x * 0.15, z * 0.15))[:, None]
            a = style["grass"] * (1 - mix) + _v(0.22, 0.19, 0.09) * mix
            a = a * (1.0 + 0.35 * noise.fbm(x * 2.0, z * 2.0, 2))[:, None]
        elif m == sc.M_FACADE:
            a, e, s = _facade(tab, k, a, aux, x, y, z, nx, nz, noise, night)
        elif m == sc.M_WALL:
            row = np.floor(y / 0.25)
            along = np.where(np.abs(nx) > 0.5, z, x) + 0.25 * (row % 2)
            grout = (y / 0.25 - row < 0.08) | (np.mod(along, 0.5) < 0.03)
            a = a * (np.where(grout, 0.65, 1.0) * (0.9 + 0.2 * _hash01(np.floor(along / 0.5), row)))[:, None]
        elif m == sc.M_LEAVES:
            a = a * (0.55 + 0.9 * (0.5 + 0.5 * noise.fbm(x * 3.0 + z * 2.1, y * 3.0, 3)))[:, None]
            a[:, 0] *= 1.0 + 0.4 * noise(x * 0.7, z * 0.7)
        elif m == sc.M_BARK:
            a = a * (0.8 + 0.2 * noise(y * 6.0, x * 6.0 + z * 6.0))[:, None]
        elif m == sc.M_SIGN:
            a = _sign(tab, k, aux, x, y, nz)
        elif m == sc.M_TLIGHT:
            a, e = _traffic_light(tab, k, a, aux, x, y, nz)
        elif m in (sc.M_CARPAINT, sc.M_BUS):
            a, e, s = _vehicle_body(tab, k, m, a, aux, x, y, nz, night)
        elif m == sc.M_GLASS:  # car cabin: glass sides, painted roof and pillars
            params = tab["params"][k]
            zlen = params[:, 5] - params[:, 2]
            pillar = (np.abs(nx) > 0.5) & ((z - params[:, 2] < 0.1 * zlen) | (params[:, 5] - z < 0.1 * zlen))
            paint = (ny > 0.5) | pillar
            a = np.where(paint[:, None], col, _v(0.02, 0.025, 0.03))
            s = np.where(paint, 0.06, 0.07).astype(np.float32)
            refl = _set(refl, idx, np.where(paint, REFLECTIVITY[sc.M_CARPAINT], REFLECTIVITY[sc.M_GLASS]))
        elif m == sc.M_TIRE:
            params = tab["params"][k]
            on_cap = np.abs(nx) > 0.5
            rr = np.sqrt((y - params[:, 1]) ** 2 + (z - params[:, 2]) ** 2) / params[:, 3]
            a = np.where((on_cap & (rr < 0.55))[:, None], _v(0.4, 0.4, 0.42), col)
        elif m == sc.M_LAMP:
            if night:
                e = np.where((ny < -0.5)[:, None], scene.lamp_colour * 6.0, 0.0).astype(np.float32)
        elif m in (sc.M_CLOTH, sc.M_SKIN):
            a = a * (0.85 + 0.15 * noise(x * 8.0 + z * 8.0, y * 8.0))[:, None]
        elif m in (sc.M_METAL, sc.M_FENCE):
            a = a * (0.9 + 0.1 * noise(x * 5.0 + z * 5.0, y * 2.0))[:, None]
            s = np.full(idx.size, 0.05, np.float32)
        if look.snow > 0 and m not in (sc.M_LAMP, sc.M_TLIGHT, sc.M_SIGN):
            cover = _snow_cover(m, x, z, ny, look.snow, noise, style)
            a = a * (1 - cover[:, None]) + _v(0.85, 0.87, 0.9) * cover[:, None]
            refl = _set(refl, idx, refl[idx] * (1 - cover) + 0.6 * cover)
        albedo[idx] = a
        spec[idx] = s
        if e is not None:
            emit[idx] = e
    if look.wet > 0:  # wet ground: darker, with a Fresnel mirror term
        ground = np.isin(
            pid, (sc.PID_ROAD, sc.PID_PAINT_WHITE, sc.PID_PAINT_YELLOW, sc.PID_SIDEWALK, sc.PID_CURB)
        )
        albedo[ground] *= 1.0 - 0.45 * look.wet
        refl[ground] *= 1.0 - 0.5 * look.wet
        d = g.rays.reshape(3, -1)[:, ground]
        cos = np.abs(d[1]) / np.sqrt((d * d).sum(0))
        spec[ground] = look.wet * (0.03 + 0.6 * (1 - cos) ** 5)
    return Surface(albedo=albedo, emit=emit, spec=spec, refl=refl)


def _set(arr: np.ndarray, idx: np.ndarray, values: np.ndarray) -> np.ndarray:
    arr[idx] = values
    return arr


def _snow_cover(m: int, x, z, ny, amount: float, noise: ValueNoise, style: dict) -> np.ndarray:
    up = _smoothstep(0.5, 0.9, ny)
    if m == sc.M_ROAD or m == sc.M_PAINT:  # two dark tyre tracks per lane, slush elsewhere
        lane = style["lane"]
        across = np.abs(np.mod(x, lane) - lane / 2)  # distance from the lane centre
        track = np.abs(across - 0.8) + 0.08 * noise(x * 3, z * 0.3)
        cover = _smoothstep(0.15, 0.4, track) * (0.55 + 0.35 * noise(x * 1.5, z * 0.4))
        return np.clip(amount * cover * up, 0, 1).astype(np.float32)
    patchy = 0.75 + 0.25 * noise(x * 1.5, z * 1.5)
    return np.clip(amount * up * patchy, 0, 1).astype(np.float32)


def _facade(tab, k, a, aux, x, y, z, nx, nz, noise, night):
    """Building walls with a grid of windows (dark glass; some lit at night)."""
    along = np.where(np.abs(nx) > 0.5, z, x)
    floor_h, spacing, wfrac, hfrac, phase, lit = (aux[:, i] for i in range(6))
    top = tab["params"][k, 4]
    u = (along + phase) / spacing
    v = y / floor_h
    col_i, row_i = np.floor(u), np.floor(v)
    vertical = (np.abs(nx) > 0.5) | (np.abs(nz) > 0.5)
    window = vertical & (u - col_i < wfrac) & (v - row_i > 0.3) & (v - row_i < 0.3 + hfrac)
    window &= (y > floor_h) & (y < top - 0.6)
    wall = a * (0.92 + 0.08 * noise(along * 2.0, y * 2.0))[:, None]
    wall = wall * np.where(y < 0.5, 0.7, 1.0)[:, None]  # plinth
    glass = _v(0.05, 0.065, 0.08) * (0.8 + 0.4 * _hash01(col_i, row_i, k))[:, None]
    albedo = np.where(window[:, None], glass, wall)
    spec = np.where(window, 0.12, 0.0).astype(np.float32)
    emit = None
    if night:
        on = window & (_hash01(col_i, row_i, k + 7) < 0.15 + 0.45 * lit)
        warm = _v(1.0, 0.75, 0.45) * (0.05 + 0.15 * _hash01(col_i, row_i, k + 3))[:, None]
        emit = np.where(on[:, None], warm, 0.0).astype(np.float32)
    return albedo, emit, spec


def _plate_uv(tab, k, x, y):
    p = tab["params"][k]
    u = (x - (p[:, 0] + p[:, 3]) / 2) / ((p[:, 3] - p[:, 0]) / 2)
    v = (y - (p[:, 1] + p[:, 4]) / 2) / ((p[:, 4] - p[:, 1]) / 2)
    return u.astype(np.float32), v.astype(np.float32)


def _sign(tab, k, aux, x, y, nz):
    """Traffic-sign faces: red rings, blue disks, warning triangles, blue squares, yellow diamonds."""
    u, v = _plate_uv(tab, k, x, y)
    kind = aux[:, 0].astype(np.int64)
    r = np.sqrt(u * u + v * v)
    white, red, blue = _v(0.8, 0.8, 0.78), _v(0.55, 0.02, 0.02), _v(0.02, 0.12, 0.5)
    black, yellow = _v(0.03, 0.03, 0.03), _v(0.8, 0.55, 0.02)
    out = np.empty((x.size, 3), np.float32)
    ring = np.where(
        (r > 0.72)[:, None], red, np.where(((np.abs(u) < 0.4) & (np.abs(v) < 0.3))[:, None], black, white)
    )
    arrow = ((np.abs(u) < 0.13) & (v > -0.65) & (v < 0.25)) | (
        (v >= 0.25) & (v < 0.75) & (np.abs(u) < 0.75 - v)
    )
    disk = np.where(arrow[:, None], white, blue)
    inner = (np.abs(u) <= (1 - v) / 2 - 0.18) & (v > -0.72)
    tri = np.where(inner[:, None], white, red)
    border = (np.abs(u) > 0.86) | (np.abs(v) > 0.86) | ((np.abs(u) < 0.3) & (np.abs(v) < 0.6))
    square = np.where(border[:, None], white, blue)
    diamond = np.where((np.abs(u) + np.abs(v) > 0.82)[:, None], black, yellow)
    for code, pattern in enumerate((ring, disk, tri, square, diamond)):
        sel = kind == code
        out[sel] = pattern[sel]
    back = nz > 0.5  # the back of the plate: bare metal
    out[back] = _v(0.35, 0.35, 0.36)
    return out


def _traffic_light(tab, k, a, aux, x, y, nz):
    """A signal head: three lamps on its camera-facing side, lamp ``aux[0]`` (0 red, 1 amber, 2 green) lit."""
    u, v = _plate_uv(tab, k, x, y)
    p = tab["params"][k]
    ratio = ((p[:, 4] - p[:, 1]) / (p[:, 3] - p[:, 0])).astype(np.float32)
    colours = np.array([[1.0, 0.08, 0.03], [1.0, 0.55, 0.02], [0.1, 1.0, 0.45]], np.float32)
    albedo = a.copy()
    emit = np.zeros_like(a)
    front = nz < -0.5
    for lamp, vc in enumerate((0.62, 0.0, -0.62)):
        inside = front & (u * u + ((v - vc) * ratio) ** 2 < 0.55**2)
        lit = inside & (aux[:, 0] == lamp)
        albedo[inside] = colours[lamp] * 0.15
        emit[lit] = colours[lamp] * 4.0
    return albedo, emit


def _vehicle_body(tab, k, m, a, aux, x, y, nz, night):
    """Car or bus paint with head/tail lights on the camera-facing end and (buses) a window band."""
    lights, xc, half_w, y0 = aux[:, 0], aux[:, 1], aux[:, 2], aux[:, 3]
    p = tab["params"][k]
    top = p[:, 4].astype(np.float32)
    spec = np.full(x.size, 0.08, np.float32)
    albedo = a.copy()
    if m == sc.M_BUS:
        band = (y > y0 + 1.0) & (y < top - 0.35)
        albedo[band] = _v(0.04, 0.05, 0.06)
        spec[band] = 0.3
        ly0, ly1 = y0 + 0.25, y0 + 0.5
    else:
        ly0, ly1 = top - 0.3, top - 0.12
    u = np.abs(x - xc) / np.maximum(half_w, 1e-3)
    front = (nz < -0.5) & (u > 0.6) & (u < 0.92) & (y > ly0) & (y < ly1) & (lights > 0)
    head = front & (lights == 1)
    tail = front & (lights == 2)
    albedo[head] = _v(0.75, 0.75, 0.72)
    albedo[tail] = _v(0.45, 0.02, 0.02)
    emit = None
    if night:
        emit = np.zeros_like(albedo)
        emit[head] = _v(4.0, 3.8, 3.2)
        emit[tail] = _v(1.2, 0.03, 0.02)
    return albedo, emit, spec
