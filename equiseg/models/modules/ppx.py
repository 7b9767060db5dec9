"""Parallel Pooling Mixer (PPX) = CMNeXt's ``MSPABlock`` (docs/design.md §1.5 step 2), exactly.

On a map ``x`` (``B×C×H×W``), with BatchNorms ``BN1``, ``BN2`` and layer scales ``ls1``, ``ls2`` (init 1e-2):

    A(z) = sigmoid(conv1x1(y + avgpool3(y) + avgpool7(y) + avgpool11(y))) · z + z,   y = dw7x7(z)
    x    = x + ls1 · A(BN1(x))
    x    = eca(x) · x + ls2 · MLP(BN2(x))

The pooling-attention gate multiplies the block's *input* ``z``; ``eca`` is a global average pool ->
Conv1d(1, 1, k=3, no bias) over channels -> sigmoid; the MLP (1×1 -> dw 3×3 -> GELU -> 1×1) reads the
*pre-gate* ``x``, and there is no ``x +`` in the second line. Poolings are stride 1 with
``count_include_pad=False``; they run as separable box means (:func:`box_mean`, the same numbers).
Stochastic depth (``drop_path``) applies to both branches, as in CMNeXt.

Shared by EQUISeg's CMTB (``ppx_depths`` blocks per stage) and CMNeXt's auxiliary branch
(``depths[s]`` blocks per stage, then a channel LayerNorm).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from equiseg.layers import DropPath


def box_mean(x: torch.Tensor, k: int) -> torch.Tensor:
    """``avg_pool2d(x, k, stride=1, padding=k//2, count_include_pad=False)`` as two 1-D passes.

    The valid part of a padded window is a rectangle, so the mean over it factorises into a mean over
    valid rows of means over valid columns: 2k instead of k² reads per pixel.
    """
    x = F.avg_pool2d(x, (k, 1), stride=1, padding=(k // 2, 0), count_include_pad=False)
    return F.avg_pool2d(x, (1, k), stride=1, padding=(0, k // 2), count_include_pad=False)


class PoolingAttention(nn.Module):
    """``A(z) = sigmoid(conv1x1(y + Σ_k avgpool_k(y))) · z + z`` with ``y = dw7x7(z)`` (CMNeXt's
    ``MSPoolAttention``)."""

    def __init__(self, dim: int, pool_sizes: tuple[int, ...] = (3, 7, 11)) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.pool_sizes = pool_sizes
        self.gate = nn.Conv2d(dim, dim, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(z)
        u = y
        for k in self.pool_sizes:
            u = u + box_mean(y, k)
        return torch.sigmoid(self.gate(u)) * z + z


class ChannelGate(nn.Module):
    """ECA channel weights: global average pool -> 1-D conv (k=3, no bias) over channels -> sigmoid.
    Returns the ``B×C×1×1`` weights (the caller multiplies)."""

    def __init__(self, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = x.mean((2, 3)).unsqueeze(1)  # B×1×C
        return torch.sigmoid(self.conv(w)).transpose(1, 2).unsqueeze(-1)  # B×C×1×1


class ConvMlp(nn.Module):
    """1×1 (C -> rC) -> depth-wise 3×3 -> GELU -> 1×1 (rC -> C), on maps."""

    def __init__(self, dim: int, ratio: float = 4.0, drop: float = 0.0) -> None:
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.drop = nn.Dropout(drop)
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.dwconv(self.fc1(x))))))


class PPX(nn.Module):
    """One PPX (MSPA) block, ``B×C×H×W -> B×C×H×W``; see the module docstring for the equations."""

    def __init__(
        self,
        dim: int,
        mlp_ratio: float = 4.0,
        layer_scale: float = 1e-2,
        drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.mixer = PoolingAttention(dim)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = ConvMlp(dim, mlp_ratio, drop)
        self.channel_gate = ChannelGate()
        self.layer_scale_init = layer_scale
        self.layer_scale1 = nn.Parameter(torch.full((dim,), layer_scale))
        self.layer_scale2 = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.layer_scale1.view(-1, 1, 1) * self.mixer(self.norm1(x)))
        mlp = self.drop_path(self.layer_scale2.view(-1, 1, 1) * self.mlp(self.norm2(x)))  # pre-gate x
        return self.channel_gate(x) * x + mlp

    def reset_layer_scale(self) -> None:
        """Back to the init value (after a generic ``init_weights`` pass reset every parameter)."""
        nn.init.constant_(self.layer_scale1, self.layer_scale_init)
        nn.init.constant_(self.layer_scale2, self.layer_scale_init)
