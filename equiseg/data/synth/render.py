"""Appearance of the synthetic scenes: materials, lighting, weather and the RGB camera (docs/design.md §9).

Radiance is linear; the camera applies an exposure gain, photon (shot) and read noise, clips to
[0, 1] and encodes with a 1/2.2 gamma to 8 bits. A :class:`Look` holds everything a weather and time
of day change; the DeLiVER conditions and the MUSES cases map onto (weather, night) pairs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from equiseg.data.synth import scene as sc

WEATHERS = ("clear", "cloud", "fog", "rain", "snow")


@dataclass
class Look:
    """The illumination, atmosphere and camera settings of one sample.

    Attributes:
        weather: one of :data:`WEATHERS`.
        night: street lamps, lit windows and vehicle lights instead of the sun.
        sun_dir: (3,) unit vector towards the sun.
        sun: (3,) direct irradiance (colour × strength); zero when no direct light.
        ambient: (3,) sky irradiance on an upward-facing surface.
        sky_top, sky_horizon: (3,) sky radiance at the zenith and the horizon.
        clouds: cloud cover of the visible sky, 0..1.
        fog: extinction coefficient in 1/m (0 = clear air).
        fog_colour: (3,) radiance of the fog at full extinction.
        wet: wetness of the ground (darker asphalt, mirror-like sheen), 0..1.
        snow: snow cover of upward surfaces, 0..1.
        exposure: camera gain applied to the radiance (auto-exposure).
        read_noise, shot_noise: camera noise, in units of the exposed signal.
        shadows: cast hard sun shadows.
    """

    weather: str
    night: bool
    sun_dir: np.ndarray
    sun: np.ndarray
    ambient: np.ndarray
    sky_top: np.ndarray
    sky_horizon: np.ndarray
    clouds: float
    fog: float
    fog_colour: np.ndarray
    wet: float
    snow: float
    exposure: float
    read_noise: float
    shot_noise: float
    shadows: bool


def _v(*c: float) -> np.ndarray:
    return np.array(c, np.float32)


def make_look(weather: str, night: bool, rng: np.random.Generator) -> Look:
    """Sample the lighting for ``weather`` (one of :data:`WEATHERS`) by day or night."""
    if weather not in WEATHERS:
        raise ValueError(f"unknown weather {weather!r}; choose from {WEATHERS}")
    elev, azim = math.radians(rng.uniform(22, 62)), math.radians(rng.uniform(-160, 160))
    sun_dir = _v(math.cos(elev) * math.sin(azim), math.sin(elev), math.cos(elev) * math.cos(azim))
    j = rng.uniform(0.9, 1.1)
    # per weather: sun strength, ambient, sky top, sky horizon, cloud cover, wetness; fog in 1/m; snow
    snow = rng.uniform(0.6, 1.0) if weather == "snow" else 0.0
    fog = {
        "fog": 3.0 / rng.uniform(25, 60),
        "rain": 3.0 / rng.uniform(150, 350),
        "snow": 3.0 / rng.uniform(120, 300),
    }
    base = {
        "clear": (2.6, _v(0.42, 0.50, 0.62), _v(0.10, 0.24, 0.70), _v(0.50, 0.64, 0.85), 0.15, 0.0),
        "cloud": (0.35, _v(0.85, 0.88, 0.92), _v(0.42, 0.45, 0.50), _v(0.68, 0.70, 0.72), 0.85, 0.0),
        "fog": (0.15, _v(0.80, 0.82, 0.84), _v(0.60, 0.62, 0.64), _v(0.60, 0.62, 0.64), 1.0, 0.2),
        "rain": (0.05, _v(0.50, 0.53, 0.58), _v(0.22, 0.24, 0.27), _v(0.38, 0.40, 0.43), 1.0, 1.0),
        "snow": (0.25, _v(0.95, 0.97, 1.0), _v(0.55, 0.57, 0.60), _v(0.78, 0.80, 0.83), 1.0, 0.3),
    }[weather]  # fmt: skip
    sun_i, ambient, top, horizon, clouds, wet = base
    fog = fog.get(weather, 0.0)
    sun = _v(1.0, 0.95, 0.86) * sun_i * j
    ambient = ambient * j
    fog_colour = horizon.copy()
    exposure, read, shot = 1.0, 0.004, 0.0015
    if weather == "rain":
        exposure, read = 1.3, 0.006
    if night:
        sun = np.zeros(3, np.float32)
        ambient = _v(0.004, 0.0045, 0.007)  # moonlight
        top, horizon = _v(0.002, 0.003, 0.008), _v(0.030, 0.022, 0.018)  # light pollution at the horizon
        fog_colour = _v(0.05, 0.045, 0.04)
        exposure, read, shot = rng.uniform(3.5, 5.0), 0.02, 0.02
    return Look(
        weather=weather,
        night=night,
        sun_dir=sun_dir,
        sun=sun,
        ambient=ambient.astype(np.float32),
        sky_top=top,
        sky_horizon=horizon,
        clouds=clouds,
        fog=fog,
        fog_colour=fog_colour,
        wet=wet,
        snow=snow,
        exposure=exposure,
        read_noise=read,
        shot_noise=shot,
        shadows=(weather == "clear" and not night),
    )


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


def sky_radiance(look: Look, d: np.ndarray, noise: ValueNoise) -> np.ndarray:
    """Sky colour for ray directions ``d`` (3, n): a zenith–horizon gradient with procedural clouds."""
    el = np.clip(d[1] / np.sqrt((d * d).sum(0)), 0.0, 1.0)
    w = np.sqrt(el)[:, None]
    sky = look.sky_horizon * (1 - w) + look.sky_top * w
    if look.clouds > 0 and look.fog == 0:
        h = d[1] + 0.08
        cu, cv = d[0] / h, d[2] / h
        cover = _smoothstep(
            1 - 2 * look.clouds, 1.2 - 1.2 * look.clouds, noise.fbm(cu * 0.8 + 50, cv * 0.8, 4)
        )
        cloud = (
            look.sky_horizon
            * (1.15 if not look.night else 0.8)
            * (0.85 + 0.15 * noise(cu * 3, cv * 3))[:, None]
        )
        sky = sky * (1 - cover[:, None]) + cloud * cover[:, None]
    return sky.astype(np.float32)


def _shadow(scene: sc.Scene, look: Look, P: np.ndarray, lit: np.ndarray) -> np.ndarray:
    """1 where a sun ray from ``P`` (3, n) reaches the sun past every shadow caster, else 0."""
    out = np.ones(P.shape[1], np.float32)
    L = look.sun_dir.astype(np.float64)
    cand = np.flatnonzero(lit)
    if cand.size == 0:
        return out
    px, py, pz = P[0, cand], P[1, cand], P[2, cand]
    inv = 1.0 / np.where(np.abs(L) > 1e-9, L, 1e-9)
    shift = -L[[0, 2]] / L[1]  # ground offset per metre of height along the sun ray
    for k in np.flatnonzero(scene.caster):
        shape, p = scene.shape[k], scene.params[k]
        if shape == sc.S_BOX:
            lo, hi = np.array(p[:3]), np.array(p[3:])
        else:
            lo = np.array([p[a] - p[a + 3] for a in range(3)])
            hi = np.array([p[a] + p[a + 3] for a in range(3)])
        # footprint of the caster and of its shadow on the ground, as an XZ box
        xs = [lo[0], hi[0], lo[0] + shift[0] * hi[1], hi[0] + shift[0] * hi[1]]
        zs = [lo[2], hi[2], lo[2] + shift[1] * hi[1], hi[2] + shift[1] * hi[1]]
        near = (px >= min(xs)) & (px <= max(xs)) & (pz >= min(zs)) & (pz <= max(zs)) & (py <= hi[1])
        sel = np.flatnonzero(near)
        if sel.size == 0:
            continue
        o = (px[sel], py[sel], pz[sel])
        if shape == sc.S_BOX:
            t0 = [(lo[a] - o[a]) * inv[a] for a in range(3)]
            t1 = [(hi[a] - o[a]) * inv[a] for a in range(3)]
            tn = np.maximum.reduce([np.minimum(t0[a], t1[a]) for a in range(3)])
            tf = np.minimum.reduce([np.maximum(t0[a], t1[a]) for a in range(3)])
            blocked = (tf > 0.02) & (tn < tf)
        else:
            oo = [(o[a] - p[a]) / p[a + 3] for a in range(3)]
            dd = [L[a] / p[a + 3] for a in range(3)]
            qa = sum(v * v for v in dd)
            qb = 2 * (oo[0] * dd[0] + oo[1] * dd[1] + oo[2] * dd[2])
            qc = oo[0] ** 2 + oo[1] ** 2 + oo[2] ** 2 - 1
            disc = qb * qb - 4 * qa * qc
            far = (-qb + np.sqrt(np.maximum(disc, 0))) / (2 * qa)
            blocked = (disc > 0) & (far > 0.02)
        out[cand[sel[blocked]]] = 0.0
    return out


def _contact_shadows(scene: sc.Scene, pid: np.ndarray, P: np.ndarray) -> np.ndarray:
    """Ambient occlusion of the ground under and right around vehicles (1 = open sky)."""
    occ = np.ones(pid.size, np.float32)
    ground = np.flatnonzero(pid < sc.FIRST_OBJECT)
    gx, gz = P[0, ground], P[2, ground]
    for k in range(sc.FIRST_OBJECT, len(scene.shape)):
        if scene.mat[k] not in (sc.M_CARPAINT, sc.M_BUS) or scene.cls[k] not in (sc.CARS, sc.BUS):
            continue
        x0, _, z0, x1, _, z1 = scene.params[k]
        dx = np.maximum(np.abs(gx - (x0 + x1) / 2) - (x1 - x0) / 2, 0)
        dz = np.maximum(np.abs(gz - (z0 + z1) / 2) - (z1 - z0) / 2, 0)
        dist = np.maximum(dx, dz)
        near = dist < 0.6
        occ[ground[near]] = np.minimum(occ[ground[near]], 0.3 + 0.7 * dist[near] / 0.6)
    return occ


@dataclass
class Radiance:
    """Linear scene radiance and what the other sensors need from the shading.

    Attributes:
        base: (H, W, 3) radiance including fog, before precipitation particles.
        refl: (H, W) lidar reflectivity of the visible surface.
        lamps: (n, 3) lamp positions lit in this sample.
    """

    base: np.ndarray
    refl: np.ndarray
    lamps: np.ndarray


def shade(scene: sc.Scene, cam: sc.Camera, g: sc.GBuffer, look: Look, rng: np.random.Generator) -> Radiance:
    """Light the visible surfaces: sun and sky (with shadows), street lamps at night, fog."""
    H, W = g.t.shape
    noise = ValueNoise(rng)
    style = {
        "asphalt": _v(0.085, 0.085, 0.09) * rng.uniform(0.8, 1.3),
        "paving": _v(1.0, 0.97, 0.92) * rng.uniform(0.28, 0.45) * _v(*rng.uniform(0.95, 1.05, 3)),
        "grass": _v(0.07, 0.15, 0.035) * rng.uniform(0.8, 1.2),
        "tile": rng.choice([0.3, 0.5, 0.6]),
        "lane": scene.lane_width,
    }
    surf = _materials(scene, g, look, noise, style)
    pid = g.pid.ravel()
    P = g.point.reshape(3, -1)
    N = g.normal.reshape(3, -1)
    D = g.rays.reshape(3, -1)
    sky = pid == sc.PID_SKY
    # sky light: full for upward surfaces, less for walls, little for the undersides; darker at the
    # foot of walls and under vehicles
    foot = np.where(np.abs(N[1]) < 0.5, 0.6 + 0.4 * np.clip(P[1] / 0.6, 0, 1), 1.0)
    sky_vis = (0.55 + 0.45 * N[1]) * foot * _contact_shadows(scene, pid, P)
    light = sky_vis[:, None] * look.ambient
    if look.sun.any():
        ndl = np.clip(N[0] * look.sun_dir[0] + N[1] * look.sun_dir[1] + N[2] * look.sun_dir[2], 0, None)
        vis = np.ones_like(ndl)
        if look.shadows:
            vis = _shadow(scene, look, P + N * 0.02, (ndl > 0) & ~sky & (g.t.ravel() < 150))
        light = light + (ndl * vis)[:, None] * look.sun
    lamps = np.array(scene.lamps, np.float32).reshape(-1, 3)
    if look.night and len(lamps):
        for lp in lamps:
            lx, ly, lz = lp[0] - P[0], lp[1] - P[1], lp[2] - P[2]
            d2 = lx * lx + ly * ly + lz * lz
            ndl = np.clip((N[0] * lx + N[1] * ly + N[2] * lz) / np.sqrt(d2 + 1e-6), 0, None)
            light = light + (ndl * 3.5 / (d2 + 2.0))[:, None] * scene.lamp_colour
    rad = surf.albedo * light + surf.emit
    env = look.sky_horizon * (0.6 if look.night else 1.0)
    rad = rad + surf.spec[:, None] * env
    if look.sun.any():  # sun glints on glossy surfaces
        v = -D / np.sqrt((D * D).sum(0))
        h = v + look.sun_dir[:, None]
        h /= np.sqrt((h * h).sum(0))
        ndh = np.clip((N * h).sum(0), 0, 1)
        rad = rad + (surf.spec * ndh**80 * 3.0)[:, None] * look.sun
    rad[sky] = sky_radiance(look, D[:, sky], noise)
    if look.fog > 0:
        rng_m = g.t.ravel() * np.sqrt((D * D).sum(0))
        trans = np.where(sky, 0.0, np.exp(-look.fog * np.where(sky, 0, rng_m)))[:, None]
        rad = rad * trans + look.fog_colour * (1 - trans)
    rad = rad.reshape(H, W, 3)
    if look.night and len(lamps):
        rad = rad + _lamp_glow(cam, lamps, scene.lamp_colour, look, g.t)
    return Radiance(base=rad.astype(np.float32), refl=surf.refl.reshape(H, W), lamps=lamps)


def _lamp_glow(
    cam: sc.Camera, lamps: np.ndarray, colour: np.ndarray, look: Look, depth: np.ndarray
) -> np.ndarray:
    """Halos around visible lamps (scattering in the air; wide in fog and rain)."""
    H, W = depth.shape
    out = np.zeros((H, W, 3), np.float32)
    pc = cam.to_camera(lamps.astype(np.float64))
    spread = 1.0 + 6.0 * min(1.0, look.fog * 30.0)
    for x, y, z in pc:
        if z < 0.5:
            continue
        u, v = cam.cx + cam.focal * x / z, cam.cy - cam.focal * y / z
        sigma = cam.focal * 0.35 * spread / z + 1.0
        i0, i1 = max(0, int(v - 3 * sigma)), min(H, int(v + 3 * sigma) + 1)
        j0, j1 = max(0, int(u - 3 * sigma)), min(W, int(u + 3 * sigma) + 1)
        if i0 >= i1 or j0 >= j1:
            continue
        rows = np.arange(i0, i1, dtype=np.float32)[:, None] + 0.5
        cols = np.arange(j0, j1, dtype=np.float32)[None, :] + 0.5
        g = np.exp(-((cols - u) ** 2 + (rows - v) ** 2) / (2 * sigma * sigma)) * (0.6 / spread)
        out[i0:i1, j0:j1] += g[:, :, None] * colour
    return out


def precipitation(
    look: Look, shape: tuple[int, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Rain streaks or snow flakes as an overlay: ``rad * (1 - alpha) + alpha * colour``.

    Returns:
        ``alpha`` (H, W) float32 in [0, 1] and ``colour`` (3,) radiance of the particles.
    """
    H, W = shape
    alpha = np.zeros((H, W), np.float32)
    brightness = float(look.ambient.mean()) + (0.3 if look.night else 0.0)
    if look.weather == "rain":
        count = int(0.0025 * H * W)
        angle = math.radians(rng.uniform(-12, 12))
        lengths = rng.uniform(0.02, 0.09, count) * H
        strength = rng.uniform(0.08, 0.3, count)
        u0, v0 = rng.uniform(0, W, count), rng.uniform(-0.1 * H, H, count)
        steps = int(lengths.max()) + 1
        for s in range(steps):
            on = s < lengths
            u = (u0 + s * math.sin(angle)).astype(np.int64)
            v = (v0 + s * math.cos(angle)).astype(np.int64)
            ok = on & (u >= 0) & (u < W) & (v >= 0) & (v < H)
            alpha[v[ok], u[ok]] = np.maximum(alpha[v[ok], u[ok]], strength[ok])
        return alpha, _v(0.9, 0.92, 0.95) * max(brightness * 1.3, 0.15)
    if look.weather == "snow":
        count = int(0.004 * H * W)
        size = np.maximum(1, (rng.power(0.3, count) * 0.012 * H).astype(np.int64))
        u0, v0 = rng.integers(0, W, count), rng.integers(0, H, count)
        strength = rng.uniform(0.4, 0.95, count).astype(np.float32)
        for dv in range(int(size.max())):
            for du in range(int(size.max())):
                ok = (du < size) & (dv < size) & (u0 + du < W) & (v0 + dv < H)
                alpha[v0[ok] + dv, u0[ok] + du] = strength[ok]
        return alpha, _v(0.95, 0.95, 0.97) * max(brightness * 1.2, 0.2)
    return alpha, np.zeros(3, np.float32)


