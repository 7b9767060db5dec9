"""Model speed benchmark: parameters, forward and training-step time, peak memory, FLOPs and
achieved throughput of EQUISeg and every peer, plus the speed-up of EQUISeg's batched shared-weight
encoder over a Python loop over modalities.

    python benchmarks/model_speed.py                      # EQUISeg B0 and B2, N = 1, 2, 4, batch 2, 512×512
    python benchmarks/model_speed.py --variants b0 --n 4 --size 256 --repeats 2
    python benchmarks/model_speed.py --n 2,4 \
        --models equiseg_b0,segformer_b0,cmnext_b0,cmx_b0,stitchfusion_b0,magic_b0,magicpp_b0

Our models run one after another in this process; with ``--cmnext-root`` / ``--stitchfusion-root`` the
public code of that architecture runs beside ours, each in a fresh process (``_cells.py``, shared with
``compare_references.py``, which runs every cell in a fresh process and checks the speed goals of
docs/design.md §11). Ratios are measured within one process, so they hold even on a noisy machine: the fp32 matmul rate
(2048² matrices, best of 5) is measured first and every achieved GFLOP/s is reported against it (a public
row: against the rate measured in its own process). FLOPs are those of
one forward pass from ``torch.utils.flop_counter`` (plus the CPU flash-attention kernel, which it does
not know); a training step is counted as 3× the forward, since torch 2.13's counter mis-counts grouped
convolution backward (docs/design.md §10). "loop ×" is the time of the same network with a per-modality Python
loop over the encoder (``share_encoder=False`` with identical weights in every branch) divided by the
batched time, for forward and for forward + backward. A public row is rated against our
implementation's FLOP count for the same model, so that the two rates compare.

Our rows run under the CPU allocator setting the ``equiseg`` command applies
(:func:`equiseg.configure_cpu_allocator`: ``EQUISEG_CPU_ALLOCATOR``, default ``retain``), applied at the
start of the run; a public row in its fresh process gets the same.

Peak memory is the process's peak resident set (CPU; reset before each measurement through
``/proc/self/clear_refs``) or ``torch.cuda.max_memory_allocated`` (CUDA).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _cells import (  # noqa: E402
    EXTRA_MODALITIES,
    NUM_CLASSES,
    Cell,
    build_model,
    make_inputs,
    matmul_gflops,
    run_fresh,
    time_forward_and_step,
)

import equiseg  # noqa: E402
from equiseg.engine.profile import count_params, forward_flops, timeit  # noqa: E402

MODALITIES = ("rgb", "depth", "event", "lidar", *EXTRA_MODALITIES)


def bench_one(name: str, n: int, args, device: torch.device, mm_rate: float) -> dict:
    """One row for our implementation of ``name`` on ``n`` modalities, measured in this process."""
    cell = Cell(name, list(MODALITIES[:n]), args.size, args.batch, args.repeats, device=str(device))
    model = build_model(cell)
    x, labels = make_inputs(args.batch, args.size, n, device)
    params = count_params(model) / 1e6
    flops = forward_flops(model, x)
    t = time_forward_and_step(model, x, labels, public=False, device=device, repeats=args.repeats)
    row = _row(name, n, params, flops, t, mm_rate)
    if n > 1 and not args.no_loop and model.cfg.arch == "equiseg":
        row["loop_fwd"], row["loop_fb"] = _loop_ratios(model, cell, x, labels, device, args.repeats)
    return row


def bench_public(name: str, n: int, args, root: str, flops: int) -> dict:
    """One row for the public implementation of ``name`` from the checkout ``root``, in a fresh process
    (each reference registers a package named ``semseg``); rated against ``flops`` (our count)."""
    cell = Cell(
        name,
        list(MODALITIES[:n]),
        args.size,
        args.batch,
        args.repeats,
        impl="public",
        root=root,
        device=args.device,
        threads=args.threads,
        flops=flops,
    )
    r = run_fresh(cell)
    t = dict(
        fwd_ms=1e3 * r["fwd_s"],
        step_ms=1e3 * r["step_s"],
        fwd_mem=r["fwd_peak_mb"],
        step_mem=r["step_peak_mb"],
    )
    return _row(f"{name} (public code)", n, r["params_m"], flops, t, r["matmul_gflops_s"])


def _row(variant: str, n: int, params: float, flops: int, t: dict, mm_rate: float) -> dict:
    row = dict(variant=variant, n=n, params=params, gflops=flops / 1e9, **t)
    row["fwd_rate"] = flops / 1e9 / (t["fwd_ms"] / 1e3)
    row["step_rate"] = 3 * flops / 1e9 / (t["step_ms"] / 1e3)
    row["fwd_ratio"] = row["fwd_rate"] / mm_rate
    row["step_ratio"] = row["step_rate"] / mm_rate
    row["loop_fwd"] = row["loop_fb"] = float("nan")
    return row


def _loop_ratios(model, cell: Cell, x, labels, device: torch.device, repeats: int) -> tuple[float, float]:
    """Time of the same network with the encoder run modality by modality (``share_encoder=False``, identical
    weights in each branch) over the batched time, for forward and for forward + backward."""
    n = len(cell.modalities)
    loop = equiseg.create_model(
        cell.model, num_classes=NUM_CLASSES, modalities=cell.modalities, share_encoder=False
    ).to(device)
    sd = {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")}
    for i in range(n):
        sd.update(
            {f"backbones.{i}.{k[9:]}": v for k, v in model.state_dict().items() if k.startswith("backbone.")}
        )
    loop.load_state_dict(sd)

    def fwd(m):
        with torch.inference_mode():
            m(x)

    def fb(m):
        m.zero_grad(set_to_none=True)
        m.compute_loss(x, labels, generator=torch.Generator().manual_seed(0)).loss.backward()

    loop.eval()
    model.eval()
    loop_fwd = timeit(lambda: fwd(loop), device, repeats) / timeit(lambda: fwd(model), device, repeats)
    loop.train()
    model.train()
    loop_fb = timeit(lambda: fb(loop), device, repeats) / timeit(lambda: fb(model), device, repeats)
    return loop_fwd, loop_fb


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variants", default="b0,b2", help="EQUISeg sizes (ignored with --models)")
    p.add_argument(
        "--models",
        default=None,
        help="registered model names, e.g. equiseg_b0,segformer_b0,cmnext_b0,cmx_b0,stitchfusion_b0,magic_b0",
    )
    p.add_argument("--n", default="1,2,4", help="numbers of modalities")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-loop", action="store_true", help="skip the per-modality loop comparison")
    p.add_argument("--cmnext-root", default=None, help="checkout of jamycheung/DELIVER: time its CMNeXt too")
    p.add_argument(
        "--stitchfusion-root", default=None, help="checkout of LiBingyu01/StitchFusion: time it too"
    )
    args = p.parse_args(argv)
    allocator = equiseg.configure_cpu_allocator()  # as `equiseg train` runs; importing applies nothing
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    mm = matmul_gflops(device)
    print(
        f"# EQUISeg model speed — {device.type}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"batch {args.batch}, {args.size}×{args.size}, fp32, CPU allocator {allocator}"
    )
    print(f"# fp32 matmul (2048²): {mm:.0f} GFLOP/s\n")
    hdr = (
        "| model | N | params (M) | fwd GFLOPs | fwd ms | step ms | peak MB fwd / step | fwd GFLOP/s (% mm) "
        "| step GFLOP/s (% mm) | loop × fwd / fwd+bwd |"
    )
    print(hdr)
    print("|---" * 10 + "|")
    names = (
        [m.strip() for m in args.models.split(",")]
        if args.models
        else [f"equiseg_{v.strip().lower()}" for v in args.variants.split(",")]
    )
    for name in names:
        arch = equiseg.models.model_config(name).arch
        for n in (int(k) for k in args.n.split(",")):
            if arch == "cmx" and n != 2:
                continue  # CMX takes exactly two modalities
            rows = [bench_one(name, n, args, device, mm)]
            ref_root = {"cmnext": args.cmnext_root, "stitchfusion": args.stitchfusion_root}.get(arch)
            if ref_root:
                rows.append(bench_public(name, n, args, ref_root, round(rows[0]["gflops"] * 1e9)))
            for r in rows:
                _print_row(r, n, args)


def _print_row(r: dict, n: int, args) -> None:
    loop = "–" if r["loop_fwd"] != r["loop_fwd"] else f"{r['loop_fwd']:.2f} / {r['loop_fb']:.2f}"
    print(
        f"| {r['variant']} | {n} | {r['params']:.2f} | {r['gflops']:.1f} | {r['fwd_ms']:.0f} | "
        f"{r['step_ms']:.0f} | {r['fwd_mem']:.0f} / {r['step_mem']:.0f} | "
        f"{r['fwd_rate']:.0f} ({100 * r['fwd_ratio']:.0f} %) | {r['step_rate']:.0f} "
        f"({100 * r['step_ratio']:.0f} %) | {loop} |",
        flush=True,
    )


if __name__ == "__main__":
    main()
