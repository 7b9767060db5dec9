"""bf16 against fp32 evaluation in one run: mIoU of each, their difference, wall time of each and the
speed-up, on the CPU at hand (never carry a figure over from another machine: docs/design.md §10).

    # the demo model (after `equiseg demo`): its checkpoint, config and data
    python benchmarks/precision_bf16.py --checkpoint demo_out/run/best.pt --data-root demo_out/data
    # no checkpoint: generate synthetic scenes and train a short demo-like model first
    python benchmarks/precision_bf16.py --train 96 --val 40 --size 96 --train-iters 200
    # smoke test (seconds)
    python benchmarks/precision_bf16.py --train 8 --val 4 --size 64 --train-iters 2

The val split is loaded once and kept in memory, so the timings are the network forward plus the
metric updates (what precision changes), not PNG decoding. Each precision is evaluated ``--reps``
times, alternating fp32 / bf16 so that drift in machine load hits both; the fastest run of each counts.
Both evaluations go through :func:`equiseg.engine.evaluate.evaluate` with ``eval.precision`` set
explicitly; the table also says what ``auto`` picks on this machine, and why. Both run under the CPU
allocator setting the ``equiseg`` command applies (:func:`equiseg.configure_cpu_allocator`:
``EQUISEG_CPU_ALLOCATOR``, default ``retain``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import equiseg
from equiseg.engine.eval_setup import load_eval_setup
from equiseg.engine.evaluate import evaluate
from equiseg.engine.precision import (
    MIN_SPEEDUP,
    MIN_WORKLOAD_SPEEDUP,
    bf16_probe,
    cpu_bf16_support,
    cpu_model_name,
    describe_precision,
    resolve_precision,
)

DEMO_CONFIG = Path(equiseg.__file__).parent / "configs" / "demo.yaml"
TOLERANCE = 0.2  # mIoU points: the bound on |bf16 - fp32| (docs/design.md §11)


class InMemory:
    """The samples of a val data set, loaded once (``classes`` / ``ignore_index`` as the original)."""

    def __init__(self, dataset: Any) -> None:
        base = getattr(dataset, "dataset", dataset)  # a Subset's data set
        self.classes = list(getattr(base, "classes", []))
        self.ignore_index = int(getattr(base, "ignore_index", 255))
        self.items = [dataset[i] for i in range(len(dataset))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


def make_checkpoint(args: argparse.Namespace, work: Path) -> tuple[Path, Path]:
    """Synthetic DeLiVER-layout scenes and a demo-config model trained briefly: ``(checkpoint, data root)``."""
    from equiseg.data.synth import generate

    root = work / "data"
    generate(
        root,
        layout="deliver",
        splits={"train": args.train, "val": args.val},
        size=(args.size, args.size),
        seed=0,
        progress=False,
    )
    overrides = [
        f"data.root={root}",
        f"data.crop_size=[{args.size},{args.size}]",
        f"data.batch_size={min(8, args.train)}",
        "data.num_workers=0",
        f"train.max_iters={args.train_iters}",
        f"train.val_interval={args.train_iters}",
        f"train.warmup_iters={args.train_iters // 10}",
        "train.device=cpu",
        "eval.precision=fp32",
        *args.set,
    ]
    t = time.perf_counter()
    result = equiseg.train(args.config, overrides, work_dir=work / "run", progress=False)
    print(f"trained {result.iterations} iterations in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return result.work_dir / "best.pt", root


def timed_eval(model, data: InMemory, eval_cfg, precision: str) -> tuple[dict[str, Any], float]:
    cfg = dataclasses.replace(eval_cfg, precision=precision, per_case=False)
    start = time.perf_counter()
    result = evaluate(model, data, cfg, device="cpu", progress=False)
    return result, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=None, help="default: train a short demo-like model first")
    p.add_argument("--config", default=str(DEMO_CONFIG), help="the checkpoint's config (default: demo)")
    p.add_argument("--data-root", default=None, help="data.root (with --checkpoint; default: the config's)")
    p.add_argument("--split", default=None, help="default: the config's data.val_split")
    p.add_argument("--max-samples", type=int, default=None, help="first N val samples")
    p.add_argument("--reps", type=int, default=3, help="evaluations per precision; the fastest counts")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--train", type=int, default=96, help="without --checkpoint: train scenes")
    p.add_argument("--val", type=int, default=40, help="without --checkpoint: val scenes")
    p.add_argument("--size", type=int, default=96, help="without --checkpoint: scene size")
    p.add_argument("--train-iters", type=int, default=200, help="without --checkpoint: iterations")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--json", default=None, help="also write the numbers to this file")
    args = p.parse_args(argv)
    equiseg.configure_cpu_allocator()  # as `equiseg eval` runs; importing equiseg applies nothing
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="precision_bf16_") as tmp:
        if args.checkpoint is None:
            checkpoint, root = make_checkpoint(args, Path(tmp))
        else:
            checkpoint, root = Path(args.checkpoint), args.data_root
        overrides = [*args.set, *([f"data.root={root}"] if root else []), "train.device=cpu"]
        setup = load_eval_setup(
            args.config, checkpoint, overrides, split=args.split, max_samples=args.max_samples
        )
        data = InMemory(setup.dataset)

        runs: dict[str, list[tuple[dict[str, Any], float]]] = {"fp32": [], "bf16": []}
        for precision in runs:  # warm-up: oneDNN builds its kernels on the first call of each
            timed_eval(setup.model, _first(data), setup.cfg.eval, precision)
        for rep in range(args.reps):
            for precision in ("fp32", "bf16") if rep % 2 == 0 else ("bf16", "fp32"):
                runs[precision].append(timed_eval(setup.model, data, setup.cfg.eval, precision))

    best = {k: min(v, key=lambda r: r[1]) for k, v in runs.items()}
    (r32, t32), (r16, t16) = best["fp32"], best["bf16"]
    diff = r16["mIoU"] - r32["mIoU"]
    speedup = t32 / t16
    units = cpu_bf16_support()
    auto = resolve_precision("auto", "cpu", model=setup.model, data=data)  # as `eval` decides
    auto_note = describe_precision(auto, "auto", "cpu")
    probe = bf16_probe("cpu") if units else None
    n = len(data)

    lines = [
        f"## bf16 vs fp32 evaluation: {setup.name}, {n} {setup.split} samples",
        "",
        f"CPU: {cpu_model_name()}; bf16 units: {', '.join(units) if units else 'none (bf16 is emulated)'}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s).",
        "",
        f"`precision: auto` here: {auto_note} (bf16 needs bf16 units, >= {MIN_SPEEDUP}× in a matmul probe "
        f"and >= {MIN_WORKLOAD_SPEEDUP}× in a forward of the model on one sample).",
        "",
        f"| precision | mIoU | aAcc | mAcc | wall (s, best of {args.reps}) | s / sample | speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|",
        _row("fp32", r32, t32, n, 1.0),
        _row("bf16", r16, t16, n, speedup),
        "",
        f"mIoU bf16 − fp32: {diff:+.2f} ({'within' if abs(diff) <= TOLERANCE else 'OUTSIDE'} ±{TOLERANCE}); "
        f"{r32['convention']} convention; val data preloaded, so the times are the forward plus the metric "
        "updates.",
    ]
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "model": setup.name,
                    "checkpoint": str(checkpoint),
                    "num_samples": n,
                    "cpu": cpu_model_name(),
                    "bf16_units": list(units),
                    "probe_speedup": probe.speedup if probe else None,
                    "auto": auto,
                    "threads": torch.get_num_threads(),
                    "fp32": {"mIoU": r32["mIoU"], "aAcc": r32["aAcc"], "wall_s": t32},
                    "bf16": {"mIoU": r16["mIoU"], "aAcc": r16["aAcc"], "wall_s": t16},
                    "miou_diff": diff,
                    "within_tolerance": abs(diff) <= TOLERANCE,
                    "speedup": speedup,
                },
                indent=2,
            )
            + "\n"
        )
    return 0


def _row(name: str, r: dict[str, Any], seconds: float, n: int, speedup: float) -> str:
    cells = [name, *(f"{r[k]:.2f}" for k in ("mIoU", "aAcc", "mAcc")), f"{seconds:.2f}", f"{seconds / n:.3f}"]
    return "| " + " | ".join([*cells, f"{speedup:.2f}×"]) + " |"


def _first(data: InMemory) -> InMemory:
    """A one-sample view of ``data`` (for the warm-up)."""
    view = InMemory.__new__(InMemory)
    view.classes, view.ignore_index, view.items = data.classes, data.ignore_index, data.items[:1]
    return view


if __name__ == "__main__":
    sys.exit(main())
