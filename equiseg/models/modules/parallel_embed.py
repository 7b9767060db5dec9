"""CMNeXt's parallel patch embedding (docs/design.md §8.3): one strided conv shared by all auxiliary
modalities, then
a channel LayerNorm of each modality's own (the release's ``PatchEmbedParallel``). An auxiliary with
another channel count than the shared conv takes gets a conv of its own (``stems.<i>``, stage 1 only)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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
        own_chans: ``{i: C_i}``: modalities that have their own conv of ``C_i`` input channels
            (``stems.{i}``, the input stem of a modality with other than 3 channels) instead of the
            shared one; their LayerNorm is ``norms.{i}`` as for the others.
    """

    def __init__(
        self,
        in_chans: int,
        embed_dim: int,
        patch_size: int,
        stride: int,
        num_modalities: int,
        eps: float = 1e-6,
        own_chans: Mapping[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride, padding=patch_size // 2)
        self.norms = nn.ModuleList([ChannelLayerNorm(embed_dim, eps) for _ in range(num_modalities)])
        if own_chans:
            conv = lambda c: nn.Conv2d(c, embed_dim, patch_size, stride, padding=patch_size // 2)  # noqa: E731
            self.stems = nn.ModuleDict({str(i): conv(c) for i, c in own_chans.items()})

    def _project(self, x: torch.Tensor | Sequence[torch.Tensor], idx: Sequence[int]) -> torch.Tensor:
        """The convolution of every modality's map -> ``(P·B)×C×h×w``, modality-major."""
        stems = getattr(self, "stems", None)
        own = [k for k, i in enumerate(idx) if stems is not None and str(i) in stems]
        if isinstance(x, torch.Tensor):
            if own:
                x = list(x)  # P×B×C_in×H×W -> P maps (the own convs need them apart)
            else:
                return self.proj(x.flatten(0, 1).contiguous(memory_format=torch.channels_last))
        if not own:
            return self.proj(torch.cat(list(x)).contiguous(memory_format=torch.channels_last))
        outs: list[torch.Tensor | None] = [None] * len(idx)
        shared = [k for k in range(len(idx)) if k not in own]
        if shared:
            y = self.proj(torch.cat([x[k] for k in shared]).contiguous(memory_format=torch.channels_last))
            for k, yk in zip(shared, y.chunk(len(shared)), strict=True):
                outs[k] = yk
        for k in own:
            outs[k] = stems[str(idx[k])](x[k].contiguous(memory_format=torch.channels_last))
        return torch.cat(outs)

    def forward(
        self, x: torch.Tensor | Sequence[torch.Tensor], index: Sequence[int] | None = None
    ) -> torch.Tensor:
        """``x``: ``P×B×C_in×H×W`` maps of the modalities ``index`` (None: all N, in order), or a list of
        their P maps ``B×C_i×H×W`` (stage 1, where channel counts may differ) -> ``P×B×C×h×w``,
        h = ceil(H / stride). The P modalities run through the shared conv as one batch."""
        P, B = len(x), x[0].shape[0]
        idx = range(P) if index is None else index
        y = self._project(x, list(idx))  # (P·B)×C×h×w
        C, h, w = y.shape[1:]
        weight = torch.stack([self.norms[i].weight for i in idx]).view(P, 1, 1, 1, C)
        bias = torch.stack([self.norms[i].bias for i in idx]).view(P, 1, 1, 1, C)
        eps = self.norms[0].eps
        y = y.permute(0, 2, 3, 1).reshape(P, B, h, w, C)  # channels last: a view of the conv output
        y = F.layer_norm(y, (C,), eps=eps) * weight + bias  # each modality's own affine
        return y.permute(0, 1, 4, 2, 3)  # P×B×C×h×w (a channels-last view)
