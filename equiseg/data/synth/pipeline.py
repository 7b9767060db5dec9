"""Rendering one synthetic sample and writing data sets in the DeLiVER and MUSES layouts
(docs/design.md §4, §9)."""

from __future__ import annotations

import io
import math
import os
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from equiseg.data.synth import render, sensors, streets
from equiseg.data.synth import scene as sc
from equiseg.utils import check_names

LAYOUTS = ("deliver", "muses")
SPLITS = ("train", "val", "test")
DELIVER_CONDITIONS = ("cloud", "fog", "night", "rain", "sun")
DELIVER_FAILURES = ("motionblur", "overexposure", "underexposure", "lidarjitter", "eventlowres")
MUSES_CONDITIONS = ("clear", "fog", "rain", "snow")
MUSES_TIMES_OF_DAY = ("day", "night")
MUSES_ENCODINGS = ("npz", "png")

# DeLiVER condition -> (weather, night) of the renderer
DELIVER_LOOKS = {"cloud": ("cloud", False), "fog": ("fog", False), "night": ("clear", True),
                  "rain": ("rain", False), "sun": ("clear", False)}  # fmt: skip
HFOV_DEG = 90.0  # CARLA's default camera field of view
PNG_LEVEL = 3  # zlib level of the written PNGs (speed vs. size; the bytes are deterministic)


@dataclass
class Case:
    """What one sample shows: a DeLiVER condition (+ failure) or a MUSES weather and time of day."""

    weather: str
    night: bool
    failure: str | None
    folder: str  # DeLiVER condition folder or MUSES weather
    tod: str = "day"  # MUSES time of day

    @property
    def name(self) -> str:
        """The case a per-case evaluation files the sample under."""
        return self.failure or self.folder


@dataclass
class Sample:
    """The arrays of one rendered sample.

    Attributes:
        rgb: (H, W, 3) uint8 camera image.
        depth: (H, W) float32 planar depth in metres (``inf`` for the sky).
        label: (H, W) int64 DeLiVER class index (0..24).
        label_cs: (H, W) int64 Cityscapes train id (0..18).
        events: ``(positive, negative)`` int16 counts, at ``1/4`` resolution for ``eventlowres``.
        lidar: lidar returns.
        radar: radar returns (None unless requested).
    """

    rgb: np.ndarray
    depth: np.ndarray
    label: np.ndarray
    label_cs: np.ndarray
    events: tuple[np.ndarray, np.ndarray]
    lidar: sensors.Points
    radar: sensors.Points | None


def deliver_case(condition: str, failure: str | None = None) -> Case:
    """The :class:`Case` of a DeLiVER condition (cloud, fog, night, rain, sun) with an optional failure."""
    if condition not in DELIVER_LOOKS:
        raise ValueError(
            f"unknown DeLiVER condition {condition!r}; choose from {', '.join(DELIVER_CONDITIONS)}"
        )
    if failure is not None and failure not in DELIVER_FAILURES:
        raise ValueError(f"unknown DeLiVER failure {failure!r}; choose from {', '.join(DELIVER_FAILURES)}")
    return Case(*DELIVER_LOOKS[condition], failure, condition)


def muses_case(condition: str, tod: str = "day") -> Case:
    """The :class:`Case` of a MUSES weather (clear, fog, rain, snow) by day or night."""
    if condition not in MUSES_CONDITIONS or tod not in MUSES_TIMES_OF_DAY:
        raise ValueError(
            f"unknown MUSES case {condition!r}/{tod!r}; choose from {MUSES_CONDITIONS} x day/night"
        )
    return Case(condition, tod == "night", None, condition, tod)


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of sample ``index`` of ``split``: independent of how many samples are generated."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(zlib.crc32(split.encode()), index)))


