"""Our models against the public reference implementations, in one run: forward and
training-step time, peak RSS, FLOPs and achieved throughput against the fp32 matmul rate of the same
process, for EQUISeg and every peer (ours), and the public CMNeXt and StitchFusion code (from checkouts
the user points at), each cell in a fresh process.

    python benchmarks/compare_references.py --cmnext-root DELIVER --stitchfusion-root StitchFusion \
        --out compare_references.json
    python benchmarks/compare_references.py --skip-public --models equiseg_b0,segformer_b0 --size 256
    python benchmarks/compare_references.py --render compare_references.json   # reprint a saved run

A cell is one (implementation, model), measured in ``--process-repeats`` fresh processes (default 2, in
rounds over all cells; the process with the fastest train step is reported and every process's times
are kept as ``process_runs``: under glibc's default allocator a process's speed varies by up to 50 %
with where its pages land). Each process (``_cells.py``) measures the fp32
``--matmul-size``² matmul rate (best of a few, at the start and at the end; the better is used), builds the
model (random init), counts the FLOPs of one forward, times ``--repeats`` forwards (eval, inference mode)
and training steps (loss + backward + AdamW; ours with its own training losses, e.g. EQUISeg's SGM; the
public code with cross-entropy on its logits) after one warm-up each, and reports the medians and the
process's peak RSS (``ru_maxrss``). The public code runs as it is from the checkout, with stand-ins for the
few timm/mmcv/fvcore names its model files import registered at run time (``reference_models.py``).

FLOPs: one forward from ``equiseg.engine.profile.forward_flops`` (``torch.utils.flop_counter`` + the CPU
flash-attention kernel; a multiply-add = 2 FLOPs, as in the matmul rate), counted on *our* implementation
and used for both implementations of a model, so that the two rates compare (the public code's own count,
which can differ by the work it does that ours does not, is kept as ``gflops_own`` in the JSON). A
training step is counted as 3× the forward. CMX fuses exactly two modalities: it runs on the first two.

Allocator: the ``equiseg`` command keeps freed CPU memory in the process (``equiseg.configure_cpu_allocator``,
``EQUISEG_CPU_ALLOCATOR``, default ``retain``); that is how our code runs, and each of our cells applies it
explicitly (``--ours-allocators``, default ``retain``). The public code, run by itself, gets glibc's
default (``system``); each public cell runs once per ``--public-allocators`` (default ``system,retain``):
as the public code runs on its own, and under the same allocator as ours. Every target is reported
against both.

The "targets" section checks the speed goals of docs/design.md §11, which are defined for EQUISeg-B0 on
rgb, depth, event and lidar at 512², batch 2, fp32; in a run with another setting they are printed as
indicative only.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _cells import CPU_FLAGS, Cell, cpu_info, run_fresh  # noqa: E402
from reference_models import KINDS as PUBLIC_KINDS  # noqa: E402

from equiseg.engine.allocator import MODES as ALLOCATORS  # noqa: E402

DEFAULT_MODELS = "equiseg_b0,segformer_b0,cmnext_b0,cmx_b0,stitchfusion_b0,magic_b0,magicpp_b0"
TARGET_SETTING = dict(modalities=["rgb", "depth", "event", "lidar"], size=512, batch=2)
# (label, (impl, model, key), (impl, model, key) or None, comparison, goal); None: an absolute goal
TARGETS = [
    ("train step: EQUISeg-B0 (ours) / StitchFusion-B0 (public)", ("ours", "equiseg_b0", "step_s"),
     ("public", "stitchfusion_b0", "step_s"), "<=", 0.6),
    ("train step: EQUISeg-B0 (ours) / CMNeXt-B0 (public)", ("ours", "equiseg_b0", "step_s"),
     ("public", "cmnext_b0", "step_s"), "<=", 0.75),
    ("forward: EQUISeg-B0 (ours) / StitchFusion-B0 (public)", ("ours", "equiseg_b0", "fwd_s"),
     ("public", "stitchfusion_b0", "fwd_s"), "<=", 0.6),
    ("train step: EQUISeg-B0 (ours), % of the fp32 matmul rate", ("ours", "equiseg_b0", "step_pct_mm"),
     None, ">=", 40.0),
]  # fmt: skip


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--models", default=DEFAULT_MODELS, help=f"registered model names (default {DEFAULT_MODELS})"
    )
    p.add_argument(
        "--modalities", default="rgb,depth,event,lidar", help="input modalities (CMX: the first two)"
    )
    p.add_argument("--size", type=int, default=512, help="square input size")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per measurement (median)")
    p.add_argument(
        "--threads", type=int, default=None, help="torch/OpenMP threads per cell (default: torch's)"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--cmnext-root", default=None, help="checkout of jamycheung/DELIVER (public CMNeXt)")
    p.add_argument("--stitchfusion-root", default=None, help="checkout of LiBingyu01/StitchFusion")
    p.add_argument("--skip-public", action="store_true", help="time our implementations only")
    p.add_argument(
        "--ours-allocators",
        default="retain",
        help="EQUISEG_CPU_ALLOCATOR modes for our cells (retain, system)",
    )
    p.add_argument(
        "--public-allocators",
        default="system,retain",
        help="EQUISEG_CPU_ALLOCATOR modes for the public cells (system: as the public code runs on its own)",
    )
    p.add_argument("--matmul-size", type=int, default=2048, help="side of the reference fp32 matmul")
    p.add_argument("--timeout", type=float, default=None, help="seconds per cell (default: none)")
    p.add_argument(
        "--process-repeats",
        type=int,
        default=2,
        help="fresh processes per cell, in rounds over all cells; the fastest train step's is reported",
    )
    p.add_argument("--out", default=None, help="write the cells, targets and machine as JSON here")
    p.add_argument(
        "--render", default=None, metavar="JSON", help="print the tables of a saved run; no timing"
    )
    args = p.parse_args(argv)
    args.model_list = [m.strip() for m in args.models.split(",") if m.strip()]
    args.modality_list = [m.strip() for m in args.modalities.split(",") if m.strip()]
    for flag in ("ours_allocators", "public_allocators"):
        modes = [m.strip() for m in getattr(args, flag).split(",") if m.strip()]
        bad = [m for m in modes if m not in ALLOCATORS]
        if bad or not modes:
            name, value = flag.replace("_", "-"), getattr(args, flag)
            p.error(f"--{name}: expected a comma list of {', '.join(ALLOCATORS)}, got {value!r}")
        setattr(args, flag.replace("allocators", "allocator_list"), modes)
    return args


def plan(args) -> list[Cell]:
    """The cells in run order: per model ours, then the public code (when its checkout is given)."""
    import equiseg

    known = equiseg.list_models()
    unknown = [m for m in args.model_list if m not in known]
    if unknown:
        raise SystemExit(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    roots = {"cmnext": args.cmnext_root, "stitchfusion": args.stitchfusion_root}
    cells = []
    for name in args.model_list:
        arch = equiseg.models.model_config(name).arch
        mods = args.modality_list[:2] if arch == "cmx" else args.modality_list
        common = dict(
            modalities=mods,
            size=args.size,
            batch=args.batch,
            repeats=args.repeats,
            device=args.device,
            threads=args.threads,
            matmul_size=args.matmul_size,
        )
        cells += [Cell(name, impl="ours", allocator=a, **common) for a in args.ours_allocator_list]
        if args.skip_public or arch not in PUBLIC_KINDS:
            continue
        root = roots[arch]
        if root is None:
            raise SystemExit(
                f"{name} has a public implementation: give --{arch}-root DIR (a checkout of "
                f"{'jamycheung/DELIVER' if arch == 'cmnext' else 'LiBingyu01/StitchFusion'}), "
                "or --skip-public, or leave it out of --models"
            )
        if not (Path(root) / "semseg").is_dir():
            raise SystemExit(
                f"--{arch}-root {root}: no semseg/ folder there (not a checkout of the repository?)"
            )
        root = str(Path(root).resolve())
        cells += [
            Cell(name, impl="public", root=root, allocator=a, **common) for a in args.public_allocator_list
        ]
    return cells


def measure(args, cells: list[Cell]) -> list[dict]:
    """Run every cell in a fresh process, ``--process-repeats`` rounds over all cells (interleaved, so a
    drift of the machine hits every cell alike), printing each row to stderr as it arrives. Per cell the
    process with the fastest train step is reported, with every process's times kept in
    ``process_runs``; a cell whose every process failed becomes an error row."""
    ours_flops: dict[str, int] = {}
    runs: list[list[dict]] = [[] for _ in cells]
    errors: list[str | None] = [None] * len(cells)
    print(_table_head(), file=sys.stderr, flush=True)
    for _ in range(max(1, args.process_repeats)):
        for i, cell in enumerate(cells):
            if cell.impl == "public":
                cell.flops = ours_flops.get(cell.model)  # rate both implementations against the same count
            try:
                r = run_fresh(cell, timeout=args.timeout)
            except Exception as e:  # one failed cell must not lose the others
                errors[i] = str(e)
                r = dict(impl=cell.impl, model=cell.model, n=len(cell.modalities), allocator=cell.allocator)
                print(_table_row(dict(r, error=str(e))), file=sys.stderr, flush=True)
                continue
            if cell.impl == "ours":
                ours_flops.setdefault(cell.model, round(r["gflops"] * 1e9))
            runs[i].append(r)
            print(_table_row(r), file=sys.stderr, flush=True)
    results = []
    for cell, done, err in zip(cells, runs, errors, strict=True):
        if not done:
            results.append(
                dict(
                    impl=cell.impl,
                    model=cell.model,
                    n=len(cell.modalities),
                    allocator=cell.allocator,
                    error=err,
                )
            )
            continue
        best = dict(min(done, key=lambda r: r["step_s"]))
        best["process_runs"] = [
            {k: r[k] for k in ("fwd_s", "step_s", "peak_rss_mb", "matmul_gflops_s")} for r in done
        ]
        results.append(best)
    return results


def check_targets(cells: list[dict], setting: dict) -> list[dict]:
    """One row per target and per allocator the denominator (public) cell ran under; the numerator is
    our cell under ``retain`` (how our code runs) when there is one."""
    by_key: dict[tuple[str, str], list[dict]] = {}
    for c in cells:
        if "error" not in c:
            by_key.setdefault((c["impl"], c["model"]), []).append(c)

    def ours(key):
        found = by_key.get(key, [])
        return next((c for c in found if c.get("allocator") == "retain"), found[0] if found else None)

    indicative = (
        any(setting[k] != v for k, v in TARGET_SETTING.items()) or setting.get("device", "cpu") != "cpu"
    )
    out = []
    for label, num, den, op, goal in TARGETS:
        a = ours(num[:2])
        dens = by_key.get(den[:2], []) if den else [None]
        if a is None or not dens:
            missing = [f"{k[0]} {k[1]}" for k in (num, den) if k and not by_key.get(k[:2])]
            out.append(dict(target=label, value=None, goal=goal, op=op, result="n/a", missing=missing))
            continue
        for b in dens:
            value = a[num[2]] / b[den[2]] if den else a[num[2]]
            ok = value <= goal if op == "<=" else value >= goal
            row = dict(target=label, value=value, goal=goal, op=op, result="pass" if ok else "fail")
            row["allocator"] = a.get("allocator")
            if b is not None:
                row["public_allocator"] = b.get("allocator")
            out.append(row)
    for t in out:
        t["indicative"] = indicative
    return out


# ---------------------------------------------------------------------------------------------------------
# Markdown


def _table_head() -> str:
    cols = [
        "implementation", "model", "allocator", "N", "params (M)", "forward s", "train step s", "peak RSS MB",
        "GFLOP / forward", "forward GFLOP/s (% mm)", "train GFLOP/s (% mm)", "fp32 mm GFLOP/s",
    ]  # fmt: skip
    return "| " + " | ".join(cols) + " |\n" + "|---" * len(cols) + "|"


def _table_row(r: dict) -> str:
    if "error" in r:
        first = r["error"].strip().splitlines()
        return (
            f"| {r['impl']} | {r['model']} | {r.get('allocator') or ''} | {r.get('n', '')} | "
            f"failed: {first[-1] if first else ''} |"
        )
    return (
        f"| {r['impl']} | {r['model']} | {r.get('allocator', '')} | {r['n']} | {r['params_m']:.2f} | "
        f"{r['fwd_s']:.3f} | "
        f"{r['step_s']:.3f} | {r['peak_rss_mb']:.0f} | {r['gflops']:.1f} | "
        f"{r['fwd_gflops_s']:.0f} ({r['fwd_pct_mm']:.0f} %) | {r['step_gflops_s']:.0f} ({r['step_pct_mm']:.0f} %) | "
        f"{r['matmul_gflops_s']:.0f} |"
    )


def _fmt_target(t: dict) -> str:
    pct = "%" in t["target"]
    goal = f"{'≤' if t['op'] == '<=' else '≥'} {t['goal']:g}{' %' if pct else '×'}"
    if t["value"] is None:
        value = f"not measured ({', '.join(t['missing'])})"
    else:
        value = f"{t['value']:.1f} %" if pct else f"{t['value']:.2f}×"
    return f"| {t['target']} | {t.get('public_allocator') or '–'} | {value} | {goal} | {t['result']} |"


def render(report: dict) -> str:
    s, m = report["setting"], report["machine"]
    lines = [
        f"# Ours vs the public reference implementations — {s['device']}, fp32, batch {s['batch']}, "
        f"{s['size']}×{s['size']}, {', '.join(s['modalities'])}, {s['repeats']} repeats (median), "
        f"{report['date']}",
        "",
        _table_head(),
        *(_table_row(r) for r in report["cells"]),
        "",
        "GFLOP / forward: our implementation's count, used for both implementations of a model; a train "
        "step counts 3×. % mm: against the fp32 matmul rate measured in the same process (last column). "
        f"Each row: of {report.get('process_repeats', 1)} fresh process(es), the one with the fastest train "
        "step; peak RSS is that process's ru_maxrss. allocator: the process's "
        "EQUISEG_CPU_ALLOCATOR (retain: freed memory stays in the process; system: glibc's default).",
    ]
    own = list(
        dict.fromkeys(  # one entry per model (a public model runs once per allocator)
            f"{r['model']} {r['gflops_own']:.1f}"
            for r in report["cells"]
            if r.get("impl") == "public" and "error" not in r and abs(r["gflops_own"] - r["gflops"]) > 0.05
        )
    )
    if own:
        lines.append(f"The public code's own forward count (GFLOP): {', '.join(own)}.")
    ts = report["targets"]
    lines += ["", "## Targets (EQUISeg-B0, rgb+depth+event+lidar, 512², batch 2, fp32)", ""]
    if ts and ts[0]["indicative"]:
        lines += ["This run's setting differs from the targets': the results below are indicative only.", ""]
    lines += [
        "Ours under `retain` (how equiseg runs); the public code under `system` (how it runs on its own) "
        "and under `retain` (the same allocator as ours).",
        "",
        "| target | public code's allocator | value | goal | result |",
        "|---|---|---|---|---|",
        *(_fmt_target(t) for t in ts),
    ]
    flags = ", ".join(f"{f} {'yes' if m['flags'].get(f) else 'no'}" for f in CPU_FLAGS)
    threads = sorted({r["threads"] for r in report["cells"] if "threads" in r}) or [m["threads"]]
    lines += [
        "",
        "## Machine",
        "",
        f"CPU: {m['cpu']} ({m['cores']} logical cores); {flags}. torch {m['torch']} "
        f"(CPU capability {m['torch_cpu_capability']}); threads per cell: {'/'.join(map(str, threads))}.",
        "",
        f"Command: `{report['command']}`",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.render:
        print(render(json.loads(Path(args.render).read_text())))
        return 0
    cells = plan(args)
    setting = dict(
        modalities=args.modality_list,
        size=args.size,
        batch=args.batch,
        repeats=args.repeats,
        device=args.device,
    )
    print(
        f"# {len(cells)} cells, each in a fresh process: {args.device}, batch {args.batch}, "
        f"{args.size}×{args.size}, {', '.join(args.modality_list)} (progress on stderr, report on stdout)\n",
        file=sys.stderr,
        flush=True,
    )
    results = measure(args, cells)
    report = dict(
        date=datetime.date.today().isoformat(),
        command="python benchmarks/compare_references.py "
        + shlex.join(sys.argv[1:] if argv is None else argv),
        setting=setting,
        process_repeats=max(1, args.process_repeats),
        machine=cpu_info() | ({"threads": args.threads} if args.threads else {}),
        cells=results,
        targets=check_targets(results, setting),
    )
    print("\n" + render(report))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
        print(f"\nwrote {args.out}")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
