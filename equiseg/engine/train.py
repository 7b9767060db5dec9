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
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from tqdm import tqdm

from equiseg.config import ExperimentConfig, from_dict, save_yaml
from equiseg.models import build_model
from equiseg.models.weights import load_state_dict_strict

from .builders import (
    EpochBatches,
    ResumableSampler,
    build_train_dataset,
    build_val_dataset,
    collate,
    dataset_meta,
)
from .checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from .device import resolve_device
from .distributed import (
    agree_any,
    all_gather_objects,
    barrier,
    broadcast_error,
    cleanup,
    init_distributed,
    maybe_convert_sync_bn,
)
from .evaluate import evaluate, write_metrics
from .modality_dropout import ModalityDropout
from .optim import WarmupPolyLR, build_optimizer
from .precision import autocast, canonical_precision, grad_scaler_enabled, warn_precision
from .rundir import (
    RunDirError,
    RunLock,
    check_resume_config,
    holds_run,
    move_run_aside,
    remove_partial_writes,
    truncate_log,
)
from .seeding import seed_everything
from .tb import TensorBoardLog, panel_indices, require_tensorboard


class NonFiniteLossError(RuntimeError):
    """Training diverged: a loss term or the gradient norm became NaN/Inf, or the state to be saved
    holds NaN/Inf. The message says which iteration ``last.pt`` holds (never a non-finite state)."""


class DataFileError(ValueError):
    """A data file failed mid-run (training loader or validation). ``last.pt`` was saved at the
    iteration reached first; the message names the file: fix it, then continue with ``--resume``.
    A ``ValueError`` like the data layer's own file errors, so callers and the CLI treat it alike."""


@dataclass
class TrainResult:
    """What :func:`train` returns. ``interrupted``: stopped by Ctrl-C (``last.pt`` holds iteration
    ``iterations``; continue with ``resume=True``)."""

    work_dir: Path
    iterations: int
    best_miou: float
    last_metrics: dict[str, Any] | None
    interrupted: bool = False


def find_checkpoint(work_dir: Path, resume: str | bool | None) -> Path | None:
    if resume in (None, False):
        return None
    if resume is True or resume == "":
        path = work_dir / "last.pt"
        if not path.exists():
            raise FileNotFoundError(f"--resume: no checkpoint to resume from at {path}")
        return path
    path = Path(resume)
    if not path.exists():
        raise FileNotFoundError(f"--resume: checkpoint not found: {path}")
    return path


_RESUME_KEYS = ("model", "optimizer", "scheduler", "iter", "rng", "config", "model_config")


def _comparable(cfg: dict[str, Any], num_classes: int) -> dict[str, Any]:
    """A config dict normalised for comparison: coerced through the schema, and the model section as
    the fully resolved network (so ``lr: 1e-3`` equals ``0.001`` and a default spelled out equals the
    default left out, and ``train.amp: none`` equals ``fp32``)."""
    exp = from_dict(ExperimentConfig, cfg)
    out = exp.to_dict()
    out["model"] = {
        "name": exp.model["name"],
        "pretrained": exp.model.get("pretrained"),
        "pretrained_strict": exp.model.get("pretrained_strict", True),
        **exp.model_config(num_classes).to_dict(),
    }
    out["train"]["amp"] = canonical_precision(out["train"]["amp"])  # none and fp32 are one setting
    return out


