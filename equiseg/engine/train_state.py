"""A training run's state: what a checkpoint holds (:func:`checkpoint_state`), how a resumed run takes it
back (:func:`restore_state`), and how a failed step is undone (:class:`StepUndo`). Why this makes
resume exact: :mod:`equiseg.engine.train`'s docstring.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from equiseg.models.weights import load_state_dict_strict

from .checkpoint import capture_rng_state, load_checkpoint, restore_rng_state
from .run_setup import RESUME_KEYS, TrainSetup


def checkpoint_state(s: TrainSetup, iteration: int, best: float, val_pending: bool = False) -> dict[str, Any]:
    """The checkpoint of the run at ``iteration`` (written between steps only)."""
    return {
        "model": s.model.state_dict(),
        "optimizer": s.opt.state_dict(),
        "scheduler": s.sched.state_dict(),
        "scaler": s.scaler.state_dict() if s.scaler.is_enabled() else {},
        "iter": iteration,
        "epoch": iteration // s.iters_per_epoch,
        "best_miou": best,
        "rng": capture_rng_state(generators=s.generators()),
        "config": s.cfg.to_dict(),
        "model_config": s.model_cfg.to_dict(),
        "meta": s.meta,
        "val_pending": val_pending,  # the validation at `iter` failed: resume runs it first
        "batch": s.batch_record,  # batch per process, accumulation steps, processes, effective batch
    }


def restore_state(s: TrainSetup, ckpt: dict[str, Any] | None, ckpt_path: Path) -> tuple[int, float, bool]:
    """Load the checkpoint at ``ckpt_path`` into the run (``ckpt``: rank 0 loaded and checked it
    already; None on the other ranks, which load it here): weights, optimiser, schedule, grad scaler,
    every RNG state. Returns ``(iteration, best mIoU, validation pending)``."""
    if ckpt is None:  # ranks > 0 (rank 0 loaded and checked it in claim_run_dir)
        ckpt = load_checkpoint(ckpt_path, required_keys=RESUME_KEYS)
    load_state_dict_strict(s.model, ckpt["model"], f"--resume {ckpt_path}")
    s.opt.load_state_dict(ckpt["optimizer"])
    s.sched.load_state_dict(ckpt["scheduler"])
    # A resumed run may change its length (train.max_iters / epochs): the poly decay continues
    # from the current iteration towards the new end; warm-up is a property of the start.
    s.sched.max_iters = s.max_iters
    if ckpt.get("scaler"):
        s.scaler.load_state_dict(ckpt["scaler"])
    it, best = int(ckpt["iter"]), float(ckpt.get("best_miou", -1.0))
    was = (ckpt.get("batch") or {}).get("effective_batch")
    now = s.batch_record["effective_batch"]
    if s.main and was is not None and was != now:
        print(f"resume: the effective batch was {was}, now {now} ({s.dist.world_size} processes)", flush=True)
    rng = ckpt["rng"]
    if isinstance(rng, list):  # one state per rank
        rng = rng[s.dist.rank] if s.dist.rank < len(rng) else rng[0]
    restore_rng_state(rng, generators=s.generators())
    return it, best, bool(ckpt.get("val_pending", False))


class StepUndo:
    """What a step's forward passes change besides the weights -- BN running stats, RNG states (a few
    KB) -- kept while its micro-batches run, so that a step that fails (a data file, a divergence) can
    be undone and ``last.pt`` holds the state between steps."""

    def __init__(self, s: TrainSetup) -> None:
        self.s = s
        self.before: tuple[list[torch.Tensor], dict[str, Any]] | None = None

    @property
    def pending(self) -> bool:
        """A step is in progress (its state from before is kept)."""
        return self.before is not None

    def take(self) -> None:
        self.before = (
            [b.clone() for b in self.s.model.buffers()],
            capture_rng_state(generators=self.s.generators()),
        )

    def clear(self) -> None:
        self.before = None

    def undo(self) -> None:
        """Put the buffers and RNG states back to what they were before the step."""
        buffers, rng = self.before
        with torch.no_grad():
            for b, saved in zip(self.s.model.buffers(), buffers):
                b.copy_(saved)
        restore_rng_state(rng, generators=self.s.generators())
        self.before = None


def non_finite_entry(model: torch.nn.Module, opt: torch.optim.Optimizer) -> str | None:
    """The name of the first model or optimizer tensor holding NaN/Inf; None when all are finite.

    One pass over the state and one host sync: run before each checkpoint write, not every step."""
    names = {id(p): k for k, p in model.named_parameters()}
    named = [(f"model {k}", v) for k, v in model.state_dict().items()]
    for p, entries in opt.state.items():
        owner = names.get(id(p), "?")
        named += [(f"optimizer {k} of {owner}", v) for k, v in entries.items() if torch.is_tensor(v)]
    named = [(n, t) for n, t in named if t.is_floating_point() or t.is_complex()]
    if not named:
        return None
    ok = torch.stack([torch.isfinite(t).all() for _, t in named])
    if bool(ok.all()):
        return None
    return named[int((~ok).nonzero()[0, 0])][0]
