"""Data pipeline speed (issue 3 and issue 11 item 5 benchmarks; not a test).

``bench_compare`` (issue 11 item 5): decode + SPEC §2 training transform (crop 1024) of 1024×1024
four-modality DeLiVER samples (rgb, depth, event, lidar; written by :func:`equiseg.data.synth.generate`)
through today's OpenCV path and through the path it replaced, in one run, interleaved sample by
sample so that a shared machine's load hits both alike, with the same ``torch.Generator`` seed per
sample for both (the same augmentation draws). The replaced path is the frozen copies
``benchmarks/_legacy_io.py`` (Pillow + the hand-written 16-bit PNG decoder) and
``benchmarks/_legacy_transforms.py`` (float ``grid_sample``), plugged into today's ``DeLiVER`` loader.
Prints per path the mean decode / transform / total time and the rate, the ratio, and the CPU.

``bench_loading``: samples per second for DeLiVER-layout 1024×1024 four-modality samples, decode +
SPEC §2 training transforms (crop 1024), through a ``DataLoader`` with 0, 1 and 2 workers.
``bench_synth``: synthetic scene generation speed (samples per minute at 256 and 512 px) with
:func:`equiseg.data.synth.generate`, when that module is importable.

Everything runs under the CPU allocator setting the ``equiseg`` command applies
(:func:`equiseg.configure_cpu_allocator`: ``EQUISEG_CPU_ALLOCATOR``, default ``retain``).

Usage::

    python benchmarks/data_speed.py                      # all three parts, defaults below
    python benchmarks/data_speed.py --parts compare --compare-samples 2 --repeats 3 --threads 1
    python benchmarks/data_speed.py --parts loading synth --samples 8 --workers 0 1 2 --synth-samples 20
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import PIL
import torch
from PIL import Image
from torch.utils.data import DataLoader

import equiseg.data.folder
from equiseg import configure_cpu_allocator
from equiseg.data import DeLiVER, build_train_transform

HERE = Path(__file__).resolve().parent


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


def _frozen(name: str) -> ModuleType:
    """A frozen copy in ``benchmarks/`` (not package code), imported by file path."""
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def _decoders(io_module: ModuleType | None) -> Iterator[None]:
    """Let ``FolderDataset`` (hence ``DeLiVER``) decode with ``io_module``'s readers (None: today's)."""
    folder = equiseg.data.folder
    saved = folder.read_image, folder.to_chw_tensor
    if io_module is not None:
        folder.read_image, folder.to_chw_tensor = io_module.read_image, io_module.to_chw_tensor
    try:
        yield
    finally:
        folder.read_image, folder.to_chw_tensor = saved


def bench_compare(
    samples: int = 2, repeats: int = 3, size: int = 1024, crop: int = 1024, seed: int = 0
) -> dict[str, float]:
    """Decode + training transform of ``size``² DeLiVER samples: replaced path vs today's, interleaved.

    Returns:
        ``{"<path>_<decode|transform|total>_ms": mean, "<path>_rate": samples/s, "ratio": new/old
        rate (from the mean totals), "ratio_median": the same from the median totals}`` for paths
        ``old`` and ``new``.
    """
    synth = importlib.import_module("equiseg.data.synth")
    legacy_io, legacy_tf = _frozen("_legacy_io"), _frozen("_legacy_transforms")
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        synth.generate(
            tmp, layout="deliver", splits={"train": samples}, size=(size, size), seed=seed, failures=[],
            progress=False,
        )  # fmt: skip
        print(f"generated {samples} DeLiVER sample(s) of {size}² in {time.perf_counter() - t0:.1f} s")
        ds = DeLiVER(tmp, "train", modalities=("rgb", "depth", "event", "lidar"))
        paths = {
            "old": (legacy_io, legacy_tf.build_train_transform(crop, ds.modalities, ds.norm_stats, ds.rgb_modalities)),
            "new": (None, build_train_transform(crop, ds.modalities, ds.norm_stats, ds.rgb_modalities)),
        }  # fmt: skip
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}

        def one(name: str, index: int, draw: int) -> tuple[float, float]:
            io_module, transform = paths[name]
            with _decoders(io_module):
                t0 = time.perf_counter()
                inputs, label = ds[index]  # no transform on the data set: decoding only
                t1 = time.perf_counter()
                transform(inputs, label, generator=torch.Generator().manual_seed(draw))
                return t1 - t0, time.perf_counter() - t1

        for name in paths:  # warm-up: imports, first allocations
            one(name, 0, seed)
        for rep in range(repeats):
            for i in range(len(ds)):
                order = list(paths) if (rep + i) % 2 == 0 else list(paths)[::-1]  # neither always goes first
                for name in order:  # interleaved, the same draws for both paths
                    times[name].append(one(name, i, seed + 1000 * rep + i))
    for name, ts in times.items():
        decode, transform = (statistics.mean(x[k] for x in ts) * 1e3 for k in (0, 1))
        totals = [d + t for d, t in ts]
        results.update({f"{name}_decode_ms": decode, f"{name}_transform_ms": transform})
        results[f"{name}_total_ms"] = statistics.mean(totals) * 1e3
        results[f"{name}_total_median_ms"] = statistics.median(totals) * 1e3
        results[f"{name}_rate"] = 1e3 / results[f"{name}_total_ms"]
    results["ratio"] = results["old_total_ms"] / results["new_total_ms"]
    results["ratio_median"] = results["old_total_median_ms"] / results["new_total_median_ms"]
    n = len(times["new"])
    print(
        f"\ndecode + training transform, {size}² DeLiVER rgb+depth+event+lidar, crop {crop}, {n} samples per path"
    )
    print(
        f"{'path':<36} {'decode ms':>10} {'transform ms':>13} {'total ms':>9} {'median ms':>10} {'samples/s':>10}"
    )
    labels = {"old": "old (Pillow + own PNG, grid_sample)", "new": "new (OpenCV)"}
    for name in paths:
        r = {k.split("_", 1)[1]: v for k, v in results.items() if k.startswith(f"{name}_")}
        print(
            f"{labels[name]:<36} {r['decode_ms']:>10.1f} {r['transform_ms']:>13.1f} {r['total_ms']:>9.1f} "
            f"{r['total_median_ms']:>10.1f} {r['rate']:>10.2f}"
        )
    print(f"ratio new/old rate: {results['ratio']:.2f}× (from the medians: {results['ratio_median']:.2f}×)")
    print(f"CPU: {cpu_model()}; load average {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return results


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
    p.add_argument(
        "--parts", nargs="+", choices=("compare", "loading", "synth"), default=["compare", "loading", "synth"]
    )
    p.add_argument(
        "--threads", type=int, default=1, help="torch and OpenCV threads (1: a like-for-like comparison)"
    )
    p.add_argument("--compare-samples", type=int, default=2, help="DeLiVER samples generated for 'compare'")
    p.add_argument("--repeats", type=int, default=3, help="passes over those samples per path ('compare')")
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
    if "compare" in args.parts:
        results.update(bench_compare(args.compare_samples, args.repeats, args.size, args.crop))
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
