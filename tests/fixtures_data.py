"""Builders of tiny hand-made DeLiVER / MUSES trees with known pixel values, for the data tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from equiseg.data.io import write_png16


def write_png8(path: Path, array: np.ndarray) -> Path:
    """Write an H×W or H×W×{1,3,4} uint8 array as an 8-bit PNG with Pillow."""
    a = np.asarray(array, dtype=np.uint8)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)
    return path


def pattern(h: int, w: int, c: int, seed: int) -> np.ndarray:
    """A deterministic uint8 H×W×C image whose pixels all differ from their neighbours."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, c), dtype=np.uint8)


def deliver_label(h: int, w: int, seed: int) -> np.ndarray:
    """Raw semantic PNG content (H×W×3 uint8): channel 0 in {0, 1..25, 255}, other channels noise."""
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 27, (h, w), dtype=np.uint8)
    raw[raw == 26] = 255
    raw.flat[:4] = (0, 255, 1, 25)  # the mapping cases, always present
    other = rng.integers(0, 256, (h, w, 2), dtype=np.uint8)
    return np.concatenate([raw[..., None], other], axis=2)


def make_deliver(
    root: Path,
    samples: list[tuple[str, str, str, str]],
    size: tuple[int, int] = (8, 12),
    event_size: tuple[int, int] | None = None,
    depth_channels: int = 1,
    lidar_channels: int = 4,
    depth_folder: str = "hha",
) -> dict[str, dict[str, np.ndarray]]:
    """Write a DeLiVER tree; ``samples`` are ``(condition, split, sequence, frame)`` tuples.

    RGB is 3-channel, depth ``depth_channels`` (1 = gray), lidar ``lidar_channels`` (4 = RGBA), event
    3-channel at ``event_size`` (default: full size). Returns, per RGB path (str), the arrays written.
    """
    h, w = size
    eh, ew = event_size or size
    written = {}
    for k, (cond, split, seq, frame) in enumerate(samples):

        def p(folder: str, modal: str, cond=cond, split=split, seq=seq, frame=frame) -> Path:
            return root / folder / cond / split / seq / f"{frame}_{modal}_front.png"

        arrays = {
            "rgb": pattern(h, w, 3, 10 * k),
            "depth": pattern(h, w, depth_channels, 10 * k + 1),
            "event": pattern(eh, ew, 3, 10 * k + 2),
            "lidar": pattern(h, w, lidar_channels, 10 * k + 3),
            "semantic": deliver_label(h, w, 10 * k + 4),
        }
        folders = {
            "rgb": "img",
            "depth": depth_folder,
            "event": "event",
            "lidar": "lidar",
            "semantic": "semantic",
        }
        for modal, array in arrays.items():
            write_png8(p(folders[modal], modal), array)
        written[str(p("img", "rgb"))] = arrays
    return written


def make_muses(
    root: Path,
    samples: list[tuple[str, str, str, str]],
    size: tuple[int, int] = (6, 10),
    encoding: str = "npz",
) -> dict[str, dict[str, np.ndarray]]:
    """Write a MUSES tree; ``samples`` are ``(split, condition, time, stem)``; ``encoding`` npz|npy|png.

    Returns per stem the arrays *as the SDK holds them* (float H×W×3 in physical units, channel order
    of the array), plus ``frame_camera`` (uint8 RGB) and ``label`` (uint8 trainIds).
    """
    h, w = size
    out = {}
    for k, (split, cond, tod, stem) in enumerate(samples):
        rng = np.random.default_rng(100 + k)
        tree = f"{split}/{cond}/{tod}/{stem}"
        rgb = pattern(h, w, 3, 200 + k)
        label = rng.integers(0, 19, (h, w), dtype=np.uint8)
        label.flat[:2] = (255, 18)
        write_png8(root / f"frame_camera/{tree}_frame_camera.png", rgb)
        write_png8(root / f"gt_semantic/{tree}_gt_labelTrainIds.png", label)
        arrays = {"frame_camera": rgb, "label": label}
        for mod in ("lidar", "radar", "event_camera"):
            if mod == "event_camera":  # counts
                v = rng.integers(0, 5, (h, w, 3)).astype(np.float32)
                v[..., 2] = 0
            else:  # values representable exactly by the PNG encoding: multiples of 1/150 above -100
                v = (rng.integers(0, 150 * 60, (h, w, 3)) / 150.0).astype(np.float32)
                v[0, 0] = 0.0
            if mod == "radar":
                v[..., 2] = 0
            base = root / f"projected_to_rgb/{mod}/{tree}_{mod}"
            base.parent.mkdir(parents=True, exist_ok=True)
            if encoding == "npz":
                np.savez_compressed(f"{base}.npz", v)
            elif encoding == "npy":
                np.save(f"{base}.npy", v)
            elif encoding == "png":  # as cv2.imwrite(file, array) writes it: array channel 0 = blue
                stored = v if mod == "event_camera" else (v.astype(np.float64) + 100.0) * 150.0
                write_png16(f"{base}.png", np.round(stored).astype(np.uint16), bgr=True)
            else:
                raise ValueError(encoding)
            arrays[mod] = v
        out[stem] = arrays
    return out
