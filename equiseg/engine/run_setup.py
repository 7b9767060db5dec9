"""Setting a training run up (:func:`equiseg.engine.train.train`, docs/design.md §3): the run folder
(its lock, the checks against a run already there, the changes once everything has loaded), then the
data, the model, the optimiser, the schedule and the generators, gathered in a :class:`TrainSetup`.

The order of construction is part of what makes a run repeat exactly: the global seed is set, then the
data sets and the model are built (the model's initial weights draw from torch's global generator),
then the optimiser and the private generators of the SGM pairing and the DataLoader.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from equiseg.config import ExperimentConfig, from_dict, save_yaml
from equiseg.models import build_model

from .builders import (
    EpochBatches,
    ResumableSampler,
    build_train_dataset,
    build_val_dataset,
    collate,
    dataset_meta,
)
from .checkpoint import load_checkpoint
from .distributed import DistInfo, broadcast_error, maybe_convert_sync_bn
from .modality_dropout import ModalityDropout
from .optim import WarmupPolyLR, build_optimizer
from .precision import canonical_precision, grad_scaler_enabled, warn_precision
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
from .tb import require_tensorboard

RESUME_KEYS = ("model", "optimizer", "scheduler", "iter", "rng", "config", "model_config")


# ---------------------------------------------------------------------------------------- the run folder


def find_checkpoint(work_dir: Path, resume: str | bool | None) -> Path | None:
    """The checkpoint ``resume`` names: None for no resume, ``work_dir/last.pt`` for ``True`` or ``""``,
    else the path given. Raises FileNotFoundError when it does not exist."""
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


def comparable(cfg: dict[str, Any], num_classes: int) -> dict[str, Any]:
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


def check_run(
    cfg: ExperimentConfig, work: Path, resume: str | bool | None, overwrite: bool
) -> tuple[list[str], dict[str, Any] | None]:
    """Rank 0's start-up checks on the run folder (see :mod:`equiseg.engine.rundir`); the lock must be
    held. Reads only; returns notes to print and the checkpoint to resume from (loaded, or None).
    :func:`prepare_run` makes the changes once the data, the model and the checkpoint have loaded."""
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
        ckpt = load_checkpoint(ckpt_path, required_keys=RESUME_KEYS)
        k = int(ckpt["model_config"]["num_classes"])
        try:
            saved = comparable(ckpt["config"], k)
        except ValueError as e:
            raise RunDirError(
                f"--resume {ckpt_path}: the checkpoint's config does not fit this version of equiseg ({e})"
            ) from None
        changed = check_resume_config(comparable(cfg.to_dict(), k), saved, ckpt_path)
        changed = [c for c in changed if c != "work_dir" and not c.startswith("model.pretrained")]
        if changed:
            notes.append(f"resume: changed {', '.join(changed)} (allowed mid-run)")
    return notes, ckpt


def claim_run_dir(
    cfg: ExperimentConfig, work: Path, resume: str | bool | None, overwrite: bool, lock: RunLock, main: bool
) -> dict[str, Any] | None:
    """Rank 0 takes the folder's lock and checks it (:func:`check_run`) before anything is written;
    every rank hears the verdict and raises the same error. Returns rank 0's loaded checkpoint when
    resuming (None on the other ranks, and when not resuming)."""
    if resume not in (None, False) and overwrite:
        raise RunDirError("--resume and --overwrite exclude each other: continue the run, or replace it")
    error: Exception | None = None
    ckpt = None
    if main:
        try:
            if cfg.train.tensorboard:
                require_tensorboard()  # before the folder is touched
            lock.acquire()
            notes, ckpt = check_run(cfg, work, resume, overwrite)
            for note in notes:
                print(note, flush=True)
        except Exception as e:  # re-raised below, after the other ranks have heard of it
            error = e
    verdict = broadcast_error(None if error is None else str(error))
    if error is not None:
        raise error
    if verdict is not None:
        raise RunDirError(verdict)
    return ckpt


def prepare_run(cfg: ExperimentConfig, work: Path, resume_iter: int | None, overwrite: bool) -> list[str]:
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


# ------------------------------------------------------------------------ data, model and optimiser


@dataclass
class TrainSetup:
    """Everything a run is built from, in one place: the config, where it runs, the data, the model
    (``net`` is the DDP wrapper under torchrun, else ``model`` itself), the optimiser and schedule, the
    run's length and intervals (all in optimiser steps), and the private generators."""

    cfg: ExperimentConfig
    dist: DistInfo
    work: Path
    train_set: Any
    val_set: Any
    meta: dict[str, Any]
    model_cfg: Any
    model: torch.nn.Module
    net: torch.nn.Module | None  # set to None at the end of the run (see train()'s finally)
    dropout: ModalityDropout
    batch_record: dict[str, int]  # batch per process, accumulation steps, processes, effective batch
    sampler: ResumableSampler
    iters_per_epoch: int
    max_iters: int
    val_interval: int
    ckpt_interval: int
    opt: torch.optim.Optimizer
    sched: WarmupPolyLR
    scaler: torch.amp.GradScaler
    sgm_gen: torch.Generator
    loader_gen: torch.Generator

    @property
    def tcfg(self):
        return self.cfg.train

    @property
    def device(self) -> torch.device:
        return self.dist.device

    @property
    def main(self) -> bool:
        return self.dist.is_main

    @property
    def accum(self) -> int:
        return self.cfg.train.accumulate_steps

    def generators(self) -> dict[str, torch.Generator]:
        """The run's private generators, as the checkpoint's RNG state names them."""
        return {"sgm": self.sgm_gen, "loader": self.loader_gen}


