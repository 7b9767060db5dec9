"""The training loop (docs/design.md §3): AdamW + warm-up/poly schedule, CE or OHEM CE + λ·SGM, periodic
validation, atomic ``last``/``best`` checkpoints, bit-exact resume, a divergence guard, and DDP.

What a failure keeps: a checkpoint is never written from a state holding NaN/Inf (model, buffers or
optimizer); a non-finite loss or gradient norm stops the run before the optimizer step, so ``last.pt``
can hold the state from before that iteration; a data file that fails mid-run (training loader or
validation) first saves ``last.pt`` at the iteration reached, so fixing the file and ``--resume`` loses
nothing (a validation that failed is run again on resume).

Gradient accumulation (``train.accumulate_steps`` = K): an iteration is one optimiser step over K
micro-batches of ``data.batch_size`` -- K forward/backward passes of the loss divided by K, gradients
summed, then one clip / non-finite check / AMP scaler step / optimiser step / scheduler step. Under DDP
the gradient all-reduce runs only on the last micro-batch (``no_sync`` on the others). Iterations,
``max_iters``, the schedule, the log, validation and checkpoint intervals all count optimiser steps; the
effective batch (batch × K × processes) is printed, logged (a ``run`` record in ``log.jsonl``) and saved
in ``train_summary.json`` and every checkpoint. Checkpoints are written only between steps -- never
mid-accumulation: a failure inside a step (a data file, a divergence, Ctrl-C waits for the step to end)
first undoes what the step's micro-batches changed besides the weights (BN buffers, RNG) -- so resume is
always exact. ``accumulate_steps`` cannot change on resume (the samples of a step depend on it).

Modality dropout (``train.modality_dropout``, :mod:`equiseg.engine.modality_dropout`): each micro-batch's
pattern comes from a generator seeded by ``(seed, iteration, micro-batch, rank)``, so it needs no saved
state and is the same on resume.

Why resume is exact: every source of randomness is either saved or re-derivable. The sample order is
``DistributedSampler``'s (seeded by ``seed + epoch``) and a resumed run skips the batches already seen;
each sample's augmentation is seeded by ``(seed, epoch, index)`` (:class:`SeededTrainSet`); the model's
own randomness (dropout, drop-path) uses torch's global generator and the SGM pairing its own
generator, whose states are saved with the checkpoint; the DataLoader gets a private generator so
creating a loader never advances the global one.

Where each part lives: :func:`train` sets the run up (:mod:`equiseg.engine.run_setup`: the folder, its
lock, the checks against a run already there, data, model, optimiser), restores the state of a resumed
run (:mod:`equiseg.engine.train_state`), then hands over to a :class:`Trainer`, whose
:meth:`Trainer.run_step` is one iteration -- forward, loss terms, backward with accumulation, optimiser
step -- followed by its hooks (:mod:`equiseg.engine.hooks`: the log and TensorBoard, validation,
checkpoints). Failures (divergence, a data file, Ctrl-C) are :mod:`equiseg.engine.failures`'; the
precision of the forward is :mod:`equiseg.engine.precision`'s, shared with evaluation.
"""

from __future__ import annotations

import dataclasses
import json
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from equiseg.config import ExperimentConfig

from . import failures
from .device import resolve_device
from .distributed import agree_any, barrier, cleanup, init_distributed
from .failures import DataFileError, FailureGuard, GracefulInterrupt, NonFiniteLossError
from .hooks import Checkpointer, TrainLog, Validator
from .precision import autocast
from .run_setup import TrainSetup, build_loader, build_run, claim_run_dir, find_checkpoint, prepare_run
from .rundir import RunLock
from .train_state import StepUndo, restore_state

__all__ = ["DataFileError", "NonFiniteLossError", "TrainResult", "Trainer", "find_checkpoint", "train"]


@dataclass
class TrainResult:
    """What :func:`train` returns. ``interrupted``: stopped by Ctrl-C (``last.pt`` holds iteration
    ``iterations``; continue with ``resume=True``)."""

    work_dir: Path
    iterations: int
    best_miou: float
    last_metrics: dict[str, Any] | None
    interrupted: bool = False


