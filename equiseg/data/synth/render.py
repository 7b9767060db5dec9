"""Appearance of the synthetic scenes: materials, lighting, weather and the RGB camera (docs/design.md §9).

Radiance is linear; the camera applies an exposure gain, photon (shot) and read noise, clips to
[0, 1] and encodes with a 1/2.2 gamma to 8 bits. A :class:`Look` holds everything a weather and time
of day change; the DeLiVER conditions and the MUSES cases map onto (weather, night) pairs.

This module lights the scene and takes the picture; the look is drawn in :mod:`equiseg.data.synth.look`,
the surfaces' materials in :mod:`equiseg.data.synth.materials` (their names are importable from here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from equiseg.data.synth import scene as sc
from equiseg.data.synth.look import WEATHERS, Look, _v, make_look
from equiseg.data.synth.materials import REFLECTIVITY, Surface, ValueNoise, _materials, _smoothstep

__all__ = [
    "WEATHERS",
    "Look",
    "make_look",
    "REFLECTIVITY",
    "Surface",
    "ValueNoise",
    "Radiance",
    "shade",
    "sky_radiance",
    "precipitation",
    "luminance",
    "motion_blur",
    "expose",
]


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
