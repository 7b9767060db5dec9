"""``equiseg`` command line: a thin layer over the Python API (every command has a function twin).

equiseg synth --out DIR --layout deliver --train 200 --val 50 --size 256 --seed 0
equiseg data verify ROOT --layout deliver|muses|folder [--spec FILE] [--splits train,val] [--json] [--workers N]
equiseg train CONFIG [--set a.b=c ...] [--work-dir DIR] [--resume [PATH] | --overwrite]
equiseg eval CONFIG --checkpoint PATH [--split val|test] [--case CASE] [--out DIR]
equiseg demo [--out DIR] [--quick]
equiseg convert-weights SRC.safetensors DST.pth
equiseg models
equiseg doctor [--check [--compile] [--device cuda:N]] [--json]
equiseg predict --checkpoint PATH --input DIR | MODALITY=FILE ... --out DIR [--overlay] [--raw]
equiseg export --checkpoint PATH --format onnx|safetensors [--out DIR [--overwrite]] [--opset 17] [--size H W]
equiseg analyze CONFIG --checkpoint PATH [--out DIR] [--split val|test] [--max-samples N]
equiseg robustness CONFIG --checkpoint PATH [--tests emm,rmm,nm] [--out DIR] [--seed 0] [--split val|test]
equiseg ablate CONFIG --rows tab2|tab3 [--quick] [--out DIR] [--only ROW,...] [--set a.b=c ...]
equiseg study CONFIG --rows tab1,tab2,tab3 --seeds 1,2,3 [--init scratch,synth|PATH] [--quick]
equiseg pretrain --out mit_b0_synth.pth [--variant b0] [--modalities ...] [--quick]
equiseg compare CONFIG --models equiseg_b0,cmnext_b0,... [--seeds 1,2,3] [--checkpoints NAME=PATH ...] [--quick]

eval, robustness and analyze take ``--split`` (default ``data.val_split``), checked against the data set's
splits before a checkpoint is read; every table, JSON and report they write names the split scored.

eval, robustness, analyze and predict take ``--precision auto|fp32|bf16`` (the network's forward; for the
first three it overrides ``eval.precision``) and say which precision ran.

Exit codes: 0 done, 2 a user error (one line on stderr naming the file or key; ``--debug`` shows the
traceback), 1 a failed run (non-finite loss) or a data set ``data verify`` found problems in, 130
interrupted (Ctrl-C; ``train`` saved ``last.pt``). ``doctor --check`` returns 1 when a check failed.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from pathlib import Path


def _csv(text: str | None) -> list[str] | None:
    """A comma-separated flag as a list: None when the flag is absent, ``[]`` when it is empty -- never
    the default in its place: each command refuses an empty list it cannot use, by the one check of
    :func:`equiseg.utils.check_names`."""
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def _positive_int(text: str) -> int:
    """argparse type of ``--max-samples``: an integer >= 1 (0 samples would report ``mIoU nan``, rc 0)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


PRECISIONS = ("auto", "fp32", "bf16")  # equiseg.engine.precision.PRECISIONS (not imported: startup time)


def _add_precision(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    where = "auto" if default else "the config's eval.precision, auto by default"
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=default,
        help=f"the network's forward: bf16 autocast or fp32; auto: bf16 where this machine runs it fast "
        f"(default: {where})",
    )


def _overrides(args: argparse.Namespace) -> list[str]:
    """``--set`` items, then ``eval.precision`` from ``--precision`` (so the flag wins)."""
    return [*args.set, *([f"eval.precision={args.precision}"] if args.precision else [])]


def _add_split(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--split",
        default=None,
        help="the split to score: train, val or test of DeLiVER/MUSES, or a split a folder data set has on "
        "disk (default: the config's data.val_split); every table, JSON and report names it",
    )


def _scored_split(args: argparse.Namespace) -> str:
    """The split ``eval`` / ``robustness`` / ``analyze`` score: ``--split``, else the config's
    ``data.val_split``. Checked against the data set's splits before a checkpoint is read, so a misspelt
    or absent split is one line naming the flag (or the key) it came from."""
    from equiseg.config import load_experiment
    from equiseg.data.splits import check_split

    data = load_experiment(args.config, _overrides(args)).data
    if args.split is not None:
        return check_split(data, args.split, "--split")
    return check_split(data, data.val_split, "data.val_split")


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
        ", ".join(f"{k} {'–' if v is None else f'{v:.2f}'}" for k, v in shown.items())
        + f"  ({r['convention']} convention, {r['num_samples']} samples of the {r['split']} split)"
    )
    print(r["precision_note"])
    print(f"written: {out}/robustness.json, {out}/robustness.md, {out}/report.md, {out}/report.html")
    return 0


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