def build_run(cfg: ExperimentConfig, dist: DistInfo, work: Path, *, resuming: bool) -> TrainSetup:
    """Seed, then build the data sets, the model (with its pretrained weights unless ``resuming``: then
    they come from the checkpoint, and the file is neither read nor needed), the optimiser, the schedule,
    the grad scaler and the generators (same on every rank, so the initial weights are identical)."""
    tcfg, dcfg, device = cfg.train, cfg.data, dist.device
    warn_precision(device, tcfg.amp, "train.amp", stacklevel=3)  # ignored here, or slow
    seed_everything(tcfg.seed)  # same on every rank: identical initial weights

    train_set = build_train_dataset(cfg)
    val_set = build_val_dataset(dcfg)
    meta = dataset_meta(train_set.base)
    model_cfg = cfg.model_config(train_set.base.num_classes)
    model = build_model(
        model_cfg,
        pretrained=None if resuming else cfg.pretrained,
        pretrained_strict=cfg.pretrained_strict,
    )
    if dist.is_main and getattr(model, "pretrained_report", None) is not None:
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
    return TrainSetup(
        cfg=cfg,
        dist=dist,
        work=work,
        train_set=train_set,
        val_set=val_set,
        meta=meta,
        model_cfg=model_cfg,
        model=model,
        net=net,
        dropout=dropout,
        batch_record=batch_record,
        sampler=sampler,
        iters_per_epoch=iters_per_epoch,
        max_iters=max_iters,
        val_interval=val_interval,
        ckpt_interval=ckpt_interval,
        opt=opt,
        sched=sched,
        scaler=scaler,
        sgm_gen=sgm_gen,
        loader_gen=loader_gen,
    )


def build_loader(s: TrainSetup, start: int) -> tuple[EpochBatches, DataLoader]:
    """One loader for the whole run (its workers start once); batch k of the stream is iteration
    ``start + k`` (k-th micro-batch under accumulation), so epoch and position follow from the
    iteration counter. Returns the batch sampler too (it names a step's samples in error messages)."""
    batches = EpochBatches(s.sampler, s.cfg.data.batch_size, start=start, accumulate=s.accum)
    loader = DataLoader(
        s.train_set,
        batch_sampler=batches,
        num_workers=s.cfg.data.num_workers,
        collate_fn=collate,
        pin_memory=s.device.type == "cuda",
        generator=s.loader_gen,
    )
    return batches, loader
