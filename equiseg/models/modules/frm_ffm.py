"""CMX's Feature Rectify Module (FRM) and Feature Fusion Module (FFM), shared by CMX and CMNeXt
(docs/design.md §8.3, §8.4).

Both public releases define them in one file with identical content (huaaaliu/RGBX_Semantic_Segmentation
``models/net_utils.py`` and jamycheung/DELIVER ``semseg/models/modules/ffm.py``, byte for byte), so one
implementation serves both architectures and one rule table (:data:`REFERENCE_RULES`) maps both
releases' parameter names.

Conventions: ``x1`` is the primary (RGB) map, ``x2`` the other one (CMX's X modality, CMNeXt's fused
auxiliary), both ``B×C×H×W``.

FRM: channel weights from ``[avgpool(x1, x2), maxpool(x1, x2)]`` (``4C``) through
``Linear(4C->4C) -> ReLU -> Linear(4C->2C) -> sigmoid``, spatial weights from ``concat(x1, x2)`` through
``1×1 (2C->C) -> ReLU -> 1×1 (C->2) -> sigmoid``; each map is rectified with the *other* one::

    x1' = x1 + (λc·cw_2 + λs·sw_2) · x2        x2' = x2 + (λc·cw_1 + λs·sw_1) · x1

where ``cw_1``/``sw_1`` are the first C channels / the first spatial map (computed from the stacked
pair, "belonging" to x1) and ``cw_2``/``sw_2`` the second; λc = λs = 0.5.

FFM: per branch ``Linear(C->2C) -> ReLU`` split into a residual half ``y`` and an attention half ``u``;
efficient cross-attention in which each branch's queries are its own ``u`` (no projection) and its
*context* is the other branch's ``softmax_dim=-2((K^T V)·d^-1/2)`` (a ``d×d`` matrix per head, K, V
from a bias-free ``Linear(C->2C)`` of the other ``u``); ``LayerNorm(x + Linear(2C->C)([y, attn]))`` per
branch; the two token maps concatenated (``2C``) and merged by :class:`ChannelEmbed`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FFM", "FRM", "REFERENCE_RULES", "ChannelEmbed", "fusion_reference_rules", "prefixed_rules"]


class FRM(nn.Module):
    """Feature Rectify Module: ``(x1, x2) -> (x1', x2')``, both ``B×C×H×W``.

    Args:
        dim: C.
        reduction: hidden-width divisor of both weight nets (1 in both releases).
        lambda_c, lambda_s: weights of the channel and spatial rectification (0.5 in both releases).
    """

    def __init__(self, dim: int, reduction: int = 1, lambda_c: float = 0.5, lambda_s: float = 0.5) -> None:
        super().__init__()
        self.dim = dim
        self.lambda_c = lambda_c
        self.lambda_s = lambda_s
        self.channel_fc1 = nn.Linear(4 * dim, 4 * dim // reduction)
        self.channel_fc2 = nn.Linear(4 * dim // reduction, 2 * dim)
        self.spatial_conv1 = nn.Conv2d(2 * dim, dim // reduction, 1)
        self.spatial_conv2 = nn.Conv2d(dim // reduction, 2, 1)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, C = x1.shape[:2]
        pair = torch.cat([x1, x2], dim=1)  # B×2C×H×W
        pooled = torch.cat([pair.mean((2, 3)), pair.amax((2, 3))], dim=1)  # B×4C: [avg(x1,x2), max(x1,x2)]
        cw = torch.sigmoid(self.channel_fc2(F.relu(self.channel_fc1(pooled))))
        cw = cw.view(B, 2, C, 1, 1)  # [:, 0] from x1's half, [:, 1] from x2's half
        sw = torch.sigmoid(self.spatial_conv2(F.relu(self.spatial_conv1(pair))))  # B×2×H×W
        w1 = self.lambda_c * cw[:, 1] + self.lambda_s * sw[:, 1:2]  # weights of x2 added to x1
        w2 = self.lambda_c * cw[:, 0] + self.lambda_s * sw[:, 0:1]  # weights of x1 added to x2
        return x1 + w1 * x2, x2 + w2 * x1


class ChannelEmbed(nn.Module):
    """FFM's merge: ``BN(conv1x1_noBias(x) + BN(conv1x1(relu(dw3x3(conv1x1(x))))))``, ``B×C_in×H×W ->
    B×C_out×H×W`` (the releases' ``ChannelEmbed``; ReLU sits between the depth-wise and the last 1×1)."""

    def __init__(self, in_channels: int, out_channels: int, reduction: int = 1) -> None:
        super().__init__()
        hidden = out_channels // reduction
        self.residual = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.conv1 = nn.Conv2d(in_channels, hidden, 1)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.conv2 = nn.Conv2d(hidden, out_channels, 1)
        self.bn = nn.BatchNorm2d(out_channels)
        self.norm = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv2(F.relu(self.dwconv(self.conv1(x)))))
        return self.norm(self.residual(x) + y)


