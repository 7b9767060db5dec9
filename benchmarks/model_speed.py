"""Model speed benchmark (issues 2, 9): parameters, forward and training-step time, peak memory, FLOPs and
achieved throughput of EQUISeg and every peer, plus the speed-up of EQUISeg's batched shared-weight
encoder over a Python loop over modalities.

    python benchmarks/model_speed.py                      # EQUISeg B0 and B2, N = 1, 2, 4, batch 2, 512×512
    python benchmarks/model_speed.py --variants b0 --n 4 --size 256 --repeats 2
    python benchmarks/model_speed.py --n 2,4 \
        --models equiseg_b0,segformer_b0,cmnext_b0,cmx_b0,stitchfusion_b0,magic_b0,magicpp_b0

All ratios are measured in one process, so they hold even on a noisy machine: the fp32 matmul rate
(2048² matrices) is measured first and every achieved GFLOP/s is reported against it. FLOPs are those of
one forward pass from ``torch.utils.flop_counter`` (plus the CPU flash-attention kernel, which it does
not know); a training step is counted as 3× the forward, since torch 2.13's counter mis-counts grouped
convolution backward (SPEC §7). "loop ×" is the time of the same network with a per-modality Python
loop over the encoder (``share_encoder=False`` with identical weights in every branch) divided by the
batched time, for forward and for forward + backward.

Peak memory is the process's peak resident set (CPU; reset before each measurement through
``/proc/self/clear_refs``) or ``torch.cuda.max_memory_allocated`` (CUDA).
"""

from __future__ import annotations

import argparse
import gc
import json
from pathlib import Path

import torch

import equiseg
from equiseg.engine import build_optimizer
from equiseg.engine.profile import forward_flops, timeit


def matmul_gflops(device: torch.device, n: int = 2048, repeats: int = 10) -> float:
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    ms = timeit(lambda: a @ b, device, repeats, warmup=2)
    return 2 * n**3 / (ms / 1e3) / 1e9


def reset_peak(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    clear = Path("/proc/self/clear_refs")
    if clear.exists():
        try:
            clear.write_text("5")  # resets VmHWM (peak RSS) on Linux
        except OSError:
            pass


def peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_one(
    name: str, n: int, args, device: torch.device, mm_rate: float, reference: str | None = None
) -> dict:
    """One row. ``reference`` = ``KIND=ROOT``: time the public implementation from that checkout instead
    (same sizes, inputs and optimizer; CE on its logits as the loss)."""
    mods = ["rgb", "depth", "event", "lidar", "m5", "m6", "m7", "m8"][:n]
    torch.manual_seed(0)
    if reference is not None:
        from reference_models import build_reference

        kind, root = reference.split("=", 1)
        model = build_reference(kind, root, name.rsplit("_", 1)[1], 25, n).to(device)
    else:
        model = equiseg.create_model(name, num_classes=25, modalities=mods).to(device)
    g = torch.Generator(device="cpu").manual_seed(0)
    x = [torch.randn(args.batch, 3, args.size, args.size, generator=g).to(device) for _ in range(n)]
    labels = torch.randint(0, 25, (args.batch, args.size, args.size), generator=g).to(device)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    flops = forward_flops(model, x)

    model.eval()

    def fwd(m=model):
        with torch.inference_mode():
            m(x)

    reset_peak(device)
    fwd_ms = timeit(fwd, device, args.repeats)
    fwd_mem = peak_mb(device)

    model.train()
    opt = build_optimizer(model, lr=6e-5)
    sgen = torch.Generator().manual_seed(0)

    def step():
        if reference is not None:
            loss = torch.nn.functional.cross_entropy(model(x), labels, ignore_index=255)
        else:
            loss = model.compute_loss(x, labels, generator=sgen).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    reset_peak(device)
    step_ms = timeit(step, device, args.repeats)
    step_mem = peak_mb(device)
    row = dict(
        variant=f"{name} (public code)" if reference is not None else name,
        n=n,
        params=params,
        fwd_ms=fwd_ms,
        step_ms=step_ms,
        fwd_mem=fwd_mem,
        step_mem=step_mem,
        gflops=flops / 1e9,
        fwd_rate=flops / 1e9 / (fwd_ms / 1e3),
        step_rate=3 * flops / 1e9 / (step_ms / 1e3),
    )
    row["fwd_ratio"] = row["fwd_rate"] / mm_rate
    row["step_ratio"] = row["step_rate"] / mm_rate
    row["loop_fwd"] = row["loop_fb"] = float("nan")
    if n > 1 and not args.no_loop and reference is None and model.cfg.arch == "equiseg":
        # same network with the encoder run modality by modality (identical weights in each branch)
        loop = equiseg.create_model(name, num_classes=25, modalities=mods, share_encoder=False).to(device)
        sd = {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")}
        for i in range(n):
            sd.update(
                {
                    f"backbones.{i}.{k[9:]}": v
                    for k, v in model.state_dict().items()
                    if k.startswith("backbone.")
                }
            )
        loop.load_state_dict(sd)

        def fb(m):
            m.zero_grad(set_to_none=True)
            m.compute_loss(x, labels, generator=torch.Generator().manual_seed(0)).loss.backward()

        loop.eval()
        model.eval()
        row["loop_fwd"] = timeit(lambda: fwd(loop), device, args.repeats) / timeit(fwd, device, args.repeats)
        loop.train()
        model.train()
        row["loop_fb"] = timeit(lambda: fb(loop), device, args.repeats) / timeit(
            lambda: fb(model), device, args.repeats
        )
        del loop
    return row


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
    p.add_argument(
        "--cell", default=None, help=argparse.SUPPRESS
    )  # internal: one row, as JSON, in this process
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    mm = matmul_gflops(device)
    if args.cell:  # a fresh process per public implementation (each registers a package named semseg)
        name, n, ref = json.loads(args.cell)
        print(json.dumps(bench_one(name, n, args, device, mm, ref)))
        return
    print(
        f"# EQUISeg model speed — {device.type}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"batch {args.batch}, {args.size}×{args.size}, fp32"
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
                rows.append(_reference_cell(name, n, f"{arch}={ref_root}", argv))
            for r in rows:
                _print_row(r, n, args)


def _reference_cell(name: str, n: int, reference: str, argv) -> dict:
    import subprocess
    import sys

    cmd = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]), "--cell"]
    cmd.append(json.dumps([name, n, reference]))
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


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
