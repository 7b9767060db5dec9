"""Model test helpers: tiny model configs so the suite runs in seconds on 2 CPU cores."""

from __future__ import annotations

import torch

import equiseg

# dims divisible by the fixed heads (1, 2, 5, 8); one block per stage
TINY = dict(embed_dims=(8, 16, 40, 64), depths=(1, 1, 1, 1), decoder_dim=32, drop_path_rate=0.0)
MODS4 = ("rgb", "depth", "event", "lidar")


def tiny_model(n: int = 4, num_classes: int = 5, **overrides) -> equiseg.EQUISeg:
    kw = dict(TINY)
    kw.update(overrides)
    return equiseg.create_model(
        "equiseg_b0",
        num_classes=num_classes,
        modalities=MODS4[:n] if n <= 4 else [f"m{i}" for i in range(n)],
        **kw,
    )


def rand_inputs(n: int, b: int = 2, h: int = 64, w: int = 64, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, 3, h, w, generator=g) for _ in range(n)]
