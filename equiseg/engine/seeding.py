"""Seeding for reproducible runs (the recipe's seed is 3407, docs/design.md §3.1)."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["seed_everything"]


def seed_everything(seed: int, *, deterministic: bool = False) -> int:
    """Seed python's ``random``, numpy's global generator and torch (CPU and every CUDA device).

    DataLoader workers need nothing more: torch seeds each worker's torch, ``random`` and numpy from
    the loader's base seed, which itself comes from the torch generator seeded here.

    Args:
        seed: The seed (0 ≤ seed < 2**32, numpy's limit).
        deterministic: Also ask torch for deterministic kernels (``use_deterministic_algorithms`` with
            ``warn_only=True``, cuDNN benchmark off, ``CUBLAS_WORKSPACE_CONFIG`` set if unset). CPU
            training is deterministic without it.

    Returns:
        The seed.
    """
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    return seed