def render_sample(
    rng: np.random.Generator, size: tuple[int, int], case: Case, *, radar: bool = False, max_events: int = 3
) -> Sample:
    """Render every modality of one random scene.

    The scene geometry is drawn first, so the same generator state gives the same street whatever the
    case (a DeLiVER and a MUSES data set of the same seed show the same streets).

    Args:
        rng: the sample's generator (see :func:`sample_rng`).
        size: ``(H, W)``.
        case: weather, time of day and sensor failure.
        radar: also simulate the radar (MUSES).
        max_events: cap on the event count per pixel and polarity.
    """
    H, W = size
    scene, rig = streets.sample_scene(rng)
    cam = sc.Camera.looking_down_road(
        H, W, hfov_deg=HFOV_DEG, x=rig.x, y=rig.height, pitch_deg=rig.pitch, yaw_deg=rig.yaw
    )
    g = sc.cast(scene, cam)
    look = render.make_look(case.weather, case.night, rng)
    shaded = render.shade(scene, cam, g, look, rng)
    # precipitation differs between the two frames the event camera compares
    alpha_now, particle = render.precipitation(look, (H, W), rng)
    alpha_prev, _ = render.precipitation(look, (H, W), rng)
    now = shaded.base * (1 - alpha_now[..., None]) + alpha_now[..., None] * particle
    rgb = render.expose(now, look, rng, case.failure)

    motion = sensors.sample_motion(rng)
    du, dv = sensors.ego_flow(cam, g.t, motion, max_px=0.08 * W)
    lum_particle = float(render.luminance(particle))
    lum_prev = (
        sensors.warp(render.luminance(shaded.base), du, dv) * (1 - alpha_prev) + alpha_prev * lum_particle
    )
    lum_now = render.luminance(now) * look.exposure
    lum_prev = lum_prev * look.exposure
    if case.failure == "eventlowres":
        k = sensors.EVENT_LOWRES_FACTOR
        lum_now, lum_prev = sensors.block_mean(lum_now, k), sensors.block_mean(lum_prev, k)
    events = sensors.simulate_events(lum_now, lum_prev, look, rng, max_events)

    tables = scene.tables()
    label = tables["cls"][g.pid]
    lidar = sensors.lidar_scan(cam, g, shaded.refl, look, rng, jitter=case.failure == "lidarjitter")
    rad = sensors.radar_scan(cam, g, label, rng) if radar else None
    return Sample(
        rgb=rgb, depth=g.t, label=label, label_cs=tables["cs"][g.pid], events=events, lidar=lidar, radar=rad
    )


# --- schedules: which case sample i shows ------------------------------------------------------
def deliver_schedule(conditions: Sequence[str], failures: Sequence[str]) -> list[Case]:
    """The repeating cycle of DeLiVER cases.

    Every condition, then every failure, then every condition again as often as needed for clean
    samples to be about two thirds of the cycle (with the defaults: 5 + 5 + 5, the 10 cases in the
    first 10 samples). Failure samples carry a condition folder too: the cycle's ``j``-th failure
    uses condition ``j`` (cyclically), shifted by one per repetition of the cycle (see
    :func:`case_of`).
    """
    if not conditions:
        raise ValueError("at least one DeLiVER condition is needed")
    clean = [deliver_case(c) for c in conditions]
    broken = [Case("clear", False, f, "") for f in failures]  # condition filled in by case_of
    repeats = max(1, math.ceil(2 * len(failures) / len(conditions)))
    return clean + broken + clean * (repeats - 1)


def muses_schedule(conditions: Sequence[str]) -> list[Case]:
    """The repeating cycle of MUSES cases: every weather by day, then every weather by night."""
    return [muses_case(c, tod) for tod in MUSES_TIMES_OF_DAY for c in conditions]


