"""``equiseg synth`` and ``equiseg data verify``: make a synthetic data set, check a downloaded one."""

from __future__ import annotations

import argparse
import json
import os

from equiseg.cli.common import EXIT_RUN_FAILED, _csv, _positive_int


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
        muses_encoding=args.muses_encoding,
    )
    print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_data_verify(args: argparse.Namespace) -> int:
    from equiseg.data.verify import verify_dataset

    report = verify_dataset(
        args.root,
        args.layout,
        spec=args.spec,
        splits=_csv(args.splits),
        workers=args.workers,
        depth_folder=args.depth_folder,
        progress=not args.quiet,
    )
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format_table())
    return 0 if report.ok else EXIT_RUN_FAILED  # 1: the data set has problems (listed above)


def add_synth(sub: argparse._SubParsersAction) -> None:
    """The ``synth`` command's parser."""
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
    s.add_argument(
        "--muses-encoding",
        choices=["npz", "png"],
        default="npz",
        help="MUSES layout: projected sensors as .npz (default) or 16-bit PNG",
    )
    s.set_defaults(func=cmd_synth)


def add_data(sub: argparse._SubParsersAction) -> None:
    """The ``data`` command group's parser (``data verify``)."""
    da = sub.add_parser("data", help="data set tools (verify)")
    dsub = da.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    v = dsub.add_parser(
        "verify",
        help="check a downloaded data set: frame counts, missing, undecodable and non-finite files, sizes, "
        "label values; exit 1 when anything is wrong",
    )
    v.add_argument(
        "root", help="the data set root (DeLiVER: holding img/, hha/ ...; MUSES: frame_camera/ ...)"
    )
    v.add_argument(
        "--layout",
        required=True,
        metavar="deliver|muses|folder",
        help="the data set's layout; folder needs --spec",
    )
    v.add_argument(
        "--spec", default=None, metavar="FILE", help="YAML spec of a folder data set (--layout folder)"
    )
    v.add_argument(
        "--splits",
        default=None,
        help="comma-separated splits that must be there and are checked (default: all -- train,val,test, "
        "or the splits an equiseg synth root records, or those a folder data set has on disk)",
    )
    v.add_argument("--json", action="store_true", help="print the full report as JSON instead of the table")
    v.add_argument(
        "--workers",
        type=_positive_int,
        default=min(8, os.cpu_count() or 1),
        help="threads decoding files in parallel (default: the CPU count, at most 8)",
    )
    v.add_argument(
        "--depth-folder",
        default="auto",
        metavar="auto|hha|depth",
        help="DeLiVER: the depth folder to check (auto: hha/ when present, else depth/)",
    )
    v.set_defaults(func=cmd_data_verify)
