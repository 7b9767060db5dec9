"""The non-RGB sensors of the synthetic scenes and their file encodings (docs/design.md §4, §9).

- depth: exact planar depth (camera z) from the ray cast, logarithmically encoded to 8 bits;
- event camera: polarity events from the log-brightness change of a short ego-motion (the previous
  frame is the current one warped by the optical flow that the exact depth and the motion induce),
  with threshold mismatch, low-light noise, background activity and hot pixels;
- LiDAR: a 16-beam spinning scanner at the camera centre, sampled where each beam's elevation cone
  crosses a pixel row (curved scan lines), with class-dependent reflectivity, dropouts and weather
  clutter;
- radar (MUSES layout only): one return per 1° azimuth bin from the nearest object at bumper height.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from equiseg.data.synth import scene as sc
from equiseg.data.synth.look import Look

DEPTH_MAX_M = 1000.0
LIDAR_MAX_RANGE_M = 100.0
LIDAR_BEAMS = 16
LIDAR_ELEVATION_DEG = (-22.0, 8.0)
LIDAR_AZIMUTH_RES_DEG = 0.2
RADAR_AZIMUTH_RES_DEG = 1.0
RADAR_MAX_RANGE_M = 120.0
EVENT_LOWRES_FACTOR = 4


# --- depth -------------------------------------------------------------------------------------
def encode_depth(t: np.ndarray) -> np.ndarray:
    """Planar depth in metres → uint8 ``round(255 · log(d) / log(1000))``, clipped to 0..255.

    1 m and nearer → 0, 10 m → 85, 100 m → 170, 1000 m and the sky → 255: one code step is a
    2.7 % change of depth. Decode with ``d = 1000 ** (code / 255)``.
    """
    with np.errstate(divide="ignore"):
        code = 255.0 * np.log(np.maximum(t, 1.0)) / math.log(DEPTH_MAX_M)
    return np.clip(np.round(np.where(np.isfinite(t), code, 255.0)), 0, 255).astype(np.uint8)


def decode_depth(code: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode_depth` (to the code's resolution)."""
    return DEPTH_MAX_M ** (code.astype(np.float64) / 255.0)


# --- events ------------------------------------------------------------------------------------
@dataclass
class EgoMotion:
    """Camera motion between the previous and the current frame (metres, radians)."""

    forward: float
    lateral: float
    yaw: float
    pitch: float


def sample_motion(rng: np.random.Generator) -> EgoMotion:
    return EgoMotion(
        forward=rng.uniform(0.15, 0.6),
        lateral=rng.normal(0, 0.03),
        yaw=math.radians(rng.normal(0, 0.4)),
        pitch=math.radians(rng.normal(0, 0.15)),
    )


def ego_flow(
    cam: sc.Camera, t: np.ndarray, motion: EgoMotion, max_px: float
) -> tuple[np.ndarray, np.ndarray]:
    """Optical flow (current − previous pixel position) of static points under ``motion``.

    Args:
        cam: the current camera.
        t: (H, W) planar depth (``inf`` for the sky: rotation only).
        motion: ego-motion from the previous to the current frame.
        max_px: flow magnitude cap (very near ground moves by a lot between frames).

    Returns:
        ``(du, dv)`` (H, W) float32 in pixels.
    """
    H, W = t.shape
    xn = ((np.arange(W) + 0.5 - cam.cx) / cam.focal)[None, :]
    yn = (-(np.arange(H) + 0.5 - cam.cy) / cam.focal)[:, None]
    finite = np.isfinite(t)
    z = np.where(finite, t, 1.0)
    X, Y, Z = xn * z, yn * z, np.broadcast_to(z, (H, W))
    trans = np.where(finite, 1.0, 0.0)
    X = X + motion.lateral * trans
    Z = Z + motion.forward * trans
    cy_, sy = math.cos(motion.yaw), math.sin(motion.yaw)
    cp, sp = math.cos(motion.pitch), math.sin(motion.pitch)
    X, Z = cy_ * X - sy * Z, sy * X + cy_ * Z
    Y, Z = cp * Y - sp * Z, sp * Y + cp * Z
    Z = np.maximum(Z, 1e-3)
    u_prev = cam.cx + cam.focal * X / Z
    v_prev = cam.cy - cam.focal * Y / Z
    du = (np.arange(W) + 0.5)[None, :] - u_prev
    dv = (np.arange(H) + 0.5)[:, None] - v_prev
    mag = np.sqrt(du * du + dv * dv)
    scale = np.minimum(1.0, max_px / np.maximum(mag, 1e-6))
    return (du * scale).astype(np.float32), (dv * scale).astype(np.float32)


