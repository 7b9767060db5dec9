"""Data pipeline speed (a benchmark, not a test).

``bench_loading``: samples per second for DeLiVER-layout 1024×1024 four-modality samples, decode +
the recipe's training transforms (docs/design.md §3.3; crop 1024), through a ``DataLoader`` with 0, 1
and 2 workers. ``bench_synth``: synthetic scene generation speed (samples per minute at 256 and 512 px)
with :func:`equiseg.data.synth.generate`, when that module is importable.

Everything runs under the CPU allocator setting the ``equiseg`` command applies
(:func:`equiseg.configure_cpu_allocator`: ``EQUISEG_CPU_ALLOCATOR``, default ``retain``).

The comparison with the pre-OpenCV path (Pillow + a hand-written PNG decoder + ``grid_sample``) that
this script used to run is gone with the frozen copies of that path; its last measurement is in the
README (Performance, Data) and ``docs/results/benchmarks/data_speed.json``, and the copies are in git
history (``benchmarks/_legacy_io.py`` and ``benchmarks/_legacy_transforms.py`` at commit 99dc2d4).

Usage::

    python benchmarks/data_speed.py                      # both parts, defaults below
    python benchmarks/data_speed.py --parts loading synth --samples 8 --workers 0 1 2 --synth-samples 20
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import PIL
import torch
from PIL import Image
from torch.utils.data import DataLoader

from equiseg import configure_cpu_allocator
from equiseg.data import DeLiVER, build_train_transform


def _smooth_image(rng: np.random.Generator, size: int, channels: int) -> np.ndarray:
    """Photo-like uint8 content (low-frequency field + mild noise), so PNG sizes resemble real data."""
    coarse = rng.random((size // 64 + 2, size // 64 + 2, channels)).astype(np.float32)
    t = torch.from_numpy(coarse).permute(2, 0, 1)[None]
    field = torch.nn.functional.interpolate(t, size=(size, size), mode="bicubic", align_corners=False)[0]
    field = field.permute(1, 2, 0).numpy() * 200 + rng.normal(0, 6, (size, size, channels))
    return np.clip(field, 0, 255).astype(np.uint8)


def write_deliver_tree(root: Path, n: int, size: int = 1024, seed: int = 0) -> None:
    """``n`` DeLiVER-layout samples of ``size``² (RGB, HHA, event, LiDAR, semantic) under ``root``."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        cond = ("cloud", "fog", "night", "rain", "sun")[i % 5]
        stem = f"{i:06d}"
        arrays = {
            ("img", "rgb"): _smooth_image(rng, size, 3),
            ("hha", "depth"): _smooth_image(rng, size, 3),
            ("event", "event"): (rng.random((size, size, 3)) < 0.03).astype(np.uint8) * 255,
            ("lidar", "lidar"): (rng.random((size, size, 3)) < 0.05).astype(np.uint8)
            * rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
            ("semantic", "semantic"): np.repeat(
                (_smooth_image(rng, size, 1)[..., :1] // 11 + 1).clip(1, 25), 3, axis=2
            ).astype(np.uint8),
        }
        for (folder, modal), array in arrays.items():
            path = root / folder / cond / "train" / "MAP_1" / f"{stem}_{modal}_front.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path)


def bench_loading(
    samples: int = 8,
    size: int = 1024,
    crop: int = 1024,
    workers: tuple[int, ...] = (0, 1, 2),
    epochs: int = 2,
) -> dict[str, float]:
    """Samples/s of ``DeLiVER`` + ``build_train_transform`` for each worker count.

    Returns:
        ``{"workers=K": samples_per_second}``; also ``"decode_only"`` (no transform, main process).
    """
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "DeLiVER"
        t0 = time.perf_counter()
        write_deliver_tree(root, samples, size)
        print(f"wrote {samples} samples of {size}² in {time.perf_counter() - t0:.1f} s")
        plain = DeLiVER(root, "train")
        t0 = time.perf_counter()
        for i in range(len(plain)):
            plain[i]
        results["decode_only"] = len(plain) / (time.perf_counter() - t0)
        print(f"decode only (main process): {results['decode_only']:.2f} samples/s")
        transform = build_train_transform(
            crop, plain.modalities, plain.norm_stats, plain.rgb_modalities, seed=0
        )
        ds = DeLiVER(root, "train", transform=transform)
        for k in workers:
            loader = DataLoader(ds, batch_size=1, shuffle=True, num_workers=k, persistent_workers=k > 0)
            next(iter(loader))  # start the workers outside the timing
            t0 = time.perf_counter()
            n = 0
            for _ in range(epochs):
                for inputs, _label in loader:
                    n += inputs[0].shape[0]
            results[f"workers={k}"] = n / (time.perf_counter() - t0)
            print(f"decode + train transform, {k} worker(s): {results[f'workers={k}']:.2f} samples/s")
    return results


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``, else ``lscpu``'s field, else ``platform``)."""
    info = Path("/proc/cpuinfo")
    if info.exists():
        for line in info.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    with contextlib.suppress(OSError, ValueError):
        import subprocess

        for line in subprocess.run(
            ["lscpu"], capture_output=True, text=True, check=False
        ).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def bench_synth(sizes: tuple[int, ...] = (256, 512), samples: int = 20) -> dict[str, float]:
    """Samples/minute of ``equiseg.data.synth.generate`` (DeLiVER layout, one split) per image size."""
    synth = importlib.import_module("equiseg.data.synth")
    results: dict[str, float] = {}
    for s in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            synth.generate(tmp, layout="deliver", splits={"train": samples}, size=(s, s), seed=0)
            per_min = samples / (time.perf_counter() - t0) * 60
        results[f"synth_{s}"] = per_min
        print(f"synthetic generation {s}×{s}: {per_min:.0f} samples/min")
    return results


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", nargs="+", choices=("loading", "synth"), default=["loading", "synth"])
    p.add_argument("--threads", type=int, default=1, help="torch and OpenCV threads")
    p.add_argument("--samples", type=int, default=8, help="DeLiVER samples written for the loading benchmark")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--crop", type=int, default=1024)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--synth-sizes", type=int, nargs="+", default=[256, 512])
    p.add_argument("--synth-samples", type=int, default=20)
    p.add_argument("--json", type=Path, help="also write the numbers here")
    args = p.parse_args(argv)
    allocator = configure_cpu_allocator()  # as `equiseg train` loads data; importing equiseg applies nothing
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    print(
        f"torch {torch.__version__}, OpenCV {cv2.__version__}, Pillow {PIL.__version__}, numpy {np.__version__}, "
        f"Python {sys.version.split()[0]}; {os.cpu_count()} CPUs, {torch.get_num_threads()} torch / "
        f"{cv2.getNumThreads()} OpenCV threads; CPU allocator {allocator}; CPU: {cpu_model()}"
    )
    results: dict[str, float] = {}
    if "loading" in args.parts:
        results.update(bench_loading(args.samples, args.size, args.crop, tuple(args.workers)))
    if "synth" in args.parts:
        try:
            has_generate = hasattr(importlib.import_module("equiseg.data.synth"), "generate")
        except ImportError as e:
            print(f"skipping synthetic generation: equiseg.data.synth does not import ({e})")
        else:
            if has_generate:
                results.update(bench_synth(tuple(args.synth_sizes), args.synth_samples))
            else:
                print("skipping synthetic generation: equiseg.data.synth has no generate()")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
