"""What a training run does when something goes wrong (:mod:`equiseg.engine.train`, docs/design.md §3):
the errors it raises, the guard that saves ``last.pt`` before raising them, and graceful Ctrl-C.

- A non-finite loss or gradient norm (:meth:`FailureGuard.diverged`): the step's forward passes are
  undone (BN buffers, RNG states), ``last.pt`` is saved from the state before the step if that is
  finite, and :class:`NonFiniteLossError` names the iteration, the loss terms and the samples.
- A data file that fails mid-run (:meth:`FailureGuard.stop_on_data_error`, training loader or
  validation): ``last.pt`` is saved at the iteration reached, then :class:`DataFileError` names the file.
- Ctrl-C (:class:`GracefulInterrupt`): the iteration in progress ends, ``last.pt`` is saved, the run stops.
"""

from __future__ import annotations

import os
import re
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import torch
from torch.utils.data import DataLoader

from .distributed import all_gather_objects

if TYPE_CHECKING:
    from .train import Trainer


class NonFiniteLossError(RuntimeError):
    """Training diverged: a loss term or the gradient norm became NaN/Inf, or the state to be saved
    holds NaN/Inf. The message says which iteration ``last.pt`` holds (never a non-finite state)."""


class DataFileError(ValueError):
    """A data file failed mid-run (training loader or validation). ``last.pt`` was saved at the
    iteration reached first; the message names the file: fix it, then continue with ``--resume``.
    A ``ValueError`` like the data layer's own file errors, so callers and the CLI treat it alike."""


class FailureGuard:
    """Saves what can be saved, then raises: the two ways a step fails besides Ctrl-C."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer

    def stop_on_data_error(
        self, error: BaseException, iteration: int, *, val_pending: bool = False
    ) -> NoReturn:
        """Save ``last.pt`` at ``iteration`` (if finite and not there already), then raise
        :class:`DataFileError` naming the file. No collective: under DDP one rank's file fails.
        Inside an accumulated step, what its earlier micro-batches changed is undone first."""
        t = self.trainer
        if t.undo.pending:
            t.undo.undo()
        line = error_line(error)
        ckpt = t.checkpoints
        if ckpt.held_last == iteration or not t.s.main:
            kept = ckpt.last_held()
        else:
            bad = ckpt.try_save("last.pt", iteration, val_pending=val_pending, agree=False)
            kept = (
                f"saved iteration {iteration} to {t.s.work / 'last.pt'}"
                if bad is None
                else f"{ckpt.last_held()} (the state at iteration {iteration} is not finite: {bad})"
            )
        fix = named_file(error, line) or "the cause above"
        raise DataFileError(f"{line}; {kept}; fix {fix}, then continue with --resume") from error

    def diverged(
        self, iteration: int, epoch: int, terms: dict[str, torch.Tensor], loss_bad: bool, norm
    ) -> NoReturn:
        """Undo what the failed step's forward changed (buffers, RNG), save ``last.pt`` if that
        state is finite, and raise :class:`NonFiniteLossError` naming the iteration, the loss
        terms (the mean over the step's micro-batches) and the samples (under DDP: of the ranks
        whose loss failed, else of all ranks)."""
        t = self.trainer
        t.undo.undo()
        bad = t.checkpoints.try_save("last.pt", iteration)
        kept = (
            f"{t.checkpoints.last_held()}, the state from before this iteration"
            if bad is None
            else f"{t.checkpoints.last_held()}; the state before this iteration is not finite either ({bad})"
        )
        here = {
            "rank": t.s.dist.rank,
            "finite": not loss_bad,
            "terms": {k: float(v) for k, v in terms.items()},
            "samples": [sample_name(t.s.train_set.base, i) for i in t.batches.indices(iteration)],
        }
        gathered = all_gather_objects(here)
        reports = [r for r in gathered if not r["finite"]] or gathered
        where = "; ".join(
            (f"rank {r['rank']}: " if t.s.dist.distributed else "")
            + f"{r['terms']}, samples {', '.join(r['samples'])}"
            for r in reports
        )
        what = "loss" if any(not r["finite"] for r in gathered) else f"gradient norm ({float(norm)})"
        raise NonFiniteLossError(
            f"non-finite {what} at iteration {iteration} (epoch {epoch}): {where}; {kept}"
        )


def batches(loader: DataLoader, on_error):
    """The loader's batches; a file error while loading one (``OSError`` / ``ValueError``, also from a
    worker) goes to ``on_error``, which saves the run and raises."""
    stream = iter(loader)
    while True:
        try:
            batch = next(stream)
        except StopIteration:
            return
        except (OSError, ValueError) as e:
            on_error(e)
            raise
        yield batch


def error_line(exc: BaseException) -> str:
    """An error's message on one line; for one re-raised from a DataLoader worker, the original
    message without torch's wrapper and the worker's traceback."""
    text = str(exc) or type(exc).__name__
    if "in DataLoader worker process" in text and "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        head, sep, rest = last.partition(": ")
        text = rest if sep and head.isidentifier() else last
    return " ".join(text.split())


_LEADING_PATH = re.compile(r"^(.+?)(?:: | does not exist| is a directory)")


def named_file(exc: BaseException, line: str) -> str | None:
    """The file an error names: its ``filename``, else the path the data layer's messages start with
    (``PATH: ...``, ``PATH does not exist``), else the first word that looks like a file path."""
    name = getattr(exc, "filename", None)
    if name:
        return str(name)
    m = _LEADING_PATH.match(line)
    if m and os.sep in m.group(1):
        return m.group(1)
    for word in line.split():
        word = word.strip("'\"()[],;:")
        if os.sep in word and Path(word).suffix:
            return word
    return None


def sample_name(ds: Any, index: int) -> str:
    """``index (path of its first file, relative to the data root)`` for error messages."""
    try:
        path = next(iter(ds.paths(index).values()))
        try:
            path = Path(path).relative_to(ds.root)
        except ValueError:
            pass
        return f"{index} ({path})"
    except Exception:  # a message helper must never mask the error it reports
        return str(index)


class GracefulInterrupt:
    """Ctrl-C (SIGINT) finishes the current iteration, saves ``last.pt`` and stops: no lost work, and
    the saved state is that of a completed iteration, so ``--resume`` continues bit-exactly. A second
    Ctrl-C aborts at once. Single process only (under torchrun every rank must stop at the same
    iteration; there the periodic ``last.pt`` is the recovery point)."""

    def __init__(self, bar, enabled: bool = True) -> None:
        self.requested = False
        self._bar = bar
        self._old = None
        if enabled and threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self._bar.write("interrupt: finishing this iteration and saving last.pt (Ctrl-C again to abort)")

    def restore(self) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            self._old = None