def warp(img: np.ndarray, du: np.ndarray, dv: np.ndarray) -> np.ndarray:
    """The previous frame: ``img`` sampled bilinearly at ``p + flow(p)`` (edge-clamped)."""
    H, W = img.shape[:2]
    x = np.clip(np.arange(W, dtype=np.float32)[None, :] + du, 0, W - 1)
    y = np.clip(np.arange(H, dtype=np.float32)[:, None] + dv, 0, H - 1)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, W - 1), np.minimum(y0 + 1, H - 1)
    fx, fy = x - x0, y - y0
    if img.ndim == 3:
        fx, fy = fx[..., None], fy[..., None]
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


def block_mean(img: np.ndarray, k: int) -> np.ndarray:
    """Average ``k×k`` blocks (the image is cropped to a multiple of ``k``)."""
    H, W = img.shape[0] // k * k, img.shape[1] // k * k
    a = img[:H, :W]
    return a.reshape(H // k, k, W // k, k, *a.shape[2:]).mean(axis=(1, 3))


def simulate_events(
    lum_now: np.ndarray, lum_prev: np.ndarray, look: Look, rng: np.random.Generator, max_count: int
) -> tuple[np.ndarray, np.ndarray]:
    """Count polarity events from two luminance frames (both exposed, ~0..1).

    A pixel fires ``floor(|ΔL| / C)`` events, ``L = log(lum + 0.03)``, with a per-pixel threshold
    ``C`` (mismatch), temporal noise that grows in the dark, random losses, background-activity noise
    and a few hot pixels.

    Returns:
        ``(positive, negative)`` (H, W) int16 counts, each at most ``max_count``.
    """
    shape = lum_now.shape
    c0 = rng.uniform(0.2, 0.3)
    thresh = np.maximum(c0 * (1 + rng.normal(0, 0.1, shape)), 0.05)
    eps = 0.03
    dl = np.log(lum_now + eps) - np.log(lum_prev + eps)
    dl = dl + rng.normal(0, 1, shape) * (0.01 + 0.05 * np.sqrt(0.02 / (lum_now + 0.005)))
    n = np.floor(np.abs(dl) / thresh)
    n = rng.binomial(np.minimum(n, max_count).astype(np.int64), 0.85)
    pos = np.where(dl > 0, n, 0)
    neg = np.where(dl < 0, n, 0)
    rate = 0.006 if look.night else 0.002
    pos = pos + rng.poisson(rate, shape)
    neg = neg + rng.poisson(rate, shape)
    hot = rng.random(shape) < 5e-5
    pos = np.where(hot, max_count, pos)
    return np.minimum(pos, max_count).astype(np.int16), np.minimum(neg, max_count).astype(np.int16)


def encode_events_deliver(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """DeLiVER event image, CARLA DVS style: black background, negative events in red, positive in blue.

    Channel value ``85 · min(count, 3)`` (0, 85, 170, 255); green is 0.
    """
    out = np.zeros((*pos.shape, 3), np.uint8)
    out[..., 0] = 85 * np.minimum(neg, 3)
    out[..., 2] = 85 * np.minimum(pos, 3)
    return out


# --- lidar -------------------------------------------------------------------------------------
@dataclass
class Points:
    """Sensor returns projected into the camera (one per pixel at most).

    Attributes:
        rows, cols: int64 pixel coordinates.
        range: metres from the sensor.
        intensity: 0..1 (lidar) or RCS-like 0..100 (radar).
        height: metres above the road plane.
    """

    rows: np.ndarray
    cols: np.ndarray
    range: np.ndarray
    intensity: np.ndarray
    height: np.ndarray


def _elevation_azimuth(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    horiz = np.sqrt(d[0] * d[0] + d[2] * d[2])
    return np.degrees(np.arctan2(d[1], horiz)), np.degrees(np.arctan2(d[0], d[2]))


def lidar_scan(
    cam: sc.Camera,
    g: sc.GBuffer,
    refl: np.ndarray,
    look: Look,
    rng: np.random.Generator,
    jitter: bool = False,
) -> Points:
    """Simulate the scanner: beam crossings per column, returns with reflectivity-based intensity.

    Args:
        cam: camera (the scanner sits at its centre, levelled with the road).
        g: ray-cast buffer.
        refl: (H, W) lidar reflectivity of the visible surfaces.
        look: weather (fog limits the range, rain and snow add dropouts and near clutter).
        rng: generator.
        jitter: the ``lidarjitter`` failure: points displaced by a few pixels and noisy ranges.
    """
    H, W = g.t.shape
    el, az = _elevation_azimuth(g.rays)
    e0, e1 = LIDAR_ELEVATION_DEG
    step = (e1 - e0) / (LIDAR_BEAMS - 1)
    q = (el - e0) / step  # beam coordinate, decreasing down a column
    k = np.minimum(np.floor(q[:-1]), LIDAR_BEAMS - 1)
    cross = (k >= 0) & (k > q[1:])
    lower = (k - q[1:]) < (q[:-1] - k)  # the beam is nearer to the lower row of the pair
    rows, cols = np.nonzero(cross)
    rows = rows + lower[rows, cols]
    abin = np.floor(az / LIDAR_AZIMUTH_RES_DEG)
    new_bin = np.ones_like(abin, bool)
    new_bin[:, 1:] = abin[:, 1:] != abin[:, :-1]
    keep = new_bin[rows, cols]
    rows, cols = rows[keep], cols[keep]
    d = g.rays[:, rows, cols]
    norm = np.sqrt((d * d).sum(0))
    t = g.t[rows, cols]
    rng_m = t * norm
    hit = np.isfinite(rng_m) & (rng_m < LIDAR_MAX_RANGE_M)
    r = refl[rows, cols]
    n = g.normal[:, rows, cols]
    cos = np.abs((n * d).sum(0)) / norm
    drop = 0.04 + 0.5 * (r < 0.08)
    if look.weather == "rain":
        drop = drop + 0.1
    elif look.weather == "snow":
        drop = drop + 0.15
    if look.fog > 0:
        vis = 3.0 / look.fog
        drop = drop + np.clip((np.nan_to_num(rng_m, posinf=1e4) - 1.5 * vis) / vis, 0, 1)
    hit &= rng.random(rows.size) >= drop
    intensity = r * (0.4 + 0.6 * cos) * (1 - 0.25 * np.nan_to_num(rng_m, posinf=0) / LIDAR_MAX_RANGE_M)
    intensity = np.clip(intensity * (1 + rng.normal(0, 0.15, rows.size)), 0, 1)
    height = g.point[1, rows, cols]
    # near clutter from fog droplets, rain and snow flakes: spurious short returns on any beam
    clutter_p = {"fog": 0.02, "rain": 0.015, "snow": 0.04}.get(look.weather, 0.0)
    if clutter_p:
        fake = rng.random(rows.size) < clutter_p
        fr = rng.uniform(1.0, 8.0, rows.size)
        fake &= ~hit | (fr < rng_m)
        rng_m = np.where(fake, fr, rng_m)
        intensity = np.where(fake, rng.uniform(0.0, 0.15, rows.size), intensity)
        height = np.where(fake, cam.pos[1] + d[1] / norm * fr, height)
        hit |= fake
    rows, cols, rng_m, intensity, height = rows[hit], cols[hit], rng_m[hit], intensity[hit], height[hit]
    if jitter:
        sigma = max(1.0, 0.01 * H)
        rows = np.round(rows + rng.normal(0, sigma, rows.size)).astype(np.int64)
        cols = np.round(cols + rng.normal(0, sigma, cols.size)).astype(np.int64)
        rng_m = np.clip(rng_m * (1 + rng.normal(0, 0.05, rng_m.size)), 0.5, LIDAR_MAX_RANGE_M - 0.01)
        inside = (rows >= 0) & (rows < H) & (cols >= 0) & (cols < W)
        rows, cols, rng_m, intensity, height = (
            rows[inside],
            cols[inside],
            rng_m[inside],
            intensity[inside],
            height[inside],
        )
    return Points(
        rows, cols, rng_m.astype(np.float32), intensity.astype(np.float32), height.astype(np.float32)
    )


def encode_lidar_deliver(p: Points, shape: tuple[int, int]) -> np.ndarray:
    """DeLiVER LiDAR image: 0 where no return; per return (uint8)

    - R: range, ``255 · (1 − r / 100 m)`` clipped to 1..255 (near is bright);
    - G: intensity, ``255 · i``;
    - B: height above the road, ``20 · (h + 1 m)`` clipped to 0..255 (−1 m … 11.75 m).
    """
    out = np.zeros((*shape, 3), np.uint8)
    out[p.rows, p.cols, 0] = np.clip(np.round(255 * (1 - p.range / LIDAR_MAX_RANGE_M)), 1, 255)
    out[p.rows, p.cols, 1] = np.clip(np.round(255 * p.intensity), 0, 255)
    out[p.rows, p.cols, 2] = np.clip(np.round(20 * (p.height + 1.0)), 0, 255)
    return out


def points_to_array(
    p: Points, shape: tuple[int, int], third: str = "height", intensity_scale: float = 100.0
) -> np.ndarray:
    """MUSES projected image: float32 H×W×3 ``[range, intensity, height or 0]``, zero without a return."""
    out = np.zeros((*shape, 3), np.float32)
    out[p.rows, p.cols, 0] = p.range
    out[p.rows, p.cols, 1] = p.intensity * intensity_scale
    if third == "height":
        out[p.rows, p.cols, 2] = p.height
    return out


# --- radar -------------------------------------------------------------------------------------
_RCS = {  # DeLiVER class -> (low, high) radar cross-section-like intensity
    sc.CARS: (20.0, 60.0), sc.BUS: (40.0, 90.0), sc.TWOWHEELER: (8.0, 20.0), sc.POLE: (15.0, 35.0),
    sc.TRAFFICSIGN: (20.0, 45.0), sc.TRAFFICLIGHT: (15.0, 35.0), sc.BUILDING: (5.0, 25.0),
    sc.WALL: (5.0, 25.0), sc.FENCE: (8.0, 25.0), sc.PEDESTRIAN: (2.0, 8.0), sc.VEGETATION: (1.0, 6.0),
}  # fmt: skip


def radar_scan(cam: sc.Camera, g: sc.GBuffer, cls: np.ndarray, rng: np.random.Generator) -> Points:
    """One return per azimuth bin: the nearest vertical surface between 0.15 and 1.6 m high.

    Args:
        cam: camera (the radar sits below it at bumper height; returns are projected into it).
        g: ray-cast buffer.
        cls: (H, W) DeLiVER class map.
        rng: generator.
    """
    H, W = g.t.shape
    _, az = _elevation_azimuth(g.rays[:, H // 2 : H // 2 + 1, :])
    abin = np.floor(az[0] / RADAR_AZIMUTH_RES_DEG)
    cols = np.flatnonzero(np.concatenate([[True], abin[1:] != abin[:-1]]))
    norm = np.sqrt((g.rays[:, :, cols] ** 2).sum(0))
    rng_m = g.t[:, cols] * norm
    y = g.point[1][:, cols]
    target = (np.abs(g.normal[1][:, cols]) < 0.7) & (y > 0.15) & (y < 1.6) & np.isfinite(rng_m)
    target &= rng_m < RADAR_MAX_RANGE_M
    masked = np.where(target, rng_m, np.inf)
    rows = np.argmin(masked, axis=0)
    best = masked[rows, np.arange(cols.size)]
    ok = np.isfinite(best) & (rng.random(cols.size) > 0.25)
    rows, cols, best = rows[ok], cols[ok], best[ok]
    c = cls[rows, cols]
    lo = np.array([_RCS.get(int(v), (1.0, 5.0))[0] for v in c], np.float32)
    hi = np.array([_RCS.get(int(v), (1.0, 5.0))[1] for v in c], np.float32)
    inten = rng.uniform(lo, hi) if c.size else np.zeros(0, np.float32)
    r = np.maximum(best + rng.normal(0, 0.15, best.size), 0.5)
    # a few multipath ghosts near the horizon
    ng = int(rng.poisson(2))
    grow = np.clip(np.round(cam.cy + rng.normal(0, 0.03 * H, ng)), 0, H - 1).astype(np.int64)
    gcol = rng.integers(0, W, ng)
    rows = np.concatenate([rows, grow])
    cols = np.concatenate([cols, gcol])
    r = np.concatenate([r, rng.uniform(5.0, 80.0, ng)])
    inten = np.concatenate([inten, rng.uniform(1.0, 10.0, ng)])
    return Points(
        rows,
        cols,
        r.astype(np.float32),
        (np.asarray(inten, np.float32) / 100.0),
        np.zeros(rows.size, np.float32),
    )
