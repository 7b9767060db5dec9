"""LayerNorm over the channels of a ``B×C×H×W`` map (CMNeXt's auxiliary-branch norms)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ChannelLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm(C)`` applied at every pixel of a ``B×C×H×W`` map (normalising over C).

    The same numbers as CMNeXt's ``ConvLayerNorm`` (biased variance, ``eps`` inside the square root);
    eps defaults to 1e-6 as there. Parameters are ``weight`` and ``bias`` of shape ``C``.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__(num_channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)  # B×H×W×C -> B×C×H×W (a channels-last view)
