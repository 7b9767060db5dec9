"""Build data sets, transforms, loaders and models from an :class:`~equiseg.config.ExperimentConfig`.

Training samples are augmented with a generator seeded by ``(seed, epoch, index)`` rather than a
stream shared by a worker, so a sample's crop does not depend on which worker loaded it or on where a
run was resumed: that is what makes resume bit-exact (see :mod:`equiseg.engine.train`).

What a data set is without its files (its spec, the metadata a checkpoint carries) is in
:mod:`equiseg.data.meta`; ``dataset_meta``, ``spec_meta`` and ``config_meta`` are importable from here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler

from equiseg.config import DataConfig, ExperimentConfig
from equiseg.data import MUSES, DeLiVER, FolderDataset, build_train_transform, build_val_transform
from equiseg.data.meta import config_meta, dataset_meta, dataset_spec, spec_meta

__all__ = [
    "EpochBatches",
    "ResumableSampler",
    "SeededTrainSet",
    "build_dataset",
    "build_train_dataset",
    "build_val_dataset",
    "collate",
    "shard_indices",
    # the data sets' metadata, defined in equiseg/data/meta.py
    "config_meta",
    "dataset_meta",
    "dataset_spec",
    "spec_meta",
]


def build_dataset(cfg: DataConfig, split: str, transform=None, case: str | None = None) -> FolderDataset:
    """The data set named by ``cfg.dataset`` for ``split`` (raw samples when ``transform`` is None),
    reporting the per-case tables of ``cfg.cases`` (checked against the data set's cases here, so a
    misspelt case stops ``train`` / ``eval`` / ``compare`` ... before any work). Each modality has the
    channel count of ``cfg.channels`` (3 where it names none), which a folder spec must agree with."""
    channels = dict(cfg.channels)
    if cfg.dataset == "deliver":
        ds = DeLiVER(
            cfg.root,
            split,
            cfg.modalities,
            case=case,
            transform=transform,
            depth_folder=cfg.depth_folder,
            channels=channels,
        )
    elif cfg.dataset == "muses":
        ds = MUSES(cfg.root, split, cfg.modalities, case=case, transform=transform, channels=channels)
    else:  # a folder data set: its spec (or the error that there is none)
        ds = FolderDataset(
            dataset_spec(cfg),
            root=cfg.root,
            split=split,
            transform=transform,
            modalities=cfg.modalities,
            case=case,
            channels=channels,
        )
    ds.set_report_cases(cfg.cases)
    return ds


def build_val_dataset(cfg: DataConfig, split: str | None = None, case: str | None = None) -> FolderDataset:
    """Validation data with the val transform of docs/design.md §3.4 (short side resize, align, normalise)."""
    ds = build_dataset(cfg, split or cfg.val_split, case=case)
    ds.transform = build_val_transform(
        ds.modalities, ds.norm_stats, short_side=cfg.val_short_side, align=cfg.val_align
    )
    return ds


def _mix(*ints: int) -> int:
    return int(
        np.random.SeedSequence([int(i) & 0xFFFF_FFFF for i in ints]).generate_state(1, np.uint64)[0] >> 1
    )


class SeededTrainSet(Dataset):
    """Wraps a raw data set; sample ``i`` of epoch ``e`` is augmented with a generator seeded by
    ``(seed, e, i)``. The key is ``(e, i)`` (what :class:`EpochBatches` yields, so one loader with
    long-lived workers can run across epochs) or a bare ``i``, which uses :attr:`epoch`."""

    def __init__(self, base: FolderDataset, transform, seed: int) -> None:
        self.base, self.transform, self.seed = base, transform, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: int | tuple[int, int]):
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        inputs, label = self.base.load(index)
        g = torch.Generator().manual_seed(_mix(self.seed, epoch, index))
        return self.transform(inputs, label, generator=g)


def build_train_dataset(cfg: ExperimentConfig) -> SeededTrainSet:
    ds = build_dataset(cfg.data, cfg.data.train_split)
    transform = build_train_transform(cfg.data.crop_size, ds.modalities, ds.norm_stats, ds.rgb_modalities)
    return SeededTrainSet(ds, transform, cfg.train.seed)


class ResumableSampler(Sampler[int]):
    """``DistributedSampler`` order (seeded by ``seed + epoch``, sharded by rank) that can start
    ``skip`` samples into the epoch -- for resuming in the middle of an epoch."""

    def __init__(
        self, dataset: Dataset, *, num_replicas: int, rank: int, seed: int, shuffle: bool = True
    ) -> None:
        self.inner = DistributedSampler(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=True
        )
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.inner.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        indices = list(self.inner)
        return iter(indices[self.skip :])

    def __len__(self) -> int:
        return len(self.inner) - self.skip


class EpochBatches(Sampler[list[tuple[int, int]]]):
    """The training batches of every epoch from iteration ``start`` on, without end: batch ``k`` of
    epoch ``e`` is ``[(e, i), ...]`` over the ``k``-th ``batch_size`` slice of the epoch's
    :class:`ResumableSampler` order (the tail that does not fill a batch is dropped, per epoch).

    With gradient accumulation (``accumulate`` = K > 1) an iteration -- one optimiser step -- takes K
    micro-batches: the samples of step ``k`` are the ``k``-th ``K·batch_size`` slice of the epoch's
    order, yielded as K consecutive micro-batches of ``batch_size``, and the tail that does not fill a
    step is dropped per epoch. So a step never straddles two epochs, ``per_epoch`` counts steps, and
    a step sees exactly the samples one batch of ``K·batch_size`` would (with the same augmentation,
    which depends on ``(seed, epoch, index)`` only).

    One DataLoader over this batch sampler serves the whole run, so its worker processes start once
    instead of once per epoch (restarting them each epoch cost a large share of a short demo row's
    training time: docs/results/benchmarks/code_notes.md), and the batches are exactly those of one
    loader per epoch.
    """

    def __init__(self, order: ResumableSampler, batch_size: int, start: int = 0, accumulate: int = 1) -> None:
        self.order, self.batch_size, self.start, self.accumulate = order, batch_size, start, accumulate
        self.per_epoch = len(order.inner) // (batch_size * accumulate)  # optimiser steps per epoch

    def indices(self, iteration: int, micro: int | None = None) -> list[int]:
        """The sample indices of step ``iteration`` (all its micro-batches), or of its micro-batch
        ``micro`` (for error messages)."""
        epoch, k = divmod(iteration, self.per_epoch)
        self.order.inner.set_epoch(epoch)
        step = self.batch_size * self.accumulate
        lo, hi = k * step, (k + 1) * step
        if micro is not None:
            lo, hi = lo + micro * self.batch_size, lo + (micro + 1) * self.batch_size
        return list(self.order.inner)[lo:hi]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, k = divmod(self.start, self.per_epoch)
        bs = self.batch_size
        while True:
            self.order.inner.set_epoch(epoch)
            order = list(self.order.inner)
            for b in range(k * self.accumulate, self.per_epoch * self.accumulate):
                yield [(epoch, i) for i in order[b * bs : (b + 1) * bs]]
            epoch, k = epoch + 1, 0


def collate(
    batch: Sequence[tuple[list[torch.Tensor], torch.Tensor]],
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """List of ``(inputs, label)`` -> (N tensors ``B×C_i×H×W``, labels ``B×H×W``)."""
    n = len(batch[0][0])
    inputs = [torch.stack([s[0][m] for s in batch]) for m in range(n)]
    return inputs, torch.stack([s[1] for s in batch])


def shard_indices(n: int, rank: int, world: int) -> list[int]:
    """Evaluation shard of a rank: every ``world``-th sample, no padding or duplicates."""
    return list(range(rank, n, world))
