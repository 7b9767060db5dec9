"""Mix Transformer (MiT) encoder of SegFormer (Xie et al., NeurIPS 2021), docs/design.md §1.2.

Four stages; stage ``s`` = overlapping patch embedding (7×7/4 then 3×3/2) -> ``depths[s]`` blocks of
spatial-reduction self-attention + Mix-FFN -> LayerNorm. Attribute names (``patch_embed1``,
``block1.0.attn.q``, ``norm1`` ...) are those of the original ``mit_b*.pth`` files, so they load with
no renaming; :mod:`equiseg.models.weights` converts the Hugging Face layout.

EQUISeg runs the stages piecewise (:meth:`embed`, :meth:`run_blocks`, :meth:`stage_norm`) so it can
insert the cross-modal block between a stage's blocks and its norm; :meth:`forward_features` is the
plain SegFormer encoder.

Input channels: ``in_chans`` is what ``patch_embed1`` takes (3 unless the encoder belongs to one
modality with another count); ``stems`` gives modalities of other channel counts their own stage-1
patch embedding inside a shared encoder (``stems.<modality>``, :mod:`.stem`), which
:meth:`embed_inputs` applies. Without them the module and its state dict are the original MiT's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from equiseg.layers import DropPath, MixFFN, OverlapPatchEmbed, SRAttention, init_weights
from equiseg.utils import DEFAULT_CHANNELS

from .stem import stem_weight_from_rgb

# The six MiT sizes (docs/design.md §1.2); heads 1, 2, 5, 8 and sr ratios 8, 4, 2, 1 for all.
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
    """MiT encoder. ``out_channels`` lists the channels of the four stage outputs (strides 4, 8, 16, 32).

    ``in_chans``: the channels ``patch_embed1`` takes. ``stems``: ``{modality: channels}`` of the
    modalities that get their own stage-1 patch embedding in this (shared) encoder, see
    :meth:`embed_inputs`; empty for the original MiT.
    """

    def __init__(
        self,
        *,
        in_chans: int = DEFAULT_CHANNELS,
        stems: Mapping[str, int] | None = None,
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
        self.in_chans = in_chans
        if stems:  # registered last: the modules above are built (and seeded) as without stems
            self.stems = nn.ModuleDict(
                {m: OverlapPatchEmbed(c, embed_dims[0], 7, 4) for m, c in stems.items()}
            )
        self.apply(init_weights)

    # --- input channels -------------------------------------------------------------------------------
    def embed_inputs(self, xs: Sequence[torch.Tensor], names: Sequence[str]) -> tuple[torch.Tensor, int, int]:
        """Stage 1's patch embedding of P modalities' maps (``xs[i]``: ``B×C_i×H×W`` of modality
        ``names[i]``) -> tokens ``(P·B)×(h·w)×C_1`` in that order, h, w.

        Modalities with a stem go through their own; the others through ``patch_embed1``, as one batch
        (with no stem in play this is ``embed(0, cat(xs))``, the original computation).
        """
        stems = getattr(self, "stems", None)
        own = [i for i, n in enumerate(names) if stems is not None and n in stems]
        if not own:
            return self.embed(0, xs[0] if len(xs) == 1 else torch.cat(list(xs)))
        tokens: list[torch.Tensor | None] = [None] * len(xs)
        shared = [i for i in range(len(xs)) if i not in own]
        if shared:
            t, h, w = self.embed(0, torch.cat([xs[i] for i in shared]))
            for i, ti in zip(shared, t.chunk(len(shared)), strict=True):
                tokens[i] = ti
        for i in own:
            tokens[i], h, w = stems[names[i]](xs[i])
        return torch.cat(tokens), h, w  # (P·B)×(h·w)×C_1

    def adapt_rgb_state_dict(self, sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """An original-layout 3-channel MiT state dict (``patch_embed1.proj.weight`` ...) made to fit this
        encoder's inputs: ``patch_embed1``'s convolution weight converted to ``in_chans`` and each stem
        filled from ``patch_embed1`` (the weight by :func:`.stem.stem_weight_from_rgb`, the bias and
        LayerNorm copied). Every other key is unchanged; so is ``sd`` when it has no 3-channel
        ``patch_embed1.proj.weight`` (the shape check then reports it)."""
        out = dict(sd)
        weight = sd.get("patch_embed1.proj.weight")
        if weight is None or weight.ndim != 4 or weight.shape[1] != DEFAULT_CHANNELS:
            return out
        out["patch_embed1.proj.weight"] = stem_weight_from_rgb(weight, self.in_chans)
        for m, stem in getattr(self, "stems", {}).items():
            out[f"stems.{m}.proj.weight"] = stem_weight_from_rgb(weight, stem.proj.in_channels)
            for key in ("proj.bias", "norm.weight", "norm.bias"):
                if f"patch_embed1.{key}" in sd:
                    out[f"stems.{m}.{key}"] = sd[f"patch_embed1.{key}"]
        return out

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
    def forward_features(
        self, x: torch.Tensor | Sequence[torch.Tensor], names: Sequence[str] = ()
    ) -> list[torch.Tensor]:
        """``B×C×H×W`` -> four maps ``B×C_s×ceil(H/r_s)×ceil(W/r_s)``, r_s = 4, 8, 16, 32.

        ``x`` may also be the maps of several modalities (``names``, see :meth:`embed_inputs`), which
        then run as one batch of ``P·B`` from stage 1 on.
        """
        outs = []
        for s in range(self.num_stages):
            if s == 0 and not isinstance(x, torch.Tensor):
                t, H, W = self.embed_inputs(x, names)
            else:
                t, H, W = self.embed(s, x)
            t = self.stage_norm(s, self.run_blocks(s, t, H, W))
            x = t.reshape(t.shape[0], H, W, -1).permute(0, 3, 1, 2)  # tokens -> B×C×H×W, channels-last
            outs.append(x)
        return outs

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_features(x)
