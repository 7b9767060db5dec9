"""Mix Transformer (MiT) encoder of SegFormer (Xie et al., NeurIPS 2021), SPEC §1.1.

Four stages; stage ``s`` = overlapping patch embedding (7×7/4 then 3×3/2) -> ``depths[s]`` blocks of
spatial-reduction self-attention + Mix-FFN -> LayerNorm. Attribute names (``patch_embed1``,
``block1.0.attn.q``, ``norm1`` ...) are those of the original ``mit_b*.pth`` files, so they load with
no renaming; :mod:`equiseg.models.weights` converts the Hugging Face layout.

EQUISeg runs the stages piecewise (:meth:`embed`, :meth:`run_blocks`, :meth:`stage_norm`) so it can
insert the cross-modal block between a stage's blocks and its norm; :meth:`forward_features` is the
plain SegFormer encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from equiseg.layers import DropPath, MixFFN, OverlapPatchEmbed, SRAttention, init_weights

# The six MiT sizes (SPEC §1.1); heads 1, 2, 5, 8 and sr ratios 8, 4, 2, 1 for all.
MIT_VARIANTS: dict[str, dict[str, tuple[int, ...]]] = {
    "b0": dict(embed_dims=(32, 64, 160, 256), depths=(2, 2, 2, 2)),
    "b1": dict(embed_dims=(64, 128, 320, 512), depths=(2, 2, 2, 2)),
    "b2": dict(embed_dims=(64, 128, 320, 512), depths=(3, 4, 6, 3)),
    "b3": dict(embed_dims=(64, 128, 320, 512), depths=(3, 4, 18, 3)),
    "b4": dict(embed_dims=(64, 128, 320, 512), depths=(3, 8, 27, 3)),
    "b5": dict(embed_dims=(64, 128, 320, 512), depths=(3, 6, 40, 3)),
}


def mit_kwargs(cfg: Any) -> dict[str, Any]:
    """The :class:`MixVisionTransformer` arguments of a :class:`~equiseg.config.ModelConfig` (every
    architecture builds its MiT(s) from the same fields)."""
    return dict(
        embed_dims=cfg.embed_dims,
        depths=cfg.depths,
        num_heads=cfg.num_heads,
        sr_ratios=cfg.sr_ratios,
        mlp_ratio=cfg.mlp_ratio,
        qkv_bias=cfg.qkv_bias,
        drop_rate=cfg.drop_rate,
        attn_drop_rate=cfg.attn_drop_rate,
        drop_path_rate=cfg.drop_path_rate,
        ln_eps=cfg.ln_eps,
    )


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        sr_ratio: int = 1,
        ln_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=ln_eps)
        self.attn = SRAttention(
            dim, num_heads, sr_ratio=sr_ratio, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop
        )
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=ln_eps)
        self.mlp = MixFFN(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), H, W))
        return x + self.drop_path(self.mlp(self.norm2(x), H, W))


class MixVisionTransformer(nn.Module):
    """MiT encoder. ``out_channels`` lists the channels of the four stage outputs (strides 4, 8, 16, 32)."""

    def __init__(
        self,
        *,
        in_chans: int = 3,
        embed_dims: Sequence[int] = (32, 64, 160, 256),
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (1, 2, 5, 8),
        sr_ratios: Sequence[int] = (8, 4, 2, 1),
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        ln_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.out_channels = tuple(embed_dims)
        self.num_stages = len(embed_dims)
        # stochastic depth rises linearly over all blocks of all stages
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        start = 0
        for s in range(self.num_stages):
            patch, stride = (7, 4) if s == 0 else (3, 2)
            c_in = in_chans if s == 0 else embed_dims[s - 1]
            self.add_module(f"patch_embed{s + 1}", OverlapPatchEmbed(c_in, embed_dims[s], patch, stride))
            blocks = [
                Block(
                    embed_dims[s],
                    num_heads[s],
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    drop=drop_rate,
                    attn_drop=attn_drop_rate,
                    drop_path=dpr[start + j],
                    sr_ratio=sr_ratios[s],
                    ln_eps=ln_eps,
                )
                for j in range(depths[s])
            ]
            self.add_module(f"block{s + 1}", nn.ModuleList(blocks))
            self.add_module(f"norm{s + 1}", nn.LayerNorm(embed_dims[s], eps=ln_eps))
            start += depths[s]
        self.apply(init_weights)

    # --- piecewise stage API (used by EQUISeg to insert the CMTB) -------------------------------------
    def embed(self, s: int, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """Patch-embed a ``B×C×H×W`` map for stage ``s`` (0-based): tokens ``B×(h·w)×C_s``, h, w."""
        return getattr(self, f"patch_embed{s + 1}")(x)

    def run_blocks(self, s: int, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """Run stage ``s``'s transformer blocks on tokens ``B×L×C_s``."""
        for blk in getattr(self, f"block{s + 1}"):
            x = blk(x, H, W)
        return x

    def stage_norm(self, s: int, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, f"norm{s + 1}")(x)

    # --- plain SegFormer encoder ---------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``B×3×H×W`` -> four maps ``B×C_s×ceil(H/r_s)×ceil(W/r_s)``, r_s = 4, 8, 16, 32."""
        outs = []
        for s in range(self.num_stages):
            t, H, W = self.embed(s, x)
            t = self.stage_norm(s, self.run_blocks(s, t, H, W))
            x = t.reshape(t.shape[0], H, W, -1).permute(0, 3, 1, 2)  # tokens -> B×C×H×W, channels-last
            outs.append(x)
        return outs

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_features(x)
