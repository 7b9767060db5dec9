"""Optimiser and learning-rate schedule of the training recipe (docs/design.md §3.1).

AdamW (lr 6e-5, betas (0.9, 0.999), weight decay 0.01) with no decay on norms, biases and other 1-D
parameters; linear warm-up from ``warmup_ratio · lr`` then polynomial decay with power 0.9, stepped
every iteration, as in CMNeXt's ``WarmupPolyLR`` (mmseg's ``PolyLR`` with linear warm-up).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler


def param_groups(
    model: nn.Module,
    weight_decay: float = 0.01,
    no_decay_keys: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """Split the trainable parameters into a decay and a no-decay group.

    A parameter gets no weight decay when it has fewer than two dimensions (norm weights and biases,
    linear/conv biases, layer-scale vectors, scalars) or when any of ``no_decay_keys`` is a substring of
    its dotted name (mmseg's ``custom_keys`` rule), e.g. ``("pos_embed",)``. Every other (≥2-D) weight
    is decayed. Frozen parameters (``requires_grad=False``) are left out; parameters shared between
    modules appear once.

    Args:
        model: The model.
        weight_decay: Decay of the decay group.
        no_decay_keys: Name substrings that force no decay.

    Returns:
        ``[{"name": "decay", "params": [...], "weight_decay": wd, "param_names": [...]},
        {"name": "no_decay", "params": [...], "weight_decay": 0.0, "param_names": [...]}]`` — both
        groups are always present (possibly empty) so that optimiser state dicts keep one layout.
    """
    keys = tuple(no_decay_keys)
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    decay_names: list[str] = []
    no_decay_names: list[str] = []
    for name, param in model.named_parameters():  # deduplicates shared parameters
        if not param.requires_grad:
            continue
        if param.ndim < 2 or any(key in name for key in keys):
            no_decay.append(param)
            no_decay_names.append(name)
        else:
            decay.append(param)
            decay_names.append(name)
    return [
        {"name": "decay", "params": decay, "weight_decay": weight_decay, "param_names": decay_names},
        {"name": "no_decay", "params": no_decay, "weight_decay": 0.0, "param_names": no_decay_names},
    ]


def build_optimizer(
    model: nn.Module,
    lr: float = 6e-5,
    betas: tuple[float, float] = (0.9, 0.999),
    weight_decay: float = 0.01,
    no_decay_keys: Iterable[str] = (),
    eps: float = 1e-8,
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` (decay on ≥2-D weights only).

    Args:
        model: The model (for DDP, the wrapped or unwrapped model: names differ only by ``module.``).
        lr: Base learning rate of both groups.
        betas: Adam betas.
        weight_decay: Decoupled weight decay of the decay group; the no-decay group uses 0.
        no_decay_keys: Name substrings whose parameters get no decay even when ≥2-D.
        eps: Adam epsilon.

    Returns:
        The optimiser; each param group carries ``"name"`` (``"decay"``/``"no_decay"``) and
        ``"param_names"`` for logging and inspection.
    """
    groups = param_groups(model, weight_decay=weight_decay, no_decay_keys=no_decay_keys)
    if not any(g["params"] for g in groups):
        raise ValueError("the model has no trainable parameters")
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def lr_at(
    it: int,
    *,
    base_lr: float,
    max_iters: int,
    warmup_iters: int,
    warmup_ratio: float = 0.1,
    power: float = 0.9,
    min_lr: float = 0.0,
) -> float:
    """Learning rate for (0-based) iteration ``it``: linear warm-up, then polynomial decay.

    ``it`` is the index of the optimiser step about to be taken (the first step is ``it = 0``)::

        it <  W:  lr = base_lr · (r + (1 − r) · it / W)
        it >= W:  lr = min_lr + (base_lr − min_lr) · (1 − (it − W) / (T − W)) ** p

    with ``W = warmup_iters``, ``T = max_iters``, ``r = warmup_ratio``, ``p = power``. The warm-up goes
    linearly from ``r · base_lr`` at ``it = 0`` towards ``base_lr``, which is reached exactly at
    ``it = W``; the decay then runs over the remaining ``T − W`` iterations and reaches ``min_lr`` at
    ``it = T`` (iterations past ``T`` keep ``min_lr``). This is CMNeXt's ``WarmupPolyLR`` (linear
    warm-up, poly decay over the post-warm-up iterations), plus mmseg's optional ``min_lr`` floor.

    Args:
        it: Iteration index, ``>= 0``.
        base_lr: Peak learning rate.
        max_iters: Total number of iterations ``T`` (``> warmup_iters``).
        warmup_iters: Warm-up length ``W`` (0 for none).
        warmup_ratio: Starting fraction ``r`` of ``base_lr``.
        power: Poly exponent ``p``.
        min_lr: Final learning rate.

    Returns:
        The learning rate.
    """
    if it < 0:
        raise ValueError(f"iteration must be >= 0, got {it}")
    if warmup_iters < 0 or max_iters <= warmup_iters:
        raise ValueError(f"need 0 <= warmup_iters < max_iters, got {warmup_iters} and {max_iters}")
    if it < warmup_iters:
        return base_lr * (warmup_ratio + (1.0 - warmup_ratio) * it / warmup_iters)
    progress = min(it - warmup_iters, max_iters - warmup_iters) / (max_iters - warmup_iters)
    return min_lr + (base_lr - min_lr) * (1.0 - progress) ** power


class WarmupPolyLR(LRScheduler):
    """Per-iteration scheduler that sets every param group's lr to :func:`lr_at` of its base lr.

    Call ``scheduler.step()`` once after every ``optimizer.step()``; after ``n`` calls the optimiser uses
    ``lr_at(n, base_lr=group's initial lr, ...)``. On construction the groups are set to the lr of
    iteration 0. The state dict holds plain numbers only (``torch.load(weights_only=True)`` safe).

    Args:
        optimizer: The optimiser; each group's current ``lr`` is its base (peak) lr.
        max_iters: Total iterations ``T``.
        warmup_iters: Warm-up iterations ``W``.
        warmup_ratio: Warm-up start fraction.
        power: Poly exponent.
        min_lr: Final learning rate (the same for every group).
        last_epoch: Index of the last iteration when resuming by hand (normally ``-1`` and
            :meth:`load_state_dict` instead).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        max_iters: int,
        warmup_iters: int,
        warmup_ratio: float = 0.1,
        power: float = 0.9,
        min_lr: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        if warmup_iters < 0 or max_iters <= warmup_iters:
            raise ValueError(f"need 0 <= warmup_iters < max_iters, got {warmup_iters} and {max_iters}")
        self.max_iters = int(max_iters)
        self.warmup_iters = int(warmup_iters)
        self.warmup_ratio = float(warmup_ratio)
        self.power = float(power)
        self.min_lr = float(min_lr)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """Learning rates for iteration ``self.last_epoch`` (torch's name for the step counter)."""
        return [
            lr_at(
                self.last_epoch,
                base_lr=base_lr,
                max_iters=self.max_iters,
                warmup_iters=self.warmup_iters,
                warmup_ratio=self.warmup_ratio,
                power=self.power,
                min_lr=self.min_lr,
            )
            for base_lr in self.base_lrs
        ]
