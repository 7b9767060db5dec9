"""SegFormer all-MLP decode head (docs/design.md §1.6), applied to the modality-fused (mean) stage
features."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class SegFormerHead(nn.Module):
    """Per stage a linear ``C_s -> D`` (as 1×1 conv), upsample to the stride-4 grid, concatenate
    ``[c4, c3, c2, c1]``, fuse with 1×1 conv + BN + ReLU, dropout, 1×1 classifier.

    Args:
        in_channels: channels of the four stage features (the encoder's ``out_channels``).
        decoder_dim: D (256 for B0/B1, 768 for B2+ in SegFormer; CMNeXt uses 512 for B2).
        num_classes: K.
        dropout: SegFormer uses ``Dropout2d(0.1)`` before the classifier; kept here.
    """

    def __init__(
        self, in_channels: Sequence[int], decoder_dim: int, num_classes: int, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.linear_c = nn.ModuleList([nn.Conv2d(c, decoder_dim, 1) for c in in_channels])
        self.linear_fuse = nn.Sequential(
            nn.Conv2d(len(in_channels) * decoder_dim, decoder_dim, 1, bias=False),
            nn.BatchNorm2d(decoder_dim),
            nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout2d(dropout)
        self.linear_pred = nn.Conv2d(decoder_dim, num_classes, 1)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """Four maps ``B×C_s×h_s×w_s`` -> logits ``B×K×h_1×w_1`` (stride 4).

        Computed in an equivalent, cheaper order: the fuse conv is linear and 1×1, so it distributes
        over the concatenation, and a 1×1 conv commutes with bilinear upsampling. Hence
        ``fuse(cat_i up(L_i f_i)) = Σ_i up((F_i L_i) f_i) + Σ_i F_i b_i`` with ``F_i`` the fuse weight's
        block for stage i. The merged ``D×C_s`` weights are formed on the fly (parameters and
        gradients are those of the original layout), and the ``4D``-channel concatenation at stride 4
        -- the most expensive tensor of the SegFormer head -- is never built.
        """
        size = feats[0].shape[-2:]
        fuse_conv = self.linear_fuse[0]
        D = fuse_conv.out_channels
        fuse_w = fuse_conv.weight.view(D, -1)  # D×(4D), blocks ordered [c4, c3, c2, c1]
        n = len(feats)
        x = None
        bias = 0
        for i, (proj, f) in enumerate(zip(self.linear_c, feats)):
            block = fuse_w[:, (n - 1 - i) * D : (n - i) * D]  # F_i
            w = block @ proj.weight.view(D, -1)  # D×C_s
            bias = bias + block @ proj.bias
            y = F.conv2d(f, w[:, :, None, None])
            if y.shape[-2:] != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            x = y if x is None else x + y
        x = x + bias.view(1, D, 1, 1)
        x = self.linear_fuse[2](self.linear_fuse[1](x))  # BN, ReLU
        return self.linear_pred(self.dropout(x))

    def forward_reference(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """The head in SegFormer's literal order (project, upsample, concatenate, fuse); for tests."""
        size = feats[0].shape[-2:]
        outs = []
        for proj, f in zip(self.linear_c, feats):
            y = proj(f)
            if y.shape[-2:] != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            outs.append(y)
        x = self.linear_fuse(torch.cat(outs[::-1], dim=1))  # [c4, c3, c2, c1]
        return self.linear_pred(self.dropout(x))


def head_release_rules(fuse: str = "conv", norm: str = "bn", prefix: str = "head.") -> list[tuple]:
    """``map_state_dict`` rules for a public release's SegFormer head (``decode_head.*``) onto this head
    under ``prefix``. The releases name the fuse conv/BN ``linear_fuse.conv``/``.bn`` (DELIVER,
    StitchFusion) or ``linear_fuse.0``/``.1`` (RGBX's MLPDecoder): pass ``fuse``/``norm``. Their
    per-stage projections are ``nn.Linear``; :func:`linear_to_conv` reshapes them after mapping."""
    return [
        (
            r"decode_head\.linear_c(\d)\.proj\.(weight|bias)",
            lambda m: f"{prefix}linear_c.{int(m[1]) - 1}.{m[2]}",  # linear_c1 ... linear_c4
        ),
        (rf"decode_head\.linear_fuse\.{fuse}\.weight", f"{prefix}linear_fuse.0.weight"),
        (rf"decode_head\.linear_fuse\.{norm}\.(\w+)", rf"{prefix}linear_fuse.1.\1"),
        (r"decode_head\.linear_pred\.(weight|bias)", rf"{prefix}linear_pred.\1"),
    ]


def linear_to_conv(sd: dict[str, torch.Tensor], prefix: str = "head.") -> dict[str, torch.Tensor]:
    """The released heads' ``nn.Linear`` projections (``D×C``) as this head's 1×1 convolutions
    (``D×C×1×1``), in place; returns ``sd``."""
    for key, value in list(sd.items()):
        if key.startswith(f"{prefix}linear_c.") and key.endswith(".weight") and value.ndim == 2:
            sd[key] = value[:, :, None, None]
    return sd
