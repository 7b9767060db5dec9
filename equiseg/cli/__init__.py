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

The commands live by group in this package (``data``, ``tools``, ``run``, ``deploy``, ``experiments``),
each module holding its commands' functions and parsers; :mod:`equiseg.cli.common` holds what they
share. This module builds the parser and runs a command (:func:`main`).
"""

from __future__ import annotations

import argparse
import errno
import sys

from equiseg.cli.common import (
    EXIT_INTERRUPTED,
    EXIT_RUN_FAILED,
    EXIT_USER_ERROR,
    MAX_ERROR_CHARS,
    PRECISIONS,
)
from equiseg.cli.common import _one_line as _one_line
from equiseg.cli.data import add_data, add_synth, cmd_data_verify, cmd_synth
from equiseg.cli.deploy import add_export, add_predict, cmd_export, cmd_predict
from equiseg.cli.experiments import (
    add_ablate,
    add_compare,
    add_pretrain,
    add_study,
    cmd_ablate,
    cmd_compare,
    cmd_pretrain,
    cmd_study,
)
from equiseg.cli.run import (
    add_analyze,
    add_eval,
    add_robustness,
    add_train,
    cmd_analyze,
    cmd_eval,
    cmd_robustness,
    cmd_train,
)
from equiseg.cli.tools import (
    add_convert,
    add_demo,
    add_doctor,
    add_models,
    cmd_convert,
    cmd_demo,
    cmd_doctor,
    cmd_models,
)

__all__ = [
    "main",
    "build_parser",
    "EXIT_USER_ERROR",
    "EXIT_RUN_FAILED",
    "EXIT_INTERRUPTED",
    "MAX_ERROR_CHARS",
    "PRECISIONS",
    "cmd_synth",
    "cmd_data_verify",
    "cmd_train",
    "cmd_eval",
    "cmd_demo",
    "cmd_convert",
    "cmd_models",
    "cmd_doctor",
    "cmd_analyze",
    "cmd_robustness",
    "cmd_ablate",
    "cmd_study",
    "cmd_pretrain",
    "cmd_compare",
    "cmd_predict",
    "cmd_export",
]

# every command's parser, in the order `equiseg --help` lists them
_COMMANDS = (
    add_synth,
    add_data,
    add_train,
    add_eval,
    add_demo,
    add_convert,
    add_models,
    add_doctor,
    add_analyze,
    add_robustness,
    add_ablate,
    add_study,
    add_pretrain,
    add_compare,
    add_predict,
    add_export,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="equiseg", description="EQUISeg: robust multimodal semantic segmentation."
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    return p


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