def _check_run(
    cfg: ExperimentConfig, work: Path, resume: str | bool | None, overwrite: bool
) -> tuple[list[str], dict[str, Any] | None]:
    """Rank 0's start-up checks on the run folder (see :mod:`equiseg.engine.rundir`); the lock must be
    held. Reads only; returns notes to print and the checkpoint to resume from (loaded, or None).
    :func:`_prepare_run` makes the changes once the data, the model and the checkpoint have loaded."""
    notes: list[str] = []
    ckpt = None
    ckpt_path = find_checkpoint(work, resume)
    if ckpt_path is None:
        present = holds_run(work)
        if present and not overwrite:
            raise RunDirError(
                f"{work} already holds a run ({', '.join(present)}); continue it with --resume, or start "
                f"fresh in a new --work-dir, or pass --overwrite to move the old run aside "
                f"(to {work.name}.replaced-<time>/; nothing is deleted)"
            )
    else:
        if Path(ckpt_path).resolve().parent != work.resolve() and holds_run(work):
            raise RunDirError(
                f"--resume {ckpt_path}: {work} holds another run ({', '.join(holds_run(work))}); "
                "resume into the checkpoint's own folder or an empty --work-dir"
            )
        ckpt = load_checkpoint(ckpt_path, required_keys=_RESUME_KEYS)
        k = int(ckpt["model_config"]["num_classes"])
        try:
            saved = _comparable(ckpt["config"], k)
        except ValueError as e:
            raise RunDirError(
                f"--resume {ckpt_path}: the checkpoint's config does not fit this version of equiseg ({e})"
            ) from None
        changed = check_resume_config(_comparable(cfg.to_dict(), k), saved, ckpt_path)
        changed = [c for c in changed if c != "work_dir" and not c.startswith("model.pretrained")]
        if changed:
            notes.append(f"resume: changed {', '.join(changed)} (allowed mid-run)")
    return notes, ckpt


