"""``equiseg`` command line: a thin layer over the Python API (every command has a function twin).

    equiseg synth --out DIR --layout deliver --train 200 --val 50 --size 256 --seed 0
    equiseg train CONFIG [--set a.b=c ...] [--work-dir DIR] [--resume [PATH]]
    equiseg eval CONFIG --checkpoint PATH [--split val|test] [--case CASE] [--out DIR]
    equiseg demo [--out DIR] [--quick]
    equiseg convert-weights SRC.safetensors DST.pth
    equiseg models
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _csv(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def cmd_synth(args: argparse.Namespace) -> int:
    from equiseg.data.synth import generate

    summary = generate(
        out_dir=args.out,
        layout=args.layout,
        splits={"train": args.train, "val": args.val, **({"test": args.test} if args.test else {})},
        size=(args.size, args.size) if args.width is None else (args.size, args.width),
        seed=args.seed,
        conditions=_csv(args.conditions),
        failures=_csv(args.failures),
        progress=not args.quiet,
    )
    print(json.dumps({k: v for k, v in summary.items() if k != "paths"}, indent=2, default=str))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from equiseg.api import train

    resume = args.resume
    if resume == "":  # --resume with no path: the work dir's last.pt
        resume = True
    result = train(args.config, args.set, work_dir=args.work_dir, resume=resume, progress=not args.quiet,
                   stop_after=args.stop_after)
    print(f"done: {result.iterations} iterations, best val mIoU {result.best_miou:.2f}, outputs in {result.work_dir}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from equiseg.api import evaluate

    out = args.out or str(Path(args.checkpoint).parent / f"eval_{args.split or 'val'}{'_' + args.case if args.case else ''}")
    r = evaluate(args.config, args.checkpoint, args.set, split=args.split, case=args.case, out_dir=out,
                 progress=not args.quiet, max_samples=args.max_samples)
    print(f"mIoU {r['mIoU']:.2f}  aAcc {r['aAcc']:.2f}  mAcc {r['mAcc']:.2f}  ({r['convention']} convention)")
    for c, m in r.get("per_case", {}).items():
        print(f"  {c:14s} mIoU {m['mIoU']:.2f}")
    print(f"written: {out}/metrics.json, {out}/metrics.md")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from equiseg.engine.demo import run_demo

    report = run_demo(args.out, quick=args.quick, progress=not args.quiet)
    print(f"report: {report}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    import torch

    from equiseg.models.weights import convert_hf_to_original, read_state_dict

    sd, dropped = convert_hf_to_original(read_state_dict(args.src))
    if not any(k.startswith("patch_embed1.") for k in sd):
        raise ValueError(f"{args.src}: no Hugging Face MiT encoder keys found")
    Path(args.dst).parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, args.dst)
    print(f"wrote {len(sd)} tensors in the original mit_b*.pth layout to {args.dst} (dropped {len(dropped)} head keys)")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from equiseg.models import list_models, model_config

    for name in list_models():
        c = model_config(name)
        print(f"{name}: embed_dims {list(c.embed_dims)}, depths {list(c.depths)}, decoder_dim {c.decoder_dim}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="equiseg", description="EQUISeg: robust multimodal semantic segmentation.")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("synth", help="generate synthetic multimodal driving scenes (DeLiVER or MUSES layout)")
    s.add_argument("--out", required=True)
    s.add_argument("--layout", choices=["deliver", "muses"], default="deliver")
    s.add_argument("--train", type=int, default=200)
    s.add_argument("--val", type=int, default=50)
    s.add_argument("--test", type=int, default=0)
    s.add_argument("--size", type=int, default=256, help="image height (and width unless --width)")
    s.add_argument("--width", type=int, default=None)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--conditions", default=None, help="comma-separated subset of the conditions")
    s.add_argument("--failures", default=None, help="comma-separated subset of the sensor failures")
    s.set_defaults(func=cmd_synth)

    t = sub.add_parser("train", help="train from a YAML config")
    t.add_argument("config")
    t.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config keys (a.b=c)")
    t.add_argument("--work-dir", default=None)
    t.add_argument("--resume", nargs="?", const="", default=None, metavar="PATH",
                   help="resume from PATH, or from WORK_DIR/last.pt when no path is given")
    t.add_argument("--stop-after", type=int, default=None, help="stop after this many iterations (saving last)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a checkpoint (overall, per class, per case)")
    e.add_argument("config")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--split", default=None)
    e.add_argument("--case", default=None)
    e.add_argument("--out", default=None)
    e.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    e.add_argument("--max-samples", type=int, default=None)
    e.set_defaults(func=cmd_eval)

    d = sub.add_parser("demo", help="synthetic data -> training -> evaluation -> report, end to end")
    d.add_argument("--out", default="demo_out")
    d.add_argument("--quick", action="store_true", help="a smaller run (about 3 minutes on 2 CPU cores)")
    d.set_defaults(func=cmd_demo)

    c = sub.add_parser("convert-weights", help="Hugging Face MiT safetensors -> original mit_b*.pth layout")
    c.add_argument("src")
    c.add_argument("dst")
    c.set_defaults(func=cmd_convert)

    m = sub.add_parser("models", help="list the registered model variants")
    m.set_defaults(func=cmd_models)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:  # user errors: one clear line, no traceback
        print(f"equiseg {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
