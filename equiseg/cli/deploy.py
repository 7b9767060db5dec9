"""``equiseg predict`` and ``export``: use a trained checkpoint (or a public release) outside training."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from equiseg.cli.common import _add_precision, _one_line


def cmd_predict(args: argparse.Namespace) -> int:
    from equiseg.engine.device import resolve_device
    from equiseg.engine.precision import describe_precision, resolve_precision
    from equiseg.tasks.predict import parse_input_args, predict_to_dir

    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device, key="--precision")

    source = args.checkpoint
    if args.config is not None:  # a released state dict: the config names the model and data set
        from equiseg.tasks.export import load_checkpoint_model

        source = load_checkpoint_model(args.checkpoint, config=args.config)  # predict moves it to --device
    written = predict_to_dir(
        source,
        parse_input_args(args.input),
        args.out,
        overlay=args.overlay,
        raw=args.raw,
        split=args.split,
        short_side=args.short_side,
        device=args.device,
        progress=not args.quiet,
        precision=precision,
    )
    print(describe_precision(precision, args.precision, device))
    n = sum(p.name.endswith("_pred.png") for p in written)
    print(f"wrote {n} prediction(s), {len(written)} file(s), to {args.out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from equiseg.tasks.export import ExportVerificationError, export

    source = args.checkpoint
    out = args.out or str(Path(args.checkpoint).parent / "export")
    if args.config is not None:  # a released state dict: the config names the model and data set
        from equiseg.tasks.export import check_opset, load_checkpoint_model
        from equiseg.utils import check_writable_dir

        if args.format == "onnx":
            check_opset(args.opset)
        check_writable_dir(out, "--out")  # before the release is read
        source = load_checkpoint_model(args.checkpoint, config=args.config)
    try:
        r = export(
            source,
            args.format,
            out,
            opset=args.opset,
            size=tuple(args.size),
            verify=not args.no_verify,
            overwrite=args.overwrite,
        )
    except ExportVerificationError as e:
        print(f"equiseg export: error: {_one_line(e)}", file=sys.stderr)
        return 1
    if r.moved_aside is not None:
        print(f"moved the previous contents of {out} to {r.moved_aside}")
    print(f"wrote {r.path} and {r.config}")
    for c in r.checks:
        print(
            f"  onnxruntime vs PyTorch at B×H×W = {'×'.join(map(str, c.shape))}: max abs diff "
            f"{c.max_abs_diff:.2e} (max |logit| {c.max_abs_ref:.2f}, relative {c.rel_diff:.1e})"
        )
    if r.note:
        print(f"  {r.note}")
    return 0


def add_predict(sub: argparse._SubParsersAction) -> None:
    """The ``predict`` command's parser."""
    pr = sub.add_parser("predict", help="segment a data set folder or per-modality files with a checkpoint")
    pr.add_argument("--checkpoint", required=True, help="training checkpoint (or an `equiseg export` folder)")
    pr.add_argument(
        "--input",
        nargs="+",
        required=True,
        metavar="DIR_OR_FILES",
        help="a DeLiVER/MUSES-layout folder, or MODALITY=FILE items of one sample "
        "(any subset of the checkpoint's modalities; the others are absent)",
    )
    pr.add_argument(
        "--out",
        required=True,
        help="output folder (<stem>_pred.png per sample), outside the --input data set folder",
    )
    pr.add_argument(
        "--config",
        default=None,
        help="for a public release's state dict: the config naming its model and data",
    )
    pr.add_argument("--overlay", action="store_true", help="also write <stem>_overlay.png (50%% over RGB)")
    pr.add_argument("--raw", action="store_true", help="also write <stem>_classes.png (uint8, 255 ignore)")
    pr.add_argument("--split", default="val", help="split read from a data set folder")
    pr.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 ...")
    pr.add_argument(
        "--short-side",
        type=int,
        default=None,
        metavar="N",
        help="resize as validation does (short side N >= 32, sides aligned to 32); default: keep size",
    )
    _add_precision(pr, default="auto")
    pr.set_defaults(func=cmd_predict)


def add_export(sub: argparse._SubParsersAction) -> None:
    """The ``export`` command's parser."""
    x = sub.add_parser("export", help="export a checkpoint to ONNX or safetensors (+ config.json)")
    x.add_argument("--checkpoint", required=True)
    x.add_argument("--format", choices=["onnx", "safetensors"], required=True)
    x.add_argument(
        "--config",
        default=None,
        help="for a public release's state dict: the config naming its model and data",
    )
    x.add_argument(
        "--out",
        default=None,
        help="output folder (default: export/ beside the checkpoint); one model per folder: a folder "
        "holding anything else is refused, except this model's export in the other format",
    )
    x.add_argument(
        "--overwrite",
        action="store_true",
        help="--out is not empty: move its contents aside to OUT.replaced-<time>/ and export afresh",
    )
    x.add_argument("--opset", type=int, default=17)
    x.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=[512, 512],
        metavar=("H", "W"),
        help="ONNX tracing size (the graph has dynamic batch, height and width)",
    )
    x.add_argument("--no-verify", action="store_true", help="skip the onnxruntime-vs-PyTorch check")
    x.set_defaults(func=cmd_export)
