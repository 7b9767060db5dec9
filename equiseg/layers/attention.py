"""Spatial-reduction multi-head attention (PVT/MiT "efficient attention"), self or cross.

Keys and values come from ``context`` (default: the queries' own tokens), reduced by a ``sr×sr``
stride-``sr`` conv + LayerNorm before projection, which cuts the cost by ``sr²``. The same module is the
MiT self-attention and the CMTB cross-attention of the paper's Eq. (1): ``Q = f'W_Q``,
``K = f_aux W_K``, ``V = f_aux W_V``. Parameter names (``q``, ``kv``, ``proj``, ``sr``, ``norm``) follow
the original SegFormer release so that ``mit_b*.pth`` loads without renaming.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SRAttention(nn.Module):
    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        sr_ratio: int = 1,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.attn_drop = attn_drop
        self.sr_ratio = sr_ratio
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)  # k and v stacked: rows [0, C) are k
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, H: int, W: int, context: torch.Tensor | None = None) -> torch.Tensor:
        """Args: x ``B×L×C`` query tokens on an ``H×W`` grid; context ``B×L×C`` on the same grid or None."""
        B, L, C = x.shape
        h, d = self.num_heads, self.head_dim
        ctx = x if context is None else context
        q = self.q(x).reshape(B, L, h, d).transpose(1, 2)  # B×h×L×d
        if self.sr_ratio > 1:
            ctx = ctx.reshape(B, H, W, C).permute(0, 3, 1, 2)  # tokens -> B×C×H×W (channels-last view)
            ctx = self.sr(ctx)
            ctx = ctx.permute(0, 2, 3, 1).reshape(B, -1, C)  # -> B×L'×C, L' = (H/sr)(W/sr)
            ctx = self.norm(ctx)
        kv = self.kv(ctx).reshape(B, -1, 2, h, d).permute(2, 0, 3, 1, 4)  # 2×B×h×L'×d
        out = F.scaled_dot_product_attention(
            q, kv[0], kv[1], dropout_p=self.attn_drop if self.training else 0.0
        )
        out = out.transpose(1, 2).reshape(B, L, C)
        return self.proj_drop(self.proj(out))