def train(
    cfg: ExperimentConfig,
    *,
    work_dir: str | Path | None = None,
    resume: str | bool | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Train EQUISeg as ``cfg`` says. Works single-process and under ``torchrun`` (DDP).

    Args:
        cfg: the experiment config.
        work_dir: overrides ``cfg.work_dir``; gets ``config.yaml``, ``log.jsonl``, ``last.pt``,
            ``best.pt`` and ``metrics.json`` (with ``train.tensorboard``, also ``tensorboard/``: see
            :mod:`equiseg.engine.tb`). It is locked for the run (``run.lock``).
        resume: ``True`` resumes from ``work_dir/last.pt``, a path from that file. The config may
            differ from the checkpoint's only in :data:`~equiseg.engine.rundir.SAFE_RESUME_KEYS`.
        progress: show a progress bar (rank 0).
        stop_after: stop after this many iterations of *this* call (as if killed), saving ``last``;
            the schedule still runs to ``max_iters``. For tests and time-boxed jobs.
        overwrite: ``work_dir`` already holds a run: move it aside to ``WORK_DIR.replaced-<time>/`` and
            start fresh (without it, such a folder is refused unless resuming).

    Raises:
        RunDirError: the folder is in use, holds a run (without ``resume``/``overwrite``), or the
            resume config differs from the checkpoint's in keys that cannot change mid-run.
        NonFiniteLossError: a loss term or the gradient norm became NaN/Inf (stopped before the
            optimizer step; ``last.pt`` holds the state from before it), or the state to be saved
            holds NaN/Inf (not written). The message says which iteration ``last.pt`` holds.
        DataFileError: a data file failed mid-run (training loader or validation); ``last.pt`` was
            saved at the iteration reached. Fix the file named, then ``resume=True``.
        ValueError: ``train.tensorboard`` without the ``tensorboard`` package (before anything is written).
    """
    dist = init_distributed(resolve_device(cfg.train.device))
    work = Path(work_dir or cfg.work_dir)
    lock = RunLock(work)
    existed, started = work.exists(), False
    setup: TrainSetup | None = None
    trainer: Trainer | None = None
    try:
        # Rank 0 checks the folder (under its lock) before anything is written; every rank follows.
        ckpt = claim_run_dir(cfg, work, resume, overwrite, lock, dist.is_main)
        setup = build_run(cfg, dist, work, resuming=resume not in (None, False))
        it, best, val_pending = 0, -1.0, False
        ckpt_path = find_checkpoint(work, resume)
        if ckpt_path is not None:
            it, best, val_pending = restore_state(setup, ckpt, ckpt_path)
        ckpt = None  # its tensors were copied into the model and optimizer: free them
        # Data, model, weights and checkpoint all loaded: only now does the run folder change.
        if dist.is_main:
            for note in prepare_run(cfg, work, it if ckpt_path is not None else None, overwrite):
                print(note, flush=True)
            started = True
        own_last = ckpt_path is not None and Path(ckpt_path).resolve() == (work / "last.pt").resolve()
        trainer = Trainer(setup, it, best, held_last=it if own_last else None)
        return trainer.run(
            resumed=ckpt_path is not None, val_pending=val_pending, progress=progress, stop_after=stop_after
        )
    finally:
        if trainer is not None:
            trainer.close()  # the Ctrl-C handler, log.jsonl, TensorBoard (readable up to a failure)
        lock.release()
        if dist.is_main and not started and not existed and work.is_dir() and not any(work.iterdir()):
            work.rmdir()  # a run that failed to start leaves no trace
        # Release the DDP wrapper (its reducer holds the process group) before the group is destroyed;
        # a wrapper outliving its group -- e.g. kept alive by the traceback of a NonFiniteLossError --
        # can abort the process at exit ("terminate called without an active exception").
        if setup is not None:
            setup.net = None
        cleanup()


class Trainer:
    """One run's loop: :meth:`run_step` is an iteration, :meth:`after_step` its hooks.

    Holds the run's progress -- ``it`` (optimiser steps done), ``best`` (the best validation mIoU),
    ``last_metrics`` -- and the set-up ``s`` (:class:`~equiseg.engine.run_setup.TrainSetup`); the
    hooks read both. Never keep the DDP wrapper (``s.net``) in a local variable here: :func:`train`
    releases it through ``s`` when the run ends, also when a traceback keeps these frames alive.
    """

    def __init__(self, s: TrainSetup, it: int, best: float, *, held_last: int | None) -> None:
        self.s = s
        self.it, self.best, self.last_metrics = it, best, None
        self.stop_at = s.max_iters
        self.undo = StepUndo(s)  # the state from before the step in progress (None between steps)
        self.checkpoints = Checkpointer(self, held_last)
        self.guard = FailureGuard(self)
        self.log = TrainLog(self)
        self.validator = Validator(self)
        self.interrupt: GracefulInterrupt | None = None
        self.batches = None  # the batch sampler: which samples make step k (for error messages)
        self.stream = None  # the training micro-batches, from iteration `it` on, without end

    def run(self, *, resumed: bool, val_pending: bool, progress: bool, stop_after: int | None) -> TrainResult:
        """Train from ``it`` to ``max_iters``, or ``stop_after`` iterations, or Ctrl-C."""
        s = self.s
        self.log.open(resumed=resumed, progress=progress)
        if stop_after is not None:
            self.stop_at = min(s.max_iters, self.it + stop_after)
        s.net.train()
        self.interrupt = GracefulInterrupt(self.log.bar, enabled=not s.dist.distributed)
        if val_pending:  # the run stopped when its validation at `it` failed: validate now
            if s.main:
                print(
                    f"resume: the validation at iteration {self.it} did not finish; running it first",
                    flush=True,
                )
            self.validator.run(self.it)
            self.checkpoints.save("last.pt", self.it)
        self.log.start_timing()
        self.batches, loader = build_loader(s, self.it)
        # `self.it` is read when loading fails: the iteration reached
        self.stream = failures.batches(loader, lambda e: self.guard.stop_on_data_error(e, self.it))
        stop = self.it >= self.stop_at or self.interrupt.requested
        while not stop:
            stop = self.run_step()
        return self.finish()

    def run_step(self) -> bool:
        """One iteration -- ``train.accumulate_steps`` micro-batches forward and backward, one optimiser
        step -- then the hooks. Returns whether the run stops here."""
        s, accum = self.s, self.s.accum
        epoch = self.it // s.iters_per_epoch
        for micro in range(accum):
            inputs, labels = self.next_batch()
            if micro == 0:
                self.undo.take()  # BN buffers and RNG states: a failed step is undone
                s.opt.zero_grad(set_to_none=True)
            inputs, keep = s.dropout(inputs, self.it, micro)
            extra = {} if keep is None else {"keep": keep}
            last_micro = micro == accum - 1
            # DDP all-reduces the gradients on the step's last micro-batch only
            with s.net.no_sync() if s.dist.distributed and not last_micro else nullcontext():
                with autocast(s.device, s.tcfg.amp):
                    # through the (DDP) wrapper's forward, so gradient all-reduce hooks are armed
                    out = s.net(inputs, labels=labels, generator=s.sgm_gen, **extra)
                s.scaler.scale(out.loss / accum if accum > 1 else out.loss).backward()
            now_terms, now_bad = out.as_dict(), ~torch.isfinite(out.loss.detach())
            if micro == 0:
                terms, loss_bad = now_terms, now_bad
            else:
                terms = {k: terms[k] + v for k, v in now_terms.items()}
                loss_bad = loss_bad | now_bad
        if accum > 1:  # the logged terms: the mean over the step's micro-batches
            terms = {k: v / accum for k, v in terms.items()}
        norm = _grad_norm(s.model, s.opt, s.scaler, s.tcfg.grad_clip)
        # One host sync per step, on purpose: a non-finite loss or gradient norm must be caught
        # *before* the optimizer step, so that the weights and AdamW's moments stay finite and `last`
        # can hold the state from before the failure. Under DDP the verdict is agreed across ranks
        # (one all-reduce), so all stop together.
        bad = loss_bad if norm is None else loss_bad | ~torch.isfinite(norm)
        if agree_any(bad):
            self.guard.diverged(self.it, epoch, terms, bool(loss_bad), norm)
        self.undo.clear()
        s.scaler.step(s.opt)
        s.scaler.update()
        s.sched.step()
        self.it += 1
        return self.after_step(epoch, terms)

    def after_step(self, epoch: int, terms: dict[str, torch.Tensor]) -> bool:
        """The hooks, in order: the log (and TensorBoard), validation, the ``last.pt`` checkpoint.
        Returns whether the run stops: the last iteration of this call, or Ctrl-C."""
        it = self.it
        self.log.step(it, epoch, terms, final=it == self.stop_at)
        if self.validator.due(it):
            with self.log.untimed():
                self.validator.run(it)
        stop = it >= self.stop_at or self.interrupt.requested
        if it % self.s.ckpt_interval == 0 or stop:
            self.checkpoints.save("last.pt", it)
        return stop

    def next_batch(self) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The next micro-batch, on the device (the time spent waiting for it is logged)."""
        start = time.perf_counter()
        inputs, labels = next(self.stream)
        self.log.wait += time.perf_counter() - start
        device = self.s.device
        return [x.to(device, non_blocking=True) for x in inputs], labels.to(device, non_blocking=True)

    def finish(self) -> TrainResult:
        """The run ended as planned (or by Ctrl-C): ``train_summary.json``, and the result."""
        s = self.s
        self.stream.close()  # the loader's workers stop
        self.log.bar.close()
        self.log.close()
        summary = {
            "iterations": self.it,
            "max_iters": s.max_iters,
            "best_mIoU": self.best,
            "world_size": s.dist.world_size,
            **s.batch_record,
            "modality_dropout": dataclasses.asdict(s.tcfg.modality_dropout),
            "replicas_identical": _replicas_identical(s.model) if s.dist.distributed else True,
        }
        if s.main:
            (s.work / "train_summary.json").write_text(json.dumps(summary, indent=2))
        barrier()
        return TrainResult(
            s.work, self.it, self.best, self.last_metrics, interrupted=self.interrupt.requested
        )

    def close(self) -> None:
        """Whatever the run's end: restore the Ctrl-C handler, stop the loader, close the log files."""
        if self.interrupt is not None:
            self.interrupt.restore()
        if self.stream is not None:
            self.stream.close()
        self.log.close()


def _grad_norm(model: torch.nn.Module, opt, scaler, grad_clip: float) -> torch.Tensor | None:
    """The gradients' total L2 norm as a tensor (no host sync), after clipping them to ``grad_clip``
    when it is > 0. None under a GradScaler: its step skips on inf/NaN gradients and lowers the scale,
    which is not a failure.

    Why the L2 norm and not only a NaN/Inf scan: it is infinite as soon as squared gradients overflow,
    and AdamW accumulates exactly those squares. A finite gradient of 1e22 makes the second moment
    infinite, and a few steps later the weights NaN (seen with ``train.lr=10``)."""
    if grad_clip > 0:
        scaler.unscale_(opt)
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        return None if scaler.is_enabled() else norm
    if scaler.is_enabled():
        return None
    return torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])


def _replicas_identical(model: torch.nn.Module) -> bool:
    """DDP sanity check: do all ranks hold bit-identical parameters? (gathers one checksum per rank)"""
    flat = torch.cat([p.detach().reshape(-1).double() for p in model.parameters()])
    probe = torch.stack(
        [flat.sum(), (flat * torch.arange(flat.numel(), dtype=torch.float64, device=flat.device)).sum()]
    )
    gathered = [torch.empty_like(probe) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(gathered, probe)
    return all(torch.equal(g, gathered[0]) for g in gathered)
