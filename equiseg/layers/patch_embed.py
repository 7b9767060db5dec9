"""Overlapping patch embedding of MiT: a strided conv followed by LayerNorm, output as tokens."""

from __future__ import annotations

import torch
from torch import nn


class OverlapPatchEmbed(nn.Module):
    """Conv ``k×k`` / stride ``s`` / padding ``k//2`` then LayerNorm (eps 1e-5, as both releases).

    Convolutions run channels-last (much faster on CPU, and the token layout needs no copy).
    Output spatial size is ``ceil(H / s)``, so any input size works (no multiple-of-32 requirement).
    """

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x.contiguous(memory_format=torch.channels_last))
        B, C, H, W = x.shape
        x = x.permute(0, 2, 3, 1).reshape(B, H * W, C)  # B×C×H×W -> B×(H·W)×C, a view when channels-last
        return self.norm(x), H, W
