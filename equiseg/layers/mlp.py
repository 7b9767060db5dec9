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
        x = x.view(B, H, W, C).permute(0, 3, 1, 2)  # B×L×C -> B×C×H×W, a channels-last view (no copy)
        x = self.dwconv(x)  # depth-wise convs are 4-6× faster channels-last on CPU
        return x.permute(0, 2, 3, 1).reshape(B, L, C)  # -> B×L×C (a view when channels-last)  # -> B×L×C


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