def case_of(cycle: list[Case], conditions: Sequence[str], index: int) -> Case:
    """The case of sample ``index``; failures get a condition that rotates with the cycle."""
    case = cycle[index % len(cycle)]
    if case.failure is None:
        return case
    j = index % len(cycle) - len(conditions)
    return deliver_case(conditions[(j + index // len(cycle)) % len(conditions)], case.failure)


# --- writers -------------------------------------------------------------------------------------
def _png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=PNG_LEVEL)
    return buf.getvalue()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _write_png16(path: Path, array: np.ndarray) -> None:
    """uint16 PNG as OpenCV writes it (array channel 0 in the file's blue channel)."""
    from equiseg.data.io import write_png16

    path.parent.mkdir(parents=True, exist_ok=True)
    write_png16(path, array, bgr=True, compress_level=PNG_LEVEL)


def _write_npz(path: Path, array: np.ndarray) -> None:
    # np.savez_compressed stamps the zip entries with the current time: write them ourselves with a
    # fixed timestamp so that the same seed gives byte-identical files.
    import zipfile

    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
    info = zipfile.ZipInfo("arr_0.npy", date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(info, buf.getvalue())


def write_deliver(root: Path, split: str, case: Case, seq: str, frame: str, s: Sample) -> list[Path]:
    """Write one sample in the DeLiVER layout (docs/design.md §4.1); returns the written paths."""
    H, W = s.label.shape
    sub = Path(case.folder) / split / seq
    sem = np.zeros((H, W, 3), np.uint8)
    sem[..., 0] = s.label + 1  # raw 1..25 in channel 0, like CARLA's semantic camera
    depth = sensors.encode_depth(s.depth)
    depth_png = _png_bytes(np.repeat(depth[..., None], 3, axis=2))
    files = {
        root / "img" / sub / f"{frame}_rgb_front.png": _png_bytes(s.rgb),
        root / "hha" / sub / f"{frame}_depth_front.png": depth_png,
        root / "depth" / sub / f"{frame}_depth_front.png": depth_png,
        root / "event" / sub / f"{frame}_event_front.png": _png_bytes(
            sensors.encode_events_deliver(*s.events)
        ),
        root / "lidar" / sub / f"{frame}_lidar_front.png": _png_bytes(
            sensors.encode_lidar_deliver(s.lidar, (H, W))
        ),
        root / "semantic" / sub / f"{frame}_semantic_front.png": _png_bytes(sem),
    }
    for path, data in files.items():
        _write(path, data)
    return list(files)


def write_muses(root: Path, split: str, case: Case, stem: str, s: Sample, encoding: str) -> list[Path]:
    """Write one sample in the MUSES layout (docs/design.md §4.2); returns the written paths."""
    H, W = s.label.shape
    sub = Path(split) / case.folder / case.tod
    paths = [
        root / "frame_camera" / sub / f"{stem}_frame_camera.png",
        root / "gt_semantic" / sub / f"{stem}_gt_labelTrainIds.png",
    ]
    _write(paths[0], _png_bytes(s.rgb))
    _write(paths[1], _png_bytes(s.label_cs.astype(np.uint8)))
    pos, neg = s.events
    arrays = {
        "lidar": sensors.points_to_array(s.lidar, (H, W)),
        "radar": sensors.points_to_array(s.radar, (H, W), third="zero"),
        "event_camera": np.stack([pos, neg, np.zeros_like(pos)], axis=-1).astype(np.float32),
    }
    for name, arr in arrays.items():
        base = root / "projected_to_rgb" / name / sub / f"{stem}_{name}"
        if encoding == "npz":
            path = base.with_suffix(".npz")
            _write_npz(path, arr)
        else:
            path = base.with_suffix(".png")
            shifted = arr if name == "event_camera" else (arr + 100.0) * 150.0
            _write_png16(path, np.clip(np.round(shifted), 0, 65535).astype(np.uint16))
        paths.append(path)
    return paths


# --- the entry point -------------------------------------------------------------------------------
def _check_names(
    given: Sequence[str] | None, known: Sequence[str], what: str, where: str, allow_empty: bool = False
) -> list[str]:
    """``given`` checked against ``known`` (:func:`equiseg.utils.check_names`; a string is split at
    commas); None: all of ``known``."""
    if given is None:
        return list(known)
    if isinstance(given, str):
        given = [v for v in given.split(",") if v]
    return check_names(given, known, what=what, where=where, allow_empty=allow_empty)


def generate(
    out_dir: str | os.PathLike,
    layout: str = "deliver",
    splits: Mapping[str, int] | None = None,
    size: int | tuple[int, int] = (256, 256),
    seed: int = 0,
    conditions: Sequence[str] | None = None,
    failures: Sequence[str] | None = None,
    progress: bool = True,
    *,
    muses_encoding: str = "npz",
) -> dict:
    """Write a synthetic multimodal street-scene data set (see the package docstring).

    Args:
        out_dir: root folder; created if needed; existing files of the same names are overwritten.
        layout: ``"deliver"`` or ``"muses"``.
        splits: samples per split, keys among train/val/test (default ``{"train": 200, "val": 50}``).
        size: ``(H, W)`` or one int for square images.
        seed: base seed; sample ``i`` of split ``s`` depends only on ``(seed, s, i)``.
        conditions: DeLiVER conditions (cloud, fog, night, rain, sun) or MUSES weathers (clear,
            fog, rain, snow); None = all. A comma-separated string is accepted.
        failures: DeLiVER sensor failures (motionblur, overexposure, underexposure, lidarjitter,
            eventlowres); None = all for DeLiVER, none for MUSES (which has no failure cases);
            ``[]`` = none.
        progress: show a tqdm progress bar.
        muses_encoding: ``"npz"`` (float32 arrays) or ``"png"`` (OpenCV-style uint16) for the MUSES
            projected lidar/radar/event images.

    Returns:
        A summary: ``root``, ``layout``, ``size``, ``seed``, ``splits`` (samples per split), ``cases``
        (per split, samples per case as the loaders' ``case=`` filter counts them: a DeLiVER failure
        sample counts for its condition and its failure, a MUSES sample for its weather and its time
        of day), ``files`` (number written), ``modalities`` (folder per modality), ``manifest`` (the
        ``equiseg_synth.json`` written into the root: frames per split and per condition, which
        ``equiseg data verify`` compares the root with) and ``seconds``.

    Raises:
        ValueError: unknown layout, split, condition, failure or encoding; bad size or count.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose from {', '.join(LAYOUTS)}")
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise ValueError(f"--out {out_dir} is a file, expected a folder (it is created if missing)")
    splits = dict(splits) if splits is not None else {"train": 200, "val": 50}
    for name, count in splits.items():
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; choose from {', '.join(SPLITS)}")
        if not isinstance(count, (int, np.integer)) or count < 0:
            raise ValueError(f"split {name!r}: expected a sample count >= 0, got {count!r}")
    H, W = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if H < 16 or W < 16:
        raise ValueError(f"size must be at least 16x16, got {H}x{W}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    if muses_encoding not in MUSES_ENCODINGS:
        raise ValueError(
            f"unknown muses_encoding {muses_encoding!r}; choose from {', '.join(MUSES_ENCODINGS)}"
        )
    root = Path(out_dir)
    if layout == "deliver":
        conds = _check_names(conditions, DELIVER_CONDITIONS, "DeLiVER condition", "--conditions")
        fails = _check_names(failures, DELIVER_FAILURES, "DeLiVER failure", "--failures", allow_empty=True)
        cycle = deliver_schedule(conds, fails)
        modalities = {m: str(root / m) for m in ("img", "hha", "depth", "event", "lidar", "semantic")}
    else:
        conds = _check_names(conditions, MUSES_CONDITIONS, "MUSES condition", "--conditions")
        if failures:
            raise ValueError(f"failures {list(failures)} are DeLiVER cases; the MUSES layout has none")
        cycle = muses_schedule(conds)
        modalities = {"frame_camera": str(root / "frame_camera"), "gt_semantic": str(root / "gt_semantic")}
        modalities |= {m: str(root / "projected_to_rgb" / m) for m in ("lidar", "radar", "event_camera")}

    from tqdm.auto import tqdm

    start = time.perf_counter()
    cases: dict[str, dict[str, int]] = {}
    conditions_seen: dict[str, dict[str, int]] = {}  # per split: frames per condition row of the verifier
    n_files = 0
    total = sum(int(c) for c in splits.values())
    with tqdm(total=total, disable=not progress, desc=f"synth {layout}", unit="sample") as bar:
        for split, count in splits.items():
            per_case: dict[str, int] = {}
            per_condition = conditions_seen.setdefault(split, {})
            for i in range(int(count)):
                case = case_of(cycle, conds, i) if layout == "deliver" else cycle[i % len(cycle)]
                block = i // len(cycle)
                s = render_sample(
                    sample_rng(seed, split, i),
                    (H, W),
                    case,
                    radar=layout == "muses",
                    max_events=3 if layout == "deliver" else 8,
                )
                if layout == "deliver":
                    seq = f"MAP_{block % 10 + 1}_point{block}" + (f"_{case.failure}" if case.failure else "")
                    n_files += len(write_deliver(root, split, case, seq, f"{i:06d}", s))
                    keys = (case.folder, case.failure) if case.failure else (case.folder,)
                else:
                    stem = f"REC{block:04d}_frame_{i:06d}"
                    n_files += len(write_muses(root, split, case, stem, s, muses_encoding))
                    keys = (case.folder, case.tod)
                for key in keys:
                    per_case[key] = per_case.get(key, 0) + 1
                cond = case.folder if layout == "deliver" else f"{case.folder}/{case.tod}"
                per_condition[cond] = per_condition.get(cond, 0) + 1
                bar.update(1)
            cases[split] = per_case
    # what was generated, for `equiseg data verify` to compare the root with (not the published sizes)
    from equiseg.data.verify import write_synth_manifest

    root.mkdir(parents=True, exist_ok=True)
    manifest = write_synth_manifest(
        root,
        layout,
        {
            s: {"frames": int(n), "conditions": conditions_seen[s], "size": [H, W], "seed": int(seed)}
            for s, n in splits.items()
        },
    )
    return {
        "root": str(root),
        "layout": layout,
        "size": [H, W],
        "seed": int(seed),
        "splits": {k: int(v) for k, v in splits.items()},
        "cases": cases,
        "files": n_files,
        "modalities": modalities,
        "manifest": str(manifest),
        "seconds": round(time.perf_counter() - start, 3),
    }
