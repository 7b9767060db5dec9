"""``equiseg ablate``, ``study``, ``pretrain`` and ``compare``: the experiments that train many runs
(the paper's tables under one protocol) and the ImageNet stand-in they may start from."""

from __future__ import annotations

import argparse

from equiseg.cli.common import (
    _add_records,
    _add_schedule,
    _csv,
    _ints,
    _mapping,
    _positive_int,
    _schedule_suffix,
)
from equiseg.formatting import fmt


def cmd_ablate(args: argparse.Namespace) -> int:
    from equiseg.tasks.ablate import run_ablation

    out = args.out or f"runs/ablation_{args.rows}{_schedule_suffix(args)}"
    r = run_ablation(
        args.config,
        args.rows,
        args.set,
        out_dir=out,
        quick=args.quick,
        schedule=args.schedule,
        records=args.records,
        rows=_csv(args.only),
        max_samples=args.max_samples,
        resume=args.resume,
        progress=not args.quiet,
    )
    for row in r["rows"]:
        print(f"  {row['id']:20s} mIoU {row['mIoU']:6.2f}  EMM(Avg) {row['emm_avg']:6.2f}")
    print(f"written: {r['files']['markdown']}, {r['files']['json']}, {r['files']['chart']}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from equiseg.tasks.compare import run_compare

    out = args.out or f"runs/compare{_schedule_suffix(args)}"
    r = run_compare(
        args.config,
        _csv(args.models),
        args.set,
        seeds=_ints(args.seeds, "--seeds"),
        checkpoints=_mapping(args.checkpoints, "--checkpoints"),
        out_dir=out,
        quick=args.quick,
        schedule=args.schedule,
        records=args.records,
        max_samples=args.max_samples,
        progress=not args.quiet,
    )
    for name, m in r["models"].items():
        mean = m["mean"]
        shown = ", ".join(
            f"{h} {fmt(mean[k])}" for k, h in (("clean", "mIoU"), ("emm_avg", "EMM"), ("mean", "Mean"))
        )
        print(f"  {name:20s} {shown}")
    files = r["files"]
    print(
        f"written: {files['markdown']}, {files['html']}, {files['json']}, {files['chart']} ({r['seconds']:.0f} s)"
    )
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from equiseg.tasks.study import TAB1_MODELS, run_study

    out = args.out or f"runs/study{_schedule_suffix(args)}"
    r = run_study(
        args.config,
        _csv(args.rows),
        args.set,
        seeds=_ints(args.seeds, "--seeds"),
        inits=_csv(args.init),
        only=_csv(args.only),
        models=TAB1_MODELS if args.models is None else _csv(args.models),
        out_dir=out,
        quick=args.quick,
        schedule=args.schedule,
        records=args.records,
        max_samples=args.max_samples,
        progress=not args.quiet,
    )
    for sec in r["sections"]:
        print(f"  {sec['table']} ({sec['init']}): {len(sec['rows'])} rows x {len(r['seeds'])} seeds")
    print(
        f"written: {r['files']['markdown']}, {r['files']['html']}, {r['files']['json']} ({r['seconds']:.0f} s)"
    )
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from equiseg.tasks.pretrain import run_pretrain

    r = run_pretrain(
        args.out,
        variant=args.variant,
        modalities=_csv(args.modalities),
        quick=args.quick,
        overrides=args.set,
        progress=not args.quiet,
    )
    print(f"wrote {r.path} ({r.tensors} tensors, {r.iterations} iterations; {r.report})")
    print(f"use it with --set model.pretrained={r.path}")
    return 0


def add_ablate(sub: argparse._SubParsersAction) -> None:
    """The ``ablate`` command's parser."""
    ab = sub.add_parser("ablate", help="train and evaluate the rows of the paper's Tab. 2 or Tab. 3")
    ab.add_argument("config")
    ab.add_argument(
        "--rows",
        required=True,
        choices=["tab2", "tab3", "sgm_convention", "sgm_features", "modality_dropout"],
        help="which ablation table (modality_dropout: training on random modality subsets)",
    )
    ab.add_argument("--only", default=None, help="comma-separated row ids (default: every row)")
    ab.add_argument("--quick", action="store_true", help="short schedule, val subset (demo setting, CPU)")
    _add_schedule(ab)
    ab.add_argument("--out", default=None, help="default: runs/ablation_TABLE[_SCHEDULE]")
    ab.add_argument(
        "--max-samples", type=_positive_int, default=None, help="evaluate on the first N val samples"
    )
    ab.add_argument(
        "--resume",
        action="store_true",
        help="reuse rows already finished in --out (re-scored from their checkpoints when scored "
        "otherwise) and continue unfinished ones from their last.pt",
    )
    _add_records(ab)
    ab.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config keys (a.b=c)")
    ab.set_defaults(func=cmd_ablate)


def add_study(sub: argparse._SubParsersAction) -> None:
    """The ``study`` command's parser."""
    st = sub.add_parser(
        "study", help="the paper's claims under seeds: Tab. 1 peers and Tab. 2/3 rows, paired"
    )
    st.add_argument("config")
    st.add_argument(
        "--rows",
        default="tab1,tab2,tab3",
        help="comma-separated tables: tab1, tab2, tab3, sgm_convention, sgm_features, modality_dropout",
    )
    st.add_argument("--seeds", default="1,2,3", help="comma-separated training seeds")
    st.add_argument(
        "--init",
        default="scratch,synth",
        help="comma-separated: scratch, synth (the ImageNet stand-in, made once), or a path of MiT weights",
    )
    st.add_argument("--only", default=None, help="comma-separated row ids / model names (full model kept)")
    st.add_argument("--models", default=None, help="Tab. 1 models (first = the full model)")
    st.add_argument(
        "--quick", action="store_true", help="the short schedule and val subset of ablate --quick"
    )
    _add_schedule(st)
    _add_records(st)
    st.add_argument("--out", default=None, help="default: runs/study[_SCHEDULE]")
    st.add_argument("--max-samples", type=_positive_int, default=None)
    st.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config keys (a.b=c)")
    st.set_defaults(func=cmd_study)


def add_pretrain(sub: argparse._SubParsersAction) -> None:
    """The ``pretrain`` command's parser."""
    pt = sub.add_parser(
        "pretrain", help="an ImageNet stand-in: pretrain a MiT encoder on the built-in scenes"
    )
    pt.add_argument("--out", required=True, help="the .pth to write (original mit_b*.pth layout)")
    pt.add_argument("--variant", default="b0", help="MiT size b0 ... b5")
    pt.add_argument("--modalities", default=None, help="comma-separated (default rgb,depth,event,lidar)")
    pt.add_argument("--quick", action="store_true", help="96 scenes at 96², 200 iterations")
    pt.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override training config keys")
    pt.set_defaults(func=cmd_pretrain)


def add_compare(sub: argparse._SubParsersAction) -> None:
    """The ``compare`` command's parser."""
    cp = sub.add_parser(
        "compare", help="train and score EQUISeg and its peers under one protocol (paper Tab. 1)"
    )
    cp.add_argument("config")
    cp.add_argument("--models", required=True, help="comma-separated model names (equiseg models lists them)")
    cp.add_argument("--seeds", default=None, help="comma-separated training seeds (default: train.seed)")
    cp.add_argument(
        "--checkpoints",
        nargs="*",
        default=[],
        metavar="NAME=PATH",
        help="score these files instead of training (equiseg checkpoints or public releases)",
    )
    cp.add_argument("--quick", action="store_true", help="short schedule and a val subset (demo data, CPU)")
    _add_schedule(cp)
    _add_records(cp)
    cp.add_argument("--out", default=None, help="default: runs/compare[_SCHEDULE]")
    cp.add_argument(
        "--max-samples", type=_positive_int, default=None, help="evaluate on the first N val samples"
    )
    cp.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config keys (a.b=c)")
    cp.set_defaults(func=cmd_compare)
