"""What the commands share: list and number flags, ``--precision`` / ``--split`` / ``--schedule`` /
``--records``, the scored split, the exit codes and the one-line error text."""

from __future__ import annotations

import argparse


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