def _mapping(items: list[str] | None, flag: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        if "=" not in item or not item.split("=", 1)[0] or not item.split("=", 1)[1]:
            raise ValueError(f"{flag}: expected NAME=PATH, got {item!r}")
        name, path = item.split("=", 1)
        out[name.strip()] = path.strip()
    return out


def _ints(text: str | None, flag: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(t) for t in _csv(text)]
    except ValueError:
        raise ValueError(f"{flag}: expected comma-separated integers, got {text!r}") from None


def _schedule_suffix(args: argparse.Namespace) -> str:
    name = "quick" if args.quick else args.schedule
    return f"_{name}" if name else ""


def _add_schedule(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--schedule",
        choices=["quick", "standard"],
        default=None,
        help="quick (= --quick) or standard (the demo setting's converged schedule, every val sample); "
        "default: the config's own",
    )


def _add_records(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--records",
        default=None,
        help="a record tree (e.g. docs/results/STUDY): each finished run leaves its small record there "
        "(no checkpoints), and a run matching a record is taken from it instead of trained",
    )


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
            f"{h} {'–' if mean[k] is None else f'{mean[k]:.2f}'}"
            for k, h in (("clean", "mIoU"), ("emm_avg", "EMM"), ("mean", "Mean"))
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="equiseg", description="EQUISeg: robust multimodal semantic segmentation."
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
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
    s.add_argument(
        "--muses-encoding",
        choices=["npz", "png"],
        default="npz",
        help="MUSES layout: projected sensors as .npz (default) or 16-bit PNG",
    )
    s.set_defaults(func=cmd_synth)

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

    an = sub.add_parser("analyze", help="modality contributions: cosine similarity with the fused feature")
    an.add_argument("config")
    an.add_argument("--checkpoint", required=True)
    an.add_argument("--out", default=None, help="default: CHECKPOINT_DIR/analysis_SPLIT")
    _add_split(an)
    an.add_argument("--max-samples", type=_positive_int, default=None)
    an.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    _add_precision(an)
    an.set_defaults(func=cmd_analyze)

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

    pt = sub.add_parser(
        "pretrain", help="an ImageNet stand-in: pretrain a MiT encoder on the built-in scenes"
    )
    pt.add_argument("--out", required=True, help="the .pth to write (original mit_b*.pth layout)")
    pt.add_argument("--variant", default="b0", help="MiT size b0 ... b5")
    pt.add_argument("--modalities", default=None, help="comma-separated (default rgb,depth,event,lidar)")
    pt.add_argument("--quick", action="store_true", help="96 scenes at 96², 200 iterations")
    pt.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override training config keys")
    pt.set_defaults(func=cmd_pretrain)

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
    return p


EXIT_USER_ERROR = 2  # the input (a file, a key, a value) is wrong: the message says which
EXIT_RUN_FAILED = 1  # the run itself failed (non-finite loss); the message says where
EXIT_INTERRUPTED = 130  # Ctrl-C, as the shell reports SIGINT


MAX_ERROR_CHARS = 2000  # a message quoting something huge is cut (values are bounded at the source)


def _one_line(exc: BaseException) -> str:
    """The user-facing line of an exception: for errors re-raised from a DataLoader worker, the original
    message without torch's wrapper and the worker's traceback; at most :data:`MAX_ERROR_CHARS`."""
    text = str(exc) or type(exc).__name__
    if "in DataLoader worker process" in text and "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last and last.split(": ", 1)[0].isidentifier() else last
    line = " ".join(text[:MAX_ERROR_CHARS].split())  # one line, whatever the message held
    if len(text) > MAX_ERROR_CHARS:
        line += f" ... (message cut at {MAX_ERROR_CHARS} of {len(text)} characters)"
    return line


def main(argv: list[str] | None = None) -> int:
    """Run one command. User errors print one line on stderr and return 2 (``--debug``: the traceback);
    Ctrl-C returns 130; a failed run (non-finite loss) returns 1, also with one line.

    A command run keeps freed CPU tensor memory in the process (``$EQUISEG_CPU_ALLOCATOR``, default
    ``retain``; ``system`` opts out): applied here, at the start, since importing the library must not
    retune its host (:func:`equiseg.configure_cpu_allocator`)."""
    args = build_parser().parse_args(argv)
    from equiseg.engine.allocator import configure_cpu_allocator

    configure_cpu_allocator()
    if getattr(args, "data_command", None):  # messages name the whole command: "equiseg data verify"
        args.command = f"{args.command} {args.data_command}"
    from equiseg.engine.checkpoint import CheckpointError
    from equiseg.engine.train import NonFiniteLossError
    from equiseg.utils import WriteError, disk_full_cause

    try:
        return args.func(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"equiseg {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except NonFiniteLossError as e:
        if args.debug:
            raise
        print(f"equiseg {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_RUN_FAILED
    except (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as e:
        if args.debug:
            raise
        print(f"equiseg {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (CheckpointError, OSError) as e:  # corrupt/unsafe checkpoints, disk full, read-only output
        if args.debug:
            raise
        full = disk_full_cause(e)
        if isinstance(e, (CheckpointError, WriteError)):
            msg = _one_line(e)  # names the file the user asked for
        elif full is not None:
            msg = f"no space left on device while writing {full.filename or 'a file'}"
        elif e.errno in (errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT):
            msg = f"cannot write {e.filename or 'a file'}: {e.strerror or e}"
        else:
            raise
        print(f"equiseg {args.command}: error: {msg}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
