"""``equiseg train``, ``eval``, ``analyze`` and ``robustness``: train from a config, and score a
checkpoint on a split (metrics, modality contributions, the robustness benchmark)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from equiseg.cli.common import (
    EXIT_INTERRUPTED,
    _add_precision,
    _add_split,
    _csv,
    _overrides,
    _positive_int,
    _scored_split,
)
from equiseg.formatting import fmt


def cmd_train(args: argparse.Namespace) -> int:
    from equiseg.api import train

    resume = args.resume
    if resume == "":  # --resume with no path: the work dir's last.pt
        resume = True
    result = train(
        args.config,
        args.set,
        work_dir=args.work_dir,
        resume=resume,
        progress=not args.quiet,
        stop_after=args.stop_after,
        overwrite=args.overwrite,
    )
    if result.interrupted:  # rc 130 as for SIGINT, so `train && eval` does not carry on
        print(f"interrupted at iteration {result.iterations}; continue with --resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(
        f"done: {result.iterations} iterations, best val mIoU {result.best_miou:.2f}, outputs in {result.work_dir}"
    )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from equiseg.api import evaluate

    split = _scored_split(args)
    out = args.out or str(
        Path(args.checkpoint).parent / f"eval_{split}{'_' + args.case if args.case else ''}"
    )
    r = evaluate(
        args.config,
        args.checkpoint,
        _overrides(args),
        split=split,
        case=args.case,
        out_dir=out,
        progress=not args.quiet,
        max_samples=args.max_samples,
    )
    print(
        f"{r['split']} split, {r['num_samples']} samples: mIoU {r['mIoU']:.2f}  aAcc {r['aAcc']:.2f}  "
        f"mAcc {r['mAcc']:.2f}  ({r['convention']} convention)"
    )
    for c, m in r.get("per_case", {}).items():
        print(f"  {c:14s} mIoU {m['mIoU']:.2f}")
    print(r["precision_note"])
    print(f"written: {out}/metrics.json, {out}/metrics.md")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from equiseg.tasks.analysis import analyze, display_name

    split = _scored_split(args)
    out = args.out or str(Path(args.checkpoint).parent / f"analysis_{split}")
    r = analyze(
        args.config,
        args.checkpoint,
        _overrides(args),
        split=split,
        out_dir=out,
        max_samples=args.max_samples,
        progress=not args.quiet,
    )
    last = r["similarity"]["last_stage"]
    print(
        f"cosine similarity with the fused feature, last stage, {r['num_samples']} samples of the "
        f"{r['split']} split: " + ", ".join(f"{display_name(m)} {v:.2f}" for m, v in last.items())
    )
    print(
        f"definition: {r['headline']['definition']} ({r['definition']}); every other definition, the "
        "feature norms and |f_c|/|f'| are in analysis.md"
    )
    print(r["precision_note"])
    print(f"written: {out}/analysis.json, {out}/analysis.md, {out}/analysis.png")
    return 0


def cmd_robustness(args: argparse.Namespace) -> int:
    from equiseg.robustness.benchmark import TESTS
    from equiseg.tasks.robustness_run import run_robustness
    from equiseg.utils import check_names

    tests = check_names(_csv(args.tests), TESTS, what="robustness test", where="--tests")
    split = _scored_split(args)
    out = args.out or str(Path(args.checkpoint).parent / f"robustness_{split}")
    r = run_robustness(
        args.config,
        args.checkpoint,
        _overrides(args),
        tests=tests,
        out_dir=out,
        seed=args.seed,
        split=split,
        max_samples=args.max_samples,
        model_aware_missing=args.model_aware_missing,
        variant_batch_size=args.variant_batch_size,
        convention=args.convention,
        progress=not args.quiet,
    )
    s = r["summary"]
    keys = ("clean", "emm_avg", "emm_p0.1", "rmm_avg[0.5]", "nm_low", "nm_mid", "mean")
    shown = {k: s[k] for k in keys if k in s}
    print(
        ", ".join(f"{k} {fmt(v)}" for k, v in shown.items())
        + f"  ({r['convention']} convention, {r['num_samples']} samples of the {r['split']} split)"
    )
    print(r["precision_note"])
    print(f"written: {out}/robustness.json, {out}/robustness.md, {out}/report.md, {out}/report.html")
    return 0


def add_train(sub: argparse._SubParsersAction) -> None:
    """The ``train`` command's parser."""
    t = sub.add_parser("train", help="train from a YAML config")
    t.add_argument("config")
    t.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config keys (a.b=c)")
    t.add_argument("--work-dir", default=None)
    t.add_argument(
        "--resume",
        nargs="?",
        const="",
        default=None,
        metavar="PATH",
        help="resume from PATH, or from WORK_DIR/last.pt when no path is given",
    )
    t.add_argument(
        "--overwrite",
        action="store_true",
        help="WORK_DIR already holds a run: move it aside to WORK_DIR.replaced-<time>/ and start fresh",
    )
    t.add_argument(
        "--stop-after", type=int, default=None, help="stop after this many iterations (saving last)"
    )
    t.set_defaults(func=cmd_train)


def add_eval(sub: argparse._SubParsersAction) -> None:
    """The ``eval`` command's parser."""
    e = sub.add_parser("eval", help="evaluate a checkpoint (overall, per class, per case)")
    e.add_argument("config")
    e.add_argument("--checkpoint", required=True)
    _add_split(e)
    e.add_argument("--case", default=None)
    e.add_argument("--out", default=None)
    e.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    e.add_argument("--max-samples", type=_positive_int, default=None)
    _add_precision(e)
    e.set_defaults(func=cmd_eval)


def add_analyze(sub: argparse._SubParsersAction) -> None:
    """The ``analyze`` command's parser."""
    an = sub.add_parser("analyze", help="modality contributions: cosine similarity with the fused feature")
    an.add_argument("config")
    an.add_argument("--checkpoint", required=True)
    an.add_argument("--out", default=None, help="default: CHECKPOINT_DIR/analysis_SPLIT")
    _add_split(an)
    an.add_argument("--max-samples", type=_positive_int, default=None)
    an.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    _add_precision(an)
    an.set_defaults(func=cmd_analyze)


def add_robustness(sub: argparse._SubParsersAction) -> None:
    """The ``robustness`` command's parser."""
    rb = sub.add_parser("robustness", help="robustness benchmark: missing (EMM, RMM), noisy (NM) modalities")
    rb.add_argument("config")
    rb.add_argument("--checkpoint", required=True)
    rb.add_argument("--tests", default="emm,rmm,nm", help="comma-separated subset of emm,rmm,nm")
    rb.add_argument("--out", default=None, help="default: CHECKPOINT_DIR/robustness_SPLIT")
    rb.add_argument("--seed", type=int, default=0, help="seed of the random corruptions")
    _add_split(rb)
    rb.add_argument(
        "--max-samples", type=_positive_int, default=None, help="first N samples only (not the protocol)"
    )
    rb.add_argument(
        "--model-aware-missing",
        action="store_true",
        help="also evaluate EMM with missing modalities passed as None (reported separately)",
    )
    rb.add_argument(
        "--variant-batch-size", type=int, default=4, help="corruption variants per forward call (default 4)"
    )
    rb.add_argument(
        "--convention",
        choices=["reference", "present"],
        default=None,
        help="mIoU convention (default: the config's eval.convention)",
    )
    rb.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    _add_precision(rb)
    rb.set_defaults(func=cmd_robustness)
