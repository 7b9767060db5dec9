"""Robustness-benchmark throughput: :func:`equiseg.robustness.run_benchmark` (one pass over
the split, every corruption variant per sample) against a loop in the reference protocol's structure
(one pass over the split *per variant*, a fresh ``DataLoader`` that re-reads and re-transforms the data,
batch 4), on the same model, split and corruption seeds, in the same process.

Both loops evaluate the same variants (:func:`~equiseg.robustness.build_variants`: clean, the EMM
combinations, RMM per rate, NM per level) with the same per-sample corruptions
(:func:`~equiseg.robustness.corrupt_inputs` keyed by the sample's index in the split), so their numbers
agree up to how the model's kernels round at different batch sizes; the script reports the largest
difference of every summary and per-variant number.

    python benchmarks/robustness_speed.py                                  # tiny synthetic smoke run
    python benchmarks/robustness_speed.py --checkpoint demo_out/run/best.pt --data-root demo_out/data \\
        --variant-batch-sizes 1 8 --repeats 2 --out robustness_speed.json

Both loops run under the CPU allocator setting the ``equiseg`` command applies
(:func:`equiseg.configure_cpu_allocator`: ``EQUISEG_CPU_ALLOCATOR``, default ``retain``), applied at the
start of the run.

Without ``--checkpoint`` a tiny EQUISeg is trained for a few iterations on freshly generated synthetic
scenes (a smoke run of the script, not a measurement).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from equiseg.engine.metrics import SegMetrics
from equiseg.robustness import Variant, build_variants, corrupt_inputs, find_event_index, run_benchmark
from equiseg.robustness.benchmark import assemble_result

RATES = (0.25, 0.5, 0.75)
LEVELS = ("low", "mid", "high")
PS = (0.2, 0.1, 0.05)


def _collate(
    batch: Sequence[tuple[list[torch.Tensor], torch.Tensor]],
) -> tuple[list[torch.Tensor], torch.Tensor]:
    n = len(batch[0][0])
    return [torch.stack([s[0][m] for s in batch]) for m in range(n)], torch.stack([s[1] for s in batch])


def reference_loop(
    model: Callable[[list[torch.Tensor]], torch.Tensor],
    dataset: Any,
    variants: Sequence[Variant],
    *,
    num_classes: int,
    seed: int = 0,
    batch_size: int = 4,
    num_workers: int = 0,
    event_index: int | None = None,
    ignore_index: int | None = 255,
    class_names: Sequence[str] | None = None,
    device: torch.device | str = "cpu",
    repeat_full: Sequence[str] = (),
    timings: dict[str, float] | None = None,
    progress: bool = False,
) -> dict[str, SegMetrics]:
    """The reference protocol's structure: for every variant, a fresh pass over the whole split.

    Each pass builds a new unshuffled ``DataLoader`` (batch ``batch_size``, the last batch possibly
    smaller) over the map-style ``dataset``, so every sample is read and transformed again; each sample
    of a batch is corrupted on its own with the seeds :func:`~equiseg.robustness.run_benchmark` uses
    (its index in the split), the corrupted samples are re-stacked, and the batch goes through the model
    under :func:`torch.no_grad` (as the reference's evaluation does), arg-max, and the variant's
    :class:`SegMetrics`.

    Args:
        repeat_full: Tests (``"emm"``, ``"rmm"``) whose "nothing missing" combination gets its own pass
            again, as in the reference, where every test loops over all ``2^N - 1`` combinations (per
            RMM rate): a pass identical to the clean one, timed but not returned.
        timings: If given, receives the seconds spent in ``load`` (waiting for the loader: read,
            transform, collate), ``corrupt``, ``forward`` (model, resize, arg-max) and ``metrics``.

    Returns:
        ``{variant.key: SegMetrics}``, ready for :func:`~equiseg.robustness.benchmark.assemble_result`.
    """
    device = torch.device(device)
    passes = list(variants)
    if "emm" in repeat_full:
        passes.append(Variant("clean"))
    if "rmm" in repeat_full:
        passes += [Variant("clean")] * len({v.rate for v in variants if v.test == "rmm"})
    clock = dict.fromkeys(("load", "corrupt", "forward", "metrics"), 0.0)
    out: dict[str, SegMetrics] = {}
    with torch.no_grad():
        for k, v in enumerate(passes):
            m = SegMetrics(num_classes, ignore_index, class_names, device=device)
            loader = DataLoader(
                dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=_collate
            )
            start = 0
            t0 = time.perf_counter()
            for inputs, labels in loader:
                inputs = [x.to(device) for x in inputs]
                labels = labels.to(device=device, dtype=torch.int64)
                t1 = time.perf_counter()
                b = labels.shape[0]
                per_sample = [
                    corrupt_inputs(
                        v,
                        [x[j : j + 1] for x in inputs],
                        seed=seed,
                        sample_index=start + j,
                        event_index=event_index,
                    )
                    for j in range(b)
                ]
                batch = [torch.cat(ms) for ms in zip(*per_sample, strict=True)]
                t2 = time.perf_counter()
                logits = model(batch)
                if logits.shape[-2:] != labels.shape[-2:]:
                    logits = F.interpolate(
                        logits.float(), size=labels.shape[-2:], mode="bilinear", align_corners=False
                    )
                pred = logits.argmax(1)
                t3 = time.perf_counter()
                m.update(pred, labels)
                start += b
                t4 = time.perf_counter()
                for key, a, z in (
                    ("load", t0, t1),
                    ("corrupt", t1, t2),
                    ("forward", t2, t3),
                    ("metrics", t3, t4),
                ):
                    clock[key] += z - a
                t0 = time.perf_counter()
            out.setdefault(v.key, m)  # a repeated full pass is timed, the first one is kept
            if progress:
                print(f"\r  reference loop: pass {k + 1}/{len(passes)}", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    if timings is not None:
        timings.update(clock)
    return out


def numbers(result: Mapping[str, Any]) -> dict[str, float | None]:
    """Every number of a benchmark result worth comparing: the summary and each variant's mIoU/aAcc/mAcc."""
    flat: dict[str, float | None] = {f"summary/{k}": v for k, v in result["summary"].items()}

    def rows(prefix: str, combos: Iterable[Mapping[str, Any]]) -> None:
        for c in combos:
            for metric in ("mIoU", "aAcc", "mAcc"):
                flat[f"{prefix}/{c['name']}/{metric}"] = c[metric]

    for metric in ("mIoU", "aAcc", "mAcc"):
        flat[f"clean/{metric}"] = result["clean"][metric]
    if "emm" in result:
        rows("emm", result["emm"]["combinations"])
    for rate, sec in result.get("rmm", {}).items():
        rows(f"rmm[{rate}]", sec["combinations"])
    for lvl, sec in result.get("nm", {}).items():
        for metric in ("mIoU", "aAcc", "mAcc"):
            flat[f"nm/{lvl}/{metric}"] = sec[metric]
    return flat


def _diff(x: float | None, y: float | None) -> float:
    if x is None or y is None:
        return 0.0 if x is y else math.inf
    if math.isnan(x) or math.isnan(y):
        return 0.0 if math.isnan(x) and math.isnan(y) else math.inf
    return abs(x - y)


def max_abs_diff(a: Mapping[str, float | None], b: Mapping[str, float | None]) -> float:
    """Largest ``|a - b|`` over the keys of ``a`` and ``b``: 0 only if every number is identical (None and
    NaN count as equal to themselves; ``inf`` where only one side has a number or the key)."""
    if set(a) != set(b):
        return math.inf
    return max((_diff(a[k], b[k]) for k in a), default=0.0)


def cpu_model() -> str:
    info = Path("/proc/cpuinfo")
    if info.exists():
        for line in info.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


# ---------------------------------------------------------------------------------------------------
# model and data


def smoke_setup(tmp: Path, size: int = 64, val: int = 4, iters: int = 3) -> tuple[Path, Path]:
    """Synthetic scenes + a tiny EQUISeg trained for ``iters`` iterations: ``(checkpoint, data root)``."""
    import equiseg
    from equiseg.data.synth import generate

    root = tmp / "data"
    generate(
        root, layout="deliver", splits={"train": 8, "val": val}, size=(size, size), seed=0, progress=False
    )
    cfg = {
        "model": {
            "name": "equiseg_b0",
            "embed_dims": [8, 16, 40, 64],
            "depths": [1, 1, 1, 1],
            "decoder_dim": 16,
            "drop_path_rate": 0.0,
        },
        "data": {
            "root": str(root),
            "crop_size": [size, size],
            "val_short_side": None,
            "batch_size": 2,
            "num_workers": 0,
        },
        "train": {
            "max_iters": iters,
            "warmup_iters": 0,
            "val_interval": iters,
            "log_interval": 1,
            "device": "cpu",
        },
        "eval": {"convention": "present"},
        "work_dir": str(tmp / "run"),
    }
    result = equiseg.train(cfg, progress=False)
    return result.work_dir / "best.pt", root


def load_setup(
    checkpoint: Path, data_root: Path, config: str | None, max_samples: int | None, device: str | None
):
    from equiseg.engine.eval_setup import load_eval_setup
    from equiseg.tasks.demo import demo_config_path

    overrides = [f"data.root={data_root}"] + ([f"train.device={device}"] if device else [])
    return load_eval_setup(config or demo_config_path(), checkpoint, overrides, max_samples=max_samples)


# ---------------------------------------------------------------------------------------------------


def measure(
    model: Any,
    dataset: Any,
    *,
    modalities: Sequence[str],
    num_classes: int,
    class_names: Sequence[str] | None,
    ignore_index: int,
    convention: str,
    device: torch.device,
    variant_batch_sizes: Sequence[int] = (1, 8),
    rmm_rates: Sequence[float] = RATES,
    batch_size: int = 4,
    num_workers: int = 0,
    seed: int = 0,
    skip_reference: bool = False,
    repeat_full: Sequence[str] = (),
    repeats: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Time the reference-structure loop and ``run_benchmark`` at each variant batch size; compare numbers.

    With ``repeats > 1`` the loops run in interleaved rounds (reference, V1, V2, ..., reference, ...)
    and each reports its fastest round (``seconds``) besides all of them (``rounds_s``): on a shared
    machine the minimum is the least disturbed measurement. The numbers are those of the first round
    (every round computes the same ones; a difference is reported as ``rounds_identical: false``).
    """
    event_index = find_event_index(modalities)
    variants = build_variants(len(modalities), ("emm", "rmm", "nm"), rmm_rates, LEVELS)
    common = dict(
        ps=PS,
        seed=seed,
        convention=convention,
        tests=("emm", "rmm", "nm"),
        rmm_rates=tuple(rmm_rates),
        nm_levels=LEVELS,
    )
    n_passes = len(variants) + ("emm" in repeat_full) + len(rmm_rates) * ("rmm" in repeat_full)

    def reference(timings: dict[str, float]) -> dict[str, Any]:
        metrics = reference_loop(
            model,
            dataset,
            variants,
            num_classes=num_classes,
            seed=seed,
            batch_size=batch_size,
            num_workers=num_workers,
            event_index=event_index,
            ignore_index=ignore_index,
            class_names=class_names,
            device=device,
            repeat_full=repeat_full,
            timings=timings,
            progress=progress,
        )
        return assemble_result(
            metrics,
            num_samples=len(dataset),
            num_classes=num_classes,
            names=list(modalities),
            event_index=event_index,
            model_aware_missing=False,
            model=model,
            model_name=None,
            **common,
        )

    def ours(vbs: int) -> dict[str, Any]:
        return run_benchmark(
            model,
            dataset,
            device=device,
            progress=progress,
            num_classes=num_classes,
            modality_names=list(modalities),
            class_names=class_names,
            ignore_index=ignore_index,
            variant_batch_size=vbs,
            **common,
        )

    jobs: list[dict[str, Any]] = []
    if not skip_reference:
        name = f"reference structure (batch {batch_size}, {n_passes} passes, workers {num_workers})"
        jobs.append({"name": name, "reference": True})
    jobs += [
        {"name": f"run_benchmark, variant_batch_size={v}", "variant_batch_size": v}
        for v in variant_batch_sizes
    ]
    with torch.inference_mode():  # warm-up: allocator, kernel selection, lazy imports
        inputs, _ = dataset[0]
        model([x.unsqueeze(0).to(device) for x in inputs])
    for _ in range(max(1, repeats)):
        for job in jobs:
            timings: dict[str, float] = {}
            t = time.perf_counter()
            res = reference(timings) if job.get("reference") else ours(job["variant_batch_size"])
            job.setdefault("rounds_s", []).append(time.perf_counter() - t)
            nums = numbers(res)
            if "numbers" not in job:
                job.update(summary=res["summary"], numbers=nums, rounds_identical=True)
                if timings:
                    job["breakdown_s"] = timings
            elif max_abs_diff(nums, job["numbers"]) != 0.0:
                job["rounds_identical"] = False
    ref = jobs[0] if not skip_reference else None
    base = next((j for j in jobs if j.get("variant_batch_size") == 1), None)
    for job in jobs:
        job["seconds"] = min(job["rounds_s"])
        job["speedup"] = ref["seconds"] / job["seconds"] if ref else None
        job["max_diff_vs_reference"] = max_abs_diff(job["numbers"], ref["numbers"]) if ref else None
        job["max_diff_vs_batch1"] = max_abs_diff(job["numbers"], base["numbers"]) if base else None
        job["summary_identical_to_reference"] = (
            max_abs_diff(job["summary"], ref["summary"]) == 0.0 if ref else None
        )
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "num_samples": len(dataset),
        "input_shape": list(dataset[0][0][0].shape),
        "modalities": list(modalities),
        "variants": len(variants),
        "rmm_rates": list(rmm_rates),
        "repeats": max(1, repeats),
        "runs": jobs,
    }


def markdown(report: Mapping[str, Any]) -> str:
    def f(x: float | None, spec: str) -> str:
        return "–" if x is None else format(x, spec)

    lines = [
        f"CPU: {report['cpu']} ({report['cores']} cores), torch {report['torch']}, {report['threads']} threads, "
        f"device {report['device']}; {report['num_samples']} samples of {report['input_shape']} × "
        f"{len(report['modalities'])} modalities, {report['variants']} variants; wall = fastest of "
        f"{report['repeats']} interleaved round(s)",
        "",
        "| loop | wall (s) | speed-up vs reference | summary identical to reference | max abs diff vs reference "
        "(all numbers) | max abs diff vs variant_batch_size=1 |",
        "|---|---:|---:|:---:|---:|---:|",
    ]
    for r in report["runs"]:
        same = r["summary_identical_to_reference"]
        lines.append(
            f"| {r['name']} | {r['seconds']:.1f}"
            + (f" ({', '.join(f'{x:.1f}' for x in r['rounds_s'])})" if len(r["rounds_s"]) > 1 else "")
            + f" | {f(r['speedup'], '.2f')}× | "
            f"{'–' if same is None else ('yes' if same else 'no')} | {f(r['max_diff_vs_reference'], '.3g')} | "
            f"{f(r['max_diff_vs_batch1'], '.3g')} |"
        )
    b = report["runs"][0].get("breakdown_s")
    if b:
        total = sum(b.values()) or 1.0
        parts = ", ".join(f"{k} {v:.1f} s ({100 * v / total:.0f} %)" for k, v in b.items())
        lines += ["", f"Reference loop time by phase (first round): {parts}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--checkpoint", type=Path, default=None, help="equiseg checkpoint (default: tiny smoke model)"
    )
    p.add_argument(
        "--data-root", type=Path, default=None, help="data set root (default: synthetic smoke data)"
    )
    p.add_argument(
        "--config", default=None, help="experiment config for the data set (default: the demo config)"
    )
    p.add_argument("--max-samples", type=int, default=None, help="first N val samples only")
    p.add_argument("--variant-batch-sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--rmm-rates", type=float, nargs="+", default=list(RATES))
    p.add_argument("--batch-size", type=int, default=4, help="reference loop batch size")
    p.add_argument("--workers", type=int, default=0, help="reference loop DataLoader workers")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: unchanged)")
    p.add_argument("--device", default=None, help="train.device override (default: the config's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1, help="interleaved rounds; each loop reports its fastest")
    p.add_argument("--skip-reference", action="store_true", help="time run_benchmark only")
    p.add_argument(
        "--protocol-passes",
        action="store_true",
        help="reference loop also re-runs the 'nothing missing' pass of EMM and of each RMM rate, as the "
        "reference does (default: the distinct variants only, the conservative comparison)",
    )
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--out", type=Path, default=None, help="write the report as JSON here")
    args = p.parse_args(argv)
    from equiseg.engine.allocator import configure_cpu_allocator

    configure_cpu_allocator()  # as `equiseg robustness` runs; importing equiseg applies nothing
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt, root = args.checkpoint, args.data_root
        if ckpt is None or root is None:
            if (ckpt is None) != (root is None):
                p.error("give both --checkpoint and --data-root, or neither (smoke run)")
            print("smoke run: tiny EQUISeg on synthetic data (not a measurement)", file=sys.stderr)
            ckpt, root = smoke_setup(Path(tmp))
        setup = load_setup(ckpt, root, args.config, args.max_samples, args.device)
        meta = setup.model.meta
        report = measure(
            setup.model,
            setup.dataset,
            modalities=list(setup.cfg.data.modalities),
            num_classes=int(setup.model.cfg.num_classes),
            class_names=list(meta.get("classes", [])) or None,
            ignore_index=int(meta.get("ignore_index", 255)),
            convention=setup.cfg.eval.convention,
            device=setup.device,
            variant_batch_sizes=args.variant_batch_sizes,
            rmm_rates=args.rmm_rates,
            batch_size=args.batch_size,
            num_workers=args.workers,
            seed=args.seed,
            skip_reference=args.skip_reference,
            repeat_full=("emm", "rmm") if args.protocol_passes else (),
            repeats=args.repeats,
            progress=not args.quiet,
        )
    report["checkpoint"] = str(args.checkpoint) if args.checkpoint else "smoke"
    print(markdown(report))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
