"""Modality dropout: train on random subsets of the modalities (``train.modality_dropout``).

The robust peers (AnySeg/MAGIC's any-modal training, RobustSeg's modality dropout) train every step
on a random subset of the sensors, so that the network segments from whatever is left when one fails.
Two regimes:

* ``subset`` -- each sample keeps a random non-empty subset: its size ``k`` uniform in ``1..N``, then a
  uniform subset of size ``k`` (every size equally likely, unlike independent drops, which rarely keep
  one modality of four).
* ``independent`` -- each modality is dropped with probability ``p``, never all: the pattern is drawn
  *conditioned* on at least one kept (the size from the binomial restricted to ``1..N``, then a uniform
  subset of that size), not by reviving a modality after the fact, which would over-weight singletons.

Both draw one size per sample (``torch.multinomial``) and one random ranking of the modalities per
sample; a modality is kept when its rank is below the size: no loop over samples.

**Fill.** ``zero``: a dropped modality's (normalised) input becomes zeros, per sample -- what the
robustness benchmark feeds for a missing modality (EMM), so training and the benchmark agree. The
network encodes the zeros like any input; the *training-only* losses are told which inputs were kept
(``keep``, ``B×N`` bool, passed to ``compute_loss``) and use only those: EQUISeg's SGM compares a
teacher/student pair only on the samples where both were kept (:func:`equiseg.models.sgm.sgm_loss`),
MAGIC ranks, fuses and holds consistent only the kept modalities of each sample. ``absent``: dropped
modalities are passed as ``None``; an absent input is absent for the whole batch, so one pattern is
drawn per micro-batch (per process) instead of per sample. Only for models that accept ``None``
(``SegModel.accepts_absent``); the model then encodes only what is present, and its losses see only
that by construction.

**Reproducible.** The pattern of a micro-batch comes from a private generator seeded by
``(seed, iteration, micro-batch, rank)`` -- never from the global RNG -- so a resumed run draws exactly
the patterns the uninterrupted run draws, the other random streams (drop-path, the SGM pairing) are
the same with and without it, and nothing needs to be saved in the checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from equiseg.config import ModalityDropoutConfig

__all__ = ["ModalityDropout", "draw_keep", "size_weights"]

_STREAM = 0x6D6F6461  # separates this generator's seeds from the augmentation's (seed, epoch, index)


def size_weights(mode: str, num: int, p: float = 0.5) -> torch.Tensor:
    """Unnormalised probabilities of keeping ``k = 1..num`` modalities (``num`` values, float64).

    ``subset``: uniform. ``independent``: ``C(num, k) (1-p)^k p^(num-k)``, the binomial restricted to
    ``k >= 1`` (the pattern conditioned on not dropping everything)."""
    if mode == "subset":
        return torch.ones(num, dtype=torch.float64)
    if mode == "independent":
        return torch.tensor(
            [math.comb(num, k) * (1 - p) ** k * p ** (num - k) for k in range(1, num + 1)],
            dtype=torch.float64,
        )
    raise ValueError(f"train.modality_dropout.mode: expected subset or independent, got {mode!r}")


def draw_keep(
    mode: str, batch: int, num: int, p: float = 0.5, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A keep pattern per sample: ``batch×num`` bool, at least one True per row.

    The size of each row is drawn from :func:`size_weights`, then which modalities: a uniform random
    ranking per row, kept where the rank is below the size (a uniform subset of that size).
    """
    weights = size_weights(mode, num, p).expand(batch, num)
    size = torch.multinomial(weights, 1, generator=generator) + 1  # batch×1, in 1..num
    keys = torch.rand(batch, num, generator=generator)
    rank = keys.argsort(1).argsort(1)  # a uniform random permutation per row
    return rank < size


def _mix(*ints: int) -> int:
    """One 63-bit seed from several integers (numpy's SeedSequence: nearby inputs, unrelated seeds)."""
    state = np.random.SeedSequence([int(i) & 0xFFFF_FFFF for i in ints]).generate_state(1, np.uint64)[0]
    return int(state >> 1)


class ModalityDropout:
    """Applies ``train.modality_dropout`` to a training micro-batch.

    Args:
        cfg: the config section.
        seed: the run's seed (``train.seed``).
        rank: the process's rank (each process draws its own patterns).
        model: the model trained; ``fill: absent`` needs ``model.accepts_absent``.

    Raises:
        ValueError: ``fill: absent`` for a model that cannot take ``None`` inputs (named).
    """

    def __init__(
        self, cfg: ModalityDropoutConfig, seed: int, rank: int = 0, model: torch.nn.Module | None = None
    ):
        self.mode, self.p, self.fill = cfg.mode, float(cfg.p), cfg.fill
        self.seed, self.rank = int(seed), int(rank)
        if (
            self.enabled
            and self.fill == "absent"
            and model is not None
            and not getattr(model, "accepts_absent", True)
        ):
            name = type(model).__name__
            raise ValueError(
                f"train.modality_dropout.fill: absent needs a model that accepts missing (None) inputs; "
                f"{name} does not: use fill: zero"
            )

    @property
    def enabled(self) -> bool:
        return self.mode != "none"

    def generator(self, iteration: int, micro: int = 0) -> torch.Generator:
        """The private generator of micro-batch ``micro`` of optimiser step ``iteration``."""
        return torch.Generator().manual_seed(_mix(self.seed, _STREAM, iteration, micro, self.rank))

    def __call__(
        self, inputs: Sequence[torch.Tensor | None], iteration: int, micro: int = 0
    ) -> tuple[list[torch.Tensor | None], torch.Tensor | None]:
        """Drop modalities of one micro-batch.

        Args:
            inputs: N tensors ``B×C×H×W`` (model order).
            iteration, micro: where the micro-batch is in the run (seeds the pattern).

        Returns:
            ``(inputs, keep)``. ``fill: zero``: the inputs with dropped modalities zeroed per sample and
            ``keep`` ``B×N`` bool on the inputs' device (for ``compute_loss``). ``fill: absent``: dropped
            modalities are ``None`` and ``keep`` is None (what is absent says it). Disabled: the inputs
            unchanged and None.
        """
        inputs = list(inputs)
        if not self.enabled or len(inputs) < 2:
            return inputs, None
        g = self.generator(iteration, micro)
        if self.fill == "absent":
            keep = draw_keep(self.mode, 1, len(inputs), self.p, g)[0].tolist()  # CPU: no device sync
            return [x if k else None for x, k in zip(inputs, keep)], None
        ref = next(x for x in inputs if x is not None)
        keep = draw_keep(self.mode, ref.shape[0], len(inputs), self.p, g).to(ref.device, non_blocking=True)
        out = [
            None if x is None else x.masked_fill(~keep[:, n].view(-1, *([1] * (x.ndim - 1))), 0)
            for n, x in enumerate(inputs)
        ]
        return out, keep