def luminance(rad: np.ndarray) -> np.ndarray:
    """Rec. 709 luminance of (..., 3) linear radiance."""
    return rad[..., 0] * 0.2126 + rad[..., 1] * 0.7152 + rad[..., 2] * 0.0722


def motion_blur(img: np.ndarray, length: float, angle: float) -> np.ndarray:
    """Average of ``img`` shifted along a line of ``length`` pixels at ``angle`` radians (edge-clamped)."""
    H, W = img.shape[:2]
    k = max(2, int(round(length)))
    rows, cols = np.arange(H), np.arange(W)
    out = np.zeros_like(img)
    for o in np.linspace(-(k - 1) / 2, (k - 1) / 2, k):
        du, dv = int(round(o * math.cos(angle))), int(round(o * math.sin(angle)))
        out += img[np.clip(rows + dv, 0, H - 1)][:, np.clip(cols + du, 0, W - 1)]
    return out / k


def expose(rad: np.ndarray, look: Look, rng: np.random.Generator, failure: str | None = None) -> np.ndarray:
    """The RGB camera: optional camera failure, exposure, shot and read noise, clipping, gamma, 8 bits.

    Args:
        rad: (H, W, 3) linear radiance.
        look: the sample's look (exposure and noise levels).
        rng: generator for the noise.
        failure: ``"motionblur"``, ``"overexposure"``, ``"underexposure"`` or None (other failures do
            not touch the camera).

    Returns:
        (H, W, 3) uint8 image.
    """
    H, W = rad.shape[:2]
    gain = look.exposure
    read, shot = look.read_noise, look.shot_noise
    if failure == "motionblur":
        rad = motion_blur(rad, rng.uniform(0.04, 0.08) * W, rng.normal(0.0, 0.3))
    elif failure == "overexposure":
        gain *= rng.uniform(3.5, 7.0)
    elif failure == "underexposure":
        gain *= rng.uniform(0.04, 0.09)
        read, shot = read * 1.5, shot * 2.0
    x = rad * gain
    x = x + rng.normal(0.0, 1.0, x.shape).astype(np.float32) * np.sqrt(read * read + shot * np.maximum(x, 0))
    x = np.clip(x, 0.0, 1.0) ** (1 / 2.2)
    return (x * 255.0 + 0.5).astype(np.uint8)