def _prepare_run(cfg: ExperimentConfig, work: Path, resume_iter: int | None, overwrite: bool) -> list[str]:
    """Rank 0, after every check has passed: move an old run aside (``overwrite``), remove leftovers of
    killed writes, drop log records after the resumed iteration, write ``config.yaml``. Returns notes."""
    notes: list[str] = []
    if resume_iter is None and overwrite and holds_run(work):
        notes.append(f"moved the previous run in {work} to {move_run_aside(work)}")
    n, size = remove_partial_writes(work)
    if n:
        notes.append(f"removed {n} partial checkpoint file(s) ({size / 2**20:.1f} MB) left by killed writes")
    if resume_iter is not None:
        dropped = truncate_log(work / "log.jsonl", resume_iter)
        if dropped:
            notes.append(f"resume: dropped {dropped} log record(s) written after iteration {resume_iter}")
    save_yaml(cfg, work / "config.yaml")
    return notes


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
    tcfg, dcfg = cfg.train, cfg.data
    dist = init_distributed(resolve_device(tcfg.device))
    device = dist.device
    work = Path(work_dir or cfg.work_dir)
    main = dist.is_main
    interrupt = None
    net = None
    tb = None
    lock = RunLock(work)
    existed, started = work.exists(), False
    try:
        if resume not in (None, False) and overwrite:
            raise RunDirError("--resume and --overwrite exclude each other: continue the run, or replace it")
        # Rank 0 checks the folder (under its lock) before anything is written; every rank follows.
        error: Exception | None = None
        ckpt = None
        if main:
            try:
                if tcfg.tensorboard:
                    require_tensorboard()  # before the folder is touched
                lock.acquire()
                notes, ckpt = _check_run(cfg, work, resume, overwrite)
                for note in notes:
                    print(note, flush=True)
            except Exception as e:  # re-raised below, after the other ranks have heard of it
                error = e
        verdict = broadcast_error(None if error is None else str(error))
        if error is not None:
            raise error
        if verdict is not None:
            raise RunDirError(verdict)
        resuming = resume not in (None, False)
        warn_precision(device, tcfg.amp, "train.amp", stacklevel=2)  # ignored here, or slow
        seed_everything(tcfg.seed)  # same on every rank: identical initial weights

        train_set = build_train_dataset(cfg)
        val_set = build_val_dataset(dcfg)
        meta = dataset_meta(train_set.base)
        model_cfg = cfg.model_config(train_set.base.num_classes)
        # On resume the weights come from the checkpoint: the pretrained file is neither read nor needed.
        model = build_model(
            model_cfg,
            pretrained=None if resuming else cfg.pretrained,
            pretrained_strict=cfg.pretrained_strict,
        )
        if main and getattr(model, "pretrained_report", None) is not None:
            print(model.pretrained_report.summary(), flush=True)
        model = model.to(device)
        model = maybe_convert_sync_bn(model, device)
        dropout = ModalityDropout(tcfg.modality_dropout, tcfg.seed, dist.rank, model)
        net = (
            DDP(
                model,
                device_ids=[device.index] if device.type == "cuda" else None,
                # absent (None) inputs leave parts of the network out of some steps (a branch, the
                # fusion with one modality left): DDP must look for the unused parameters then
                find_unused_parameters=dropout.enabled and dropout.fill == "absent",
            )
            if dist.distributed
            else model
        )

        bs, accum = dcfg.batch_size, tcfg.accumulate_steps
        batch_record = {
            "batch_size": bs,
            "accumulate_steps": accum,
            "world_size": dist.world_size,
            "effective_batch": bs * accum * dist.world_size,
        }
        sampler = ResumableSampler(train_set, num_replicas=dist.world_size, rank=dist.rank, seed=tcfg.seed)
        iters_per_epoch = len(sampler) // (bs * accum)  # optimiser steps
        if iters_per_epoch == 0:
            step = f"{bs}" if accum == 1 else f"{bs} × {accum} accumulation steps"
            raise ValueError(
                f"training split has {len(train_set)} samples: fewer than one batch of {step} per process "
                f"({dist.world_size} processes)"
            )
        max_iters = tcfg.max_iters if tcfg.max_iters > 0 else tcfg.epochs * iters_per_epoch
        warmup = tcfg.warmup_iters if tcfg.warmup_iters >= 0 else round(tcfg.warmup_epochs * iters_per_epoch)
        warmup = min(warmup, max_iters - 1) if max_iters > 1 else 0
        val_interval = tcfg.val_interval if tcfg.val_interval > 0 else iters_per_epoch
        ckpt_interval = tcfg.checkpoint_interval if tcfg.checkpoint_interval > 0 else val_interval

        opt = build_optimizer(model, lr=tcfg.lr, betas=tcfg.betas, weight_decay=tcfg.weight_decay)
        sched = WarmupPolyLR(
            opt, max_iters=max_iters, warmup_iters=warmup, warmup_ratio=tcfg.warmup_ratio, power=tcfg.power
        )
        scaler = torch.amp.GradScaler("cuda", enabled=grad_scaler_enabled(device, tcfg.amp))
        sgm_gen = torch.Generator().manual_seed(tcfg.seed + dist.rank)
        loader_gen = torch.Generator().manual_seed(tcfg.seed)

        it, best, last_metrics, val_pending = 0, -1.0, None, False
        ckpt_path = find_checkpoint(work, resume)
        if ckpt_path is not None:
            if ckpt is None:  # ranks > 0 (rank 0 loaded and checked it above)
                ckpt = load_checkpoint(ckpt_path, required_keys=_RESUME_KEYS)
            load_state_dict_strict(model, ckpt["model"], f"--resume {ckpt_path}")
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
            # A resumed run may change its length (train.max_iters / epochs): the poly decay continues
            # from the current iteration towards the new end; warm-up is a property of the start.
            sched.max_iters = max_iters
            if ckpt.get("scaler"):
                scaler.load_state_dict(ckpt["scaler"])
            it, best = int(ckpt["iter"]), float(ckpt.get("best_miou", -1.0))
            was = (ckpt.get("batch") or {}).get("effective_batch")
            if main and was is not None and was != batch_record["effective_batch"]:
                print(
                    f"resume: the effective batch was {was}, now {batch_record['effective_batch']} "
                    f"({dist.world_size} processes)",
                    flush=True,
                )
            rng = ckpt["rng"]
            if isinstance(rng, list):  # one state per rank
                rng = rng[dist.rank] if dist.rank < len(rng) else rng[0]
            restore_rng_state(rng, generators={"sgm": sgm_gen, "loader": loader_gen})
            val_pending = bool(ckpt.get("val_pending", False))
            ckpt = None  # its tensors were copied into the model and optimizer: free them
        # Data, model, weights and checkpoint all loaded: only now does the run folder change.
        if main:
            for note in _prepare_run(cfg, work, it if ckpt_path is not None else None, overwrite):
                print(note, flush=True)
            started = True

        def state(iteration: int, val_pending: bool = False) -> dict[str, Any]:
            return {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "scaler": scaler.state_dict() if scaler.is_enabled() else {},
                "iter": iteration,
                "epoch": iteration // iters_per_epoch,
                "best_miou": best,
                "rng": capture_rng_state(generators={"sgm": sgm_gen, "loader": loader_gen}),
                "config": cfg.to_dict(),
                "model_config": model_cfg.to_dict(),
                "meta": meta,
                "val_pending": val_pending,  # the validation at `iter` failed: resume runs it first
                "batch": batch_record,  # batch per process, accumulation steps, processes, effective batch
            }

        # the iteration work/last.pt holds (None: not written by this run nor the one it continues)
        own_last = ckpt_path is not None and Path(ckpt_path).resolve() == (work / "last.pt").resolve()
        held: dict[str, int | None] = {"last": it if own_last else None}

        def last_held() -> str:
            path = work / "last.pt"
            if held["last"] is not None:
                return f"{path} holds iteration {held['last']}"
            return f"{path} was left unchanged" if path.exists() else f"{path} was not written"

        def try_save(
            name: str, iteration: int, *, val_pending: bool = False, agree: bool = True
        ) -> str | None:
            """Write ``name`` at ``iteration`` unless the state holds NaN/Inf: returns the first
            non-finite entry (nothing written) or None. ``agree``: every rank is here, so they decide
            together (one all-reduce); False on paths that only some ranks may reach."""
            bad = _non_finite_entry(model, opt)
            flag = torch.tensor(float(bad is not None), device=device)
            if agree_any(flag) if agree else bad is not None:
                return bad or "another rank's state"
            if main:
                save_checkpoint(work / name, state(iteration, val_pending))
            if name == "last.pt":
                held["last"] = iteration
            return None

        def save(name: str, iteration: int) -> None:
            bad = try_save(name, iteration)
            if bad is not None:
                raise NonFiniteLossError(
                    f"the state at iteration {iteration} is not finite ({bad}), so {work / name} was not "
                    f"written; {last_held()}"
                )

        def stop_on_data_error(
            error: BaseException, iteration: int, *, val_pending: bool = False
        ) -> NoReturn:
            """Save ``last.pt`` at ``iteration`` (if finite and not there already), then raise
            :class:`DataFileError` naming the file. No collective: under DDP one rank's file fails.
            Inside an accumulated step, what its earlier micro-batches changed is undone first."""
            if partial["before"] is not None:
                rollback(partial["before"])
            line = _error_line(error)
            if held["last"] == iteration or not main:
                kept = last_held()
            else:
                bad = try_save("last.pt", iteration, val_pending=val_pending, agree=False)
                kept = (
                    f"saved iteration {iteration} to {work / 'last.pt'}"
                    if bad is None
                    else f"{last_held()} (the state at iteration {iteration} is not finite: {bad})"
                )
            fix = _named_file(error, line) or "the cause above"
            raise DataFileError(f"{line}; {kept}; fix {fix}, then continue with --resume") from error

        def rollback(before) -> None:
            """Undo what a step's forward passes changed besides the weights: buffers, RNG states."""
            with torch.no_grad():
                for b, saved in zip(model.buffers(), before[0]):
                    b.copy_(saved)
            restore_rng_state(before[1], generators={"sgm": sgm_gen, "loader": loader_gen})
            partial["before"] = None

        # the state from before the step in progress while its micro-batches run (None between steps)
        partial: dict[str, Any] = {"before": None}

        def diverged(
            iteration: int, epoch: int, terms: dict[str, torch.Tensor], loss_bad: bool, norm, before
        ) -> NoReturn:
            """Undo what the failed step's forward changed (buffers, RNG), save ``last.pt`` if that
            state is finite, and raise :class:`NonFiniteLossError` naming the iteration, the loss
            terms (the mean over the step's micro-batches) and the samples (under DDP: of the ranks
            whose loss failed, else of all ranks)."""
            rollback(before)
            bad = try_save("last.pt", iteration)
            kept = (
                f"{last_held()}, the state from before this iteration"
                if bad is None
                else f"{last_held()}; the state before this iteration is not finite either ({bad})"
            )
            here = {
                "rank": dist.rank,
                "finite": not loss_bad,
                "terms": {k: float(v) for k, v in terms.items()},
                "samples": [_sample_name(train_set.base, i) for i in batches.indices(iteration)],
            }
            gathered = all_gather_objects(here)
            reports = [r for r in gathered if not r["finite"]] or gathered
            where = "; ".join(
                (f"rank {r['rank']}: " if dist.distributed else "")
                + f"{r['terms']}, samples {', '.join(r['samples'])}"
                for r in reports
            )
            what = "loss" if any(not r["finite"] for r in gathered) else f"gradient norm ({float(norm)})"
            raise NonFiniteLossError(
                f"non-finite {what} at iteration {iteration} (epoch {epoch}): {where}; {kept}"
            )

        def validate(iteration: int) -> None:
            """Validate at ``iteration``: the log, TensorBoard, ``best.pt``, ``metrics.json``. A data
            file error saves ``last.pt`` marked to validate again on resume, then stops."""
            nonlocal best, last_metrics
            if dist.distributed:  # BN running stats drift apart per rank; evaluate rank 0's
                _broadcast_buffers(model)
            try:
                metrics = evaluate(model, val_set, cfg.eval, device=device, progress=False)
            except (OSError, ValueError) as e:
                stop_on_data_error(e, iteration, val_pending=True)
            metrics["split"] = dcfg.val_split  # metrics.json / .md say which split was scored
            net.train()
            last_metrics = metrics
            if main:
                val = {k: metrics[k] for k in ("mIoU", "aAcc", "mAcc")}
                log.write(json.dumps({"iter": iteration, "val": val}) + "\n")
                log.flush()
                bar.write(f"iter {iteration}: val mIoU {metrics['mIoU']:.2f}  aAcc {metrics['aAcc']:.2f}")
                if tb is not None:
                    tb.log_val(iteration, metrics)
                    tb.log_panel(iteration, model, val_set, tb_rows, cfg.eval, device)
                    tb.flush()
            if metrics["mIoU"] > best:
                best = metrics["mIoU"]
                save("best.pt", iteration)
            write_metrics(metrics, work, title=f"Validation at iteration {iteration}")

        log = open(work / "log.jsonl", "a") if main else None
        if main:
            md = tcfg.modality_dropout
            run_rec = {**batch_record, "modality_dropout": {"mode": md.mode, "p": md.p, "fill": md.fill}}
            log.write(json.dumps({"iter": it, "run": run_rec}) + "\n")
            log.flush()
            if batch_record["effective_batch"] != bs:  # accumulation or several processes
                mult = f" × {accum} accumulation steps" if accum > 1 else ""
                print(
                    f"effective batch {batch_record['effective_batch']} = {bs} per process{mult} × "
                    f"{dist.world_size} process{'es' if dist.world_size > 1 else ''}",
                    flush=True,
                )
        if main and tcfg.tensorboard:
            # on resume, hide what the interrupted run logged after its checkpoint (as log.jsonl does):
            # events of steps > it; those of step `it` itself were logged before the checkpoint
            tb = TensorBoardLog(work / "tensorboard", purge_step=it + 1 if ckpt_path is not None else None)
            tb_rows = panel_indices(val_set)
        bar = tqdm(
            total=max_iters, initial=it, desc="train", disable=not (progress and main), dynamic_ncols=True
        )
        stop_at = max_iters if stop_after is None else min(max_iters, it + stop_after)
        net.train()
        interrupt = _GracefulInterrupt(bar, enabled=not dist.distributed)
        if val_pending:  # the run stopped when its validation at `it` failed: validate now
            if main:
                print(
                    f"resume: the validation at iteration {it} did not finish; running it first", flush=True
                )
            validate(it)
            save("last.pt", it)
        t_last, n_last, wait = time.perf_counter(), 0, 0.0
        # One loader for the whole run (its workers start once); batch k of the stream is iteration
        # it + k, so epoch and position follow from the iteration counter.
        batches = EpochBatches(sampler, bs, start=it, accumulate=accum)
        loader = DataLoader(
            train_set,
            batch_sampler=batches,
            num_workers=dcfg.num_workers,
            collate_fn=collate,
            pin_memory=device.type == "cuda",
            generator=loader_gen,
        )
        t_data = time.perf_counter()
        if it < stop_at and not interrupt.requested:
            # `it` is read when loading fails (late binding on purpose): the iteration reached
            micro = 0  # micro-batch of the step in progress
            for inputs, labels in _batches(loader, lambda e: stop_on_data_error(e, it)):  # noqa: B023
                epoch = it // iters_per_epoch
                wait += time.perf_counter() - t_data
                inputs = [x.to(device, non_blocking=True) for x in inputs]
                labels = labels.to(device, non_blocking=True)
                if micro == 0:
                    # Forward passes update BN running stats and draw random numbers; keep what the
                    # step changes besides the weights (a few KB) so a failed step can be undone.
                    partial["before"] = (
                        [b.clone() for b in model.buffers()],
                        capture_rng_state(generators={"sgm": sgm_gen, "loader": loader_gen}),
                    )
                    opt.zero_grad(set_to_none=True)
                inputs, keep = dropout(inputs, it, micro)
                extra = {} if keep is None else {"keep": keep}
                last_micro = micro == accum - 1
                # DDP all-reduces the gradients on the step's last micro-batch only
                with net.no_sync() if dist.distributed and not last_micro else nullcontext():
                    with autocast(device, tcfg.amp):
                        # through the (DDP) wrapper's forward, so gradient all-reduce hooks are armed
                        out = net(inputs, labels=labels, generator=sgm_gen, **extra)
                    scaler.scale(out.loss / accum if accum > 1 else out.loss).backward()
                now_terms, now_bad = out.as_dict(), ~torch.isfinite(out.loss.detach())
                if micro == 0:
                    terms, loss_bad = now_terms, now_bad
                else:
                    terms = {k: terms[k] + v for k, v in now_terms.items()}
                    loss_bad = loss_bad | now_bad
                if not last_micro:
                    micro += 1
                    t_data = time.perf_counter()
                    continue
                micro = 0
                if accum > 1:  # the logged terms: the mean over the step's micro-batches
                    terms = {k: v / accum for k, v in terms.items()}
                norm = _grad_norm(model, opt, scaler, tcfg.grad_clip)
                # One host sync per step, on purpose: a non-finite loss or gradient norm must be
                # caught *before* the optimizer step, so that the weights and AdamW's moments stay
                # finite and `last` can hold the state from before the failure. Under DDP the verdict
                # is agreed across ranks (one all-reduce), so all stop together.
                bad = loss_bad if norm is None else loss_bad | ~torch.isfinite(norm)
                if agree_any(bad):
                    diverged(it, epoch, terms, bool(loss_bad), norm, partial["before"])
                partial["before"] = None
                scaler.step(opt)
                scaler.update()
                sched.step()
                it += 1
                bar.update(1)
                if main and (it % tcfg.log_interval == 0 or it == stop_at):
                    now = time.perf_counter()
                    # throughput over the last interval (None for the first: it includes start-up)
                    ips = (
                        (it - n_last) * batch_record["effective_batch"] / max(now - t_last, 1e-9)
                        if n_last
                        else None
                    )
                    rec = {
                        "iter": it,
                        "epoch": epoch,
                        "lr": opt.param_groups[0]["lr"],
                        **{k: round(float(v), 6) for k, v in terms.items()},
                        "img_per_s": None if ips is None else round(ips, 3),
                        "data_wait_s": round(wait, 3),
                    }
                    log.write(json.dumps(rec) + "\n")
                    log.flush()
                    if tb is not None:
                        tb.log_train(it, terms, lr=rec["lr"], img_per_s=ips)
                    bar.set_postfix(
                        loss=f"{rec['loss']:.3f}",
                        lr=f"{rec['lr']:.2e}",
                        ips="-" if ips is None else f"{ips:.1f}",
                    )
                    t_last, n_last, wait = now, it, 0.0
                if it % val_interval == 0 or it == max_iters:
                    t_val = time.perf_counter()
                    validate(it)
                    t_last += time.perf_counter() - t_val  # img/s measures training, not validation
                if it % ckpt_interval == 0 or it == stop_at or interrupt.requested:
                    save("last.pt", it)
                if it >= stop_at or interrupt.requested:
                    break
                t_data = time.perf_counter()
        bar.close()
        if log:
            log.close()
        summary = {
            "iterations": it,
            "max_iters": max_iters,
            "best_mIoU": best,
            "world_size": dist.world_size,
            **batch_record,
            "modality_dropout": dataclasses.asdict(tcfg.modality_dropout),
            "replicas_identical": _replicas_identical(model) if dist.distributed else True,
        }
        if main:
            (work / "train_summary.json").write_text(json.dumps(summary, indent=2))
        barrier()
        return TrainResult(work, it, best, last_metrics, interrupted=interrupt.requested)
    finally:
        if interrupt is not None:
            interrupt.restore()
        if tb is not None:
            tb.close()  # also after a failed run: its events up to the failure stay readable
        lock.release()
        if main and not started and not existed and work.is_dir() and not any(work.iterdir()):
            work.rmdir()  # a run that failed to start leaves no trace
        # Release the DDP wrapper (its reducer holds the process group) before the group is destroyed;
        # a wrapper outliving its group -- e.g. kept alive by the traceback of a NonFiniteLossError --
        # can abort the process at exit ("terminate called without an active exception").
        net = None  # noqa: F841
        cleanup()


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


