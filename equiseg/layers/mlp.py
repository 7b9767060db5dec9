"""Mix-FFN of SegFormer: fc1 -> depth-wise 3x3 conv -> GELU -> fc2 (the conv supplies position)."""

from __future__ import annotations

import torch
from torch import nn


class _DWConv(nn.Module):
    """Depth-wise 3x3 conv on tokens; wrapped so its weights are named ``dwconv.dwconv`` as in mit_b*.pth."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, bias=True, groups=dim)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        B, L, C = x.shape
        x = x.transpose(1, 2).reshape(B, C, H, W)  # B×L×C -> B×C×H×W
        x = self.dwconv(x)
        return x.flatten(2).transpose(1, 2)  # -> B×L×C


class MixFFN(nn.Module):
    """Mix-FFN on tokens ``B×L×C`` laid out on an ``H×W`` grid."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = _DWConv(hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        x = self.act(self.dwconv(self.fc1(x), H, W))
        return self.drop(self.fc2(self.drop(x)))
