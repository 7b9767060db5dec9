"""The look of one synthetic sample: weather, time of day, sun and sky light, fog, wetness, snow and the
camera's exposure and noise (docs/design.md §9). The DeLiVER conditions and the MUSES cases map onto
(weather, night) pairs; :func:`make_look` draws the rest."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

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