def _non_finite_entry(model: torch.nn.Module, opt: torch.optim.Optimizer) -> str | None:
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


def _batches(loader: DataLoader, on_error):
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


def _error_line(exc: BaseException) -> str:
    """An error's message on one line; for one re-raised from a DataLoader worker, the original
    message without torch's wrapper and the worker's traceback."""
    text = str(exc) or type(exc).__name__
    if "in DataLoader worker process" in text and "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        head, sep, rest = last.partition(": ")
        text = rest if sep and head.isidentifier() else last
    return " ".join(text.split())


_LEADING_PATH = re.compile(r"^(.+?)(?:: | does not exist| is a directory)")


def _named_file(exc: BaseException, line: str) -> str | None:
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


def _sample_name(ds: Any, index: int) -> str:
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


class _GracefulInterrupt:
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


def _broadcast_buffers(model: torch.nn.Module) -> None:
    for b in model.buffers():
        torch.distributed.broadcast(b, src=0)


def _replicas_identical(model: torch.nn.Module) -> bool:
    """DDP sanity check: do all ranks hold bit-identical parameters? (gathers one checksum per rank)"""
    flat = torch.cat([p.detach().reshape(-1).double() for p in model.parameters()])
    probe = torch.stack(
        [flat.sum(), (flat * torch.arange(flat.numel(), dtype=torch.float64, device=flat.device)).sum()]
    )
    gathered = [torch.empty_like(probe) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(gathered, probe)
    return all(torch.equal(g, gathered[0]) for g in gathered)
