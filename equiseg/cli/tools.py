"""``equiseg demo``, ``convert-weights``, ``models`` and ``doctor``: the end-to-end demo and the tools
around a setup (weights conversion, the model list, the environment report and self-check)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from equiseg.cli.common import EXIT_RUN_FAILED


def cmd_demo(args: argparse.Namespace) -> int:
    from equiseg.tasks.demo import run_demo

    report = run_demo(args.out, quick=args.quick, progress=not args.quiet)
    print(f"report: {report} and {report.with_suffix('.html')}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    import torch

    from equiseg.models.weights import convert_hf_to_original, read_state_dict

    sd, dropped = convert_hf_to_original(read_state_dict(args.src))
    if not any(k.startswith("patch_embed1.") for k in sd):
        raise ValueError(f"{args.src}: no Hugging Face MiT encoder keys found")
    Path(args.dst).parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, args.dst)
    print(
        f"wrote {len(sd)} tensors in the original mit_b*.pth layout to {args.dst} (dropped {len(dropped)} head keys)"
    )
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from equiseg.models import list_models, model_config

    for name in list_models():
        c = model_config(name)
        print(
            f"{name}: arch {c.arch}, embed_dims {list(c.embed_dims)}, depths {list(c.depths)}, "
            f"decoder_dim {c.decoder_dim}"
        )
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from equiseg.tasks import doctor

    if args.compile and not args.check:
        raise ValueError("--compile: only with --check (it adds the CPU torch.compile row)")
    if args.device is not None:
        doctor.check_cuda_device(args.device, "--device")
    report, results = doctor.environment_report(), []
    kwargs = {"compile_cpu": args.compile, "cuda_device": args.device or "cuda"}
    if args.json:
        if args.check:
            results = doctor.run_checks(**kwargs)
            report["checks"] = [r.to_dict() for r in results]
        print(json.dumps(report, indent=2))
    else:
        print(doctor.format_report(report))
        if args.check:
            print(f"\nchecks on {doctor.CHECK_DESCRIPTION}:", flush=True)
            results = doctor.run_checks(**kwargs, report=lambda r: print(doctor.format_check(r), flush=True))
            print(doctor.format_checks(results).splitlines()[-1])
    return EXIT_RUN_FAILED if any(r.status == "FAIL" for r in results) else 0


def add_demo(sub: argparse._SubParsersAction) -> None:
    """The ``demo`` command's parser."""
    d = sub.add_parser("demo", help="synthetic data -> training -> evaluation -> report, end to end")
    d.add_argument("--out", default="demo_out")
    d.add_argument("--quick", action="store_true", help="a smaller run (about 3 minutes on 2 CPU cores)")
    d.set_defaults(func=cmd_demo)


def add_convert(sub: argparse._SubParsersAction) -> None:
    """The ``convert-weights`` command's parser."""
    c = sub.add_parser("convert-weights", help="Hugging Face MiT safetensors -> original mit_b*.pth layout")
    c.add_argument("src")
    c.add_argument("dst")
    c.set_defaults(func=cmd_convert)


def add_models(sub: argparse._SubParsersAction) -> None:
    """The ``models`` command's parser."""
    m = sub.add_parser("models", help="list the registered model variants")
    m.set_defaults(func=cmd_models)


def add_doctor(sub: argparse._SubParsersAction) -> None:
    """The ``doctor`` command's parser."""
    dr = sub.add_parser(
        "doctor",
        help="versions, GPUs, CPU flags, bf16, threads, allocator, packages: what a bug report needs",
    )
    dr.add_argument(
        "--check",
        action="store_true",
        help="also run every accelerator path on a tiny model (fp32, fp16 + GradScaler, bf16, channels-last, "
        "the attention backend, torch.compile, a one-process gloo/NCCL group, peak memory), each PASS / "
        "FAIL / SKIPPED with the reason; about a minute on a GPU; exit 1 if one fails",
    )
    dr.add_argument(
        "--compile",
        action="store_true",
        help="with --check: also compile a training step on the CPU (builds C++ kernels: minutes on a few "
        "cores, so skipped by default; on a GPU it always runs)",
    )
    dr.add_argument(
        "--device", default=None, metavar="cuda:N", help="the GPU --check runs on (default: the current one)"
    )
    dr.add_argument("--json", action="store_true", help="print the report (and the checks) as JSON")
    dr.set_defaults(func=cmd_doctor)
