"""CMNeXt's parallel patch embedding (SPEC §8): one strided conv shared by all auxiliary modalities, then
a channel LayerNorm of each modality's own (the release's ``PatchEmbedParallel``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from equiseg.layers.norm import ChannelLayerNorm


class ParallelPatchEmbed(nn.Module):
    """Conv ``k×k`` / stride ``s`` / padding ``k//2`` shared by N modalities + one channel LayerNorm each.

    Args:
        in_chans, embed_dim, patch_size, stride: as MiT's overlapping patch embedding.
        num_modalities: N (one LayerNorm each, ``norms.{i}``).
        eps: LayerNorm eps (1e-6 in CMNeXt's release, unlike MiT's 1e-5 patch-embedding norm).
    """

    def __init__(
        self,
        in_chans: int,
        embed_dim: int,
        patch_size: int,
        stride: int,
        num_modalities: int,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride, padding=patch_size // 2)
        self.norms = nn.ModuleList([ChannelLayerNorm(embed_dim, eps) for _ in range(num_modalities)])

    def forward(self, x: torch.Tensor, index: Sequence[int] | None = None) -> torch.Tensor:
        """``x``: ``P×B×C_in×H×W`` maps of the modalities ``index`` (None: all N, in order) ->
        ``P×B×C×h×w``, h = ceil(H / stride). The P modalities run through the conv as one batch."""
        P, B = x.shape[:2]
        y = self.proj(x.flatten(0, 1).contiguous(memory_format=torch.channels_last))  # (P·B)×C×h×w
        C, h, w = y.shape[1:]
        idx = range(P) if index is None else index
        weight = torch.stack([self.norms[i].weight for i in idx]).view(P, 1, 1, 1, C)
        bias = torch.stack([self.norms[i].bias for i in idx]).view(P, 1, 1, 1, C)
        eps = self.norms[0].eps
        y = y.permute(0, 2, 3, 1).reshape(P, B, h, w, C)  # channels last: a view of the conv output
        y = F.layer_norm(y, (C,), eps=eps) * weight + bias  # each modality's own affine
        return y.permute(0, 1, 4, 2, 3)  # P×B×C×h×w (a channels-last view)