class FFM(nn.Module):
    """Feature Fusion Module: ``(x1, x2)`` (``B×C×H×W`` each) -> fused ``B×C×H×W`` for the head.

    Args:
        dim: C.
        num_heads: heads of the cross-attention (the stage's: 1, 2, 5, 8).
        reduction: width divisor of the attention half and of :class:`ChannelEmbed` (1 in both releases).
    """

    def __init__(self, dim: int, num_heads: int, reduction: int = 1) -> None:
        super().__init__()
        inner = dim // reduction
        if inner % num_heads:
            raise ValueError(f"FFM width {inner} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.inner = inner
        self.in_proj1 = nn.Linear(dim, 2 * inner)
        self.in_proj2 = nn.Linear(dim, 2 * inner)
        self.kv1 = nn.Linear(inner, 2 * inner, bias=False)
        self.kv2 = nn.Linear(inner, 2 * inner, bias=False)
        self.out_proj1 = nn.Linear(2 * inner, dim)
        self.out_proj2 = nn.Linear(2 * inner, dim)
        # torch's default eps (1e-5): the releases build these with nn.LayerNorm(dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.embed = ChannelEmbed(2 * dim, dim, reduction)

    def _context(self, u: torch.Tensor, kv: nn.Linear) -> torch.Tensor:
        """``u``: ``B×N×C'`` -> per-head context ``softmax_{dim=-2}(K^T V / sqrt(d))``, ``B×h×d×d``."""
        B, N, _ = u.shape
        h = self.num_heads
        d = self.inner // h
        k, v = kv(u).view(B, N, 2, h, d).permute(2, 0, 3, 1, 4)  # each B×h×N×d
        return ((k.transpose(-2, -1) @ v) * d**-0.5).softmax(dim=-2)

    def _attend(self, u: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        """Queries ``u`` (``B×N×C'``, unprojected) against the other branch's context -> ``B×N×C'``."""
        B, N, Cp = u.shape
        q = u.view(B, N, self.num_heads, -1).transpose(1, 2)  # B×h×N×d
        return (q @ ctx).transpose(1, 2).reshape(B, N, Cp)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x1.shape
        t1 = x1.flatten(2).transpose(1, 2)  # B×C×H×W -> B×N×C
        t2 = x2.flatten(2).transpose(1, 2)
        y1, u1 = F.relu(self.in_proj1(t1)).chunk(2, dim=-1)  # each B×N×C'
        y2, u2 = F.relu(self.in_proj2(t2)).chunk(2, dim=-1)
        a1 = self._attend(u1, self._context(u2, self.kv2))  # x1's queries, x2's context
        a2 = self._attend(u2, self._context(u1, self.kv1))
        o1 = self.norm1(t1 + self.out_proj1(torch.cat([y1, a1], dim=-1)))
        o2 = self.norm2(t2 + self.out_proj2(torch.cat([y2, a2], dim=-1)))
        merged = torch.cat([o1, o2], dim=-1).transpose(1, 2).reshape(B, 2 * C, H, W)  # B×N×2C -> B×2C×H×W
        return self.embed(merged)


# The releases' names (relative to one FRM / FFM) -> ours; both releases use the same ones. Named
# groups fill the ``str.format`` templates (see :func:`fusion_reference_rules`).
REFERENCE_RULES: dict[str, list[tuple[str, str]]] = {
    "frm": [
        (r"channel_weights\.mlp\.0\.(?P<p>weight|bias)", "channel_fc1.{p}"),
        (r"channel_weights\.mlp\.2\.(?P<p>weight|bias)", "channel_fc2.{p}"),
        (r"spatial_weights\.mlp\.0\.(?P<p>weight|bias)", "spatial_conv1.{p}"),
        (r"spatial_weights\.mlp\.2\.(?P<p>weight|bias)", "spatial_conv2.{p}"),
    ],
    "ffm": [
        (r"cross\.channel_proj(?P<b>[12])\.(?P<p>weight|bias)", "in_proj{b}.{p}"),
        (r"cross\.cross_attn\.kv(?P<b>[12])\.weight", "kv{b}.weight"),
        (r"cross\.end_proj(?P<b>[12])\.(?P<p>weight|bias)", "out_proj{b}.{p}"),
        (r"cross\.norm(?P<b>[12])\.(?P<p>weight|bias)", "norm{b}.{p}"),
        (r"channel_emb\.residual\.weight", "embed.residual.weight"),
        (r"channel_emb\.channel_embed\.0\.(?P<p>weight|bias)", "embed.conv1.{p}"),
        (r"channel_emb\.channel_embed\.1\.(?P<p>weight|bias)", "embed.dwconv.{p}"),
        (r"channel_emb\.channel_embed\.3\.(?P<p>weight|bias)", "embed.conv2.{p}"),
        (r"channel_emb\.channel_embed\.4\.(?P<p>\w+)", "embed.bn.{p}"),  # BN incl. running stats
        (r"channel_emb\.norm\.(?P<p>\w+)", "embed.norm.{p}"),
    ],
}


def prefixed_rules(
    rules: list[tuple[str, str]], src: str, dst: str | Callable[[re.Match[str]], str]
) -> list[tuple[str, Callable[[re.Match[str]], str]]]:
    r"""``(regex, template)`` rules relative to a sub-module, put under a prefix, as
    :func:`~equiseg.models.reference.map_state_dict` rules.

    Args:
        rules: ``(regex with named groups, str.format template of those names)``, relative names.
        src: the release's prefix, a regex with named groups (``r"backbone\.FRMs\.(?P<s>\d)\."``).
        dst: our prefix, a template of the same names (``"frms.{s}."``) or a function of the match.
    """

    def prefix(m: re.Match[str]) -> str:
        return dst(m) if callable(dst) else dst.format(**m.groupdict())

    return [
        (src + pattern, lambda m, t=template: prefix(m) + t.format(**m.groupdict()))
        for pattern, template in rules
    ]


def fusion_reference_rules(
    frm_src: str, frm_dst: str, ffm_src: str, ffm_dst: str
) -> list[tuple[str, Callable[[re.Match[str]], str]]]:
    """The FRM and FFM rules of a release whose stage-s modules live under ``frm_src`` / ``ffm_src``
    (regexes with a named group ``s``, the 0-based stage) and ours under ``frm_dst`` / ``ffm_dst``
    (templates of ``s``)."""
    return prefixed_rules(REFERENCE_RULES["frm"], frm_src, frm_dst) + prefixed_rules(
        REFERENCE_RULES["ffm"], ffm_src, ffm_dst
    )
