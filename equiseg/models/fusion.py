"""Cross-modal Transformer Block (CMTB), paper §2.1 / Fig. 1(b), SPEC §1.3.

After a stage's MiT blocks have produced ``f'_n`` for every present modality ``n``, each modality takes
the others as auxiliaries:

1. **Self-Query Hub** (CMNeXt's): modality ``m`` has its own score net
   ``s_m = sigmoid(conv1x1(dwconv3x3(x_m)))``; the hub output for primary ``n`` is the element-wise max
   over ``m != n`` of ``s_m·x_m + x_m``. Scores do not depend on the primary, so they are computed once
   per modality and the leave-one-out max is read off the top-2 values along the modality axis.
2. **PPX** (CMNeXt's Parallel Pooling Mixer) turns the hub output into ``f_aux``.
3. **Cross-attention** (Eq. 1): ``f_c = softmax(Q K^T / sqrt(d)) V`` with ``Q`` from ``f'_n`` and
   ``K, V`` from ``f_aux`` (spatially reduced like MiT's attention).
4. **Residual** (Eq. 2): ``f_n = f'_n + f_c``; the stage LayerNorm follows in the encoder.

Maps are kept channels-last throughout (token tensors viewed as ``B×C×H×W`` without copies): on
CPU the depth-wise and 1×1 convolutions and the poolings run several times faster that way.

All primaries run as one batch of ``P·B`` (P present modalities). Only the score nets are per
modality (as the SPEC prescribes); PPX and the cross-attention are shared by all primaries of a stage,
which keeps the block batched and makes it independent of modality order. Ablation switches (paper
Tab. 2): ``hub="mean"`` (leave-one-out mean instead of the hub), ``cross_attention=False``
(``f_n = f'_n + f_aux``), ``residual=False`` (``f_n = f_c``).

A note on a reference defect this avoids: CMNeXt reshapes its already ``B×C×H×W`` auxiliary features
as if they were tokens, scrambling them whenever there is more than one auxiliary; here every reshape
between tokens and maps is annotated and tested.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from equiseg.layers import SRAttention


class SelfQueryHub(nn.Module):
    """Per-modality score nets + leave-one-out max (``mode="selfquery"``) or leave-one-out mean.

    The N score nets are stored as grouped convolutions over the modality-concatenated channels
    (``N·C`` depth-wise 3×3, then ``N`` groups of ``C -> 1``), so they run in two conv calls.
    """

    def __init__(self, dim: int, num_modalities: int, mode: str = "selfquery") -> None:
        super().__init__()
        if mode not in ("selfquery", "mean"):
            raise ValueError(f"hub must be 'selfquery' or 'mean', got {mode!r}")
        self.dim = dim
        self.num_modalities = num_modalities
        self.mode = mode
        if mode == "selfquery":
            n = num_modalities
            self.score_dw = nn.Conv2d(n * dim, n * dim, 3, padding=1, groups=n * dim)
            self.score_pw = nn.Conv2d(n * dim, n, 1, groups=n)

    def scores(self, x: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
        """``x``: ``P×B×H×W×C`` features of the present modalities ``index`` -> scores ``P×B×H×W×1``."""
        P, B, H, W, C = x.shape
        dw_w, dw_b = self.score_dw.weight, self.score_dw.bias
        pw_w, pw_b = self.score_pw.weight, self.score_pw.bias
        if index is not None:  # select the score nets of the present modalities
            dw_w = dw_w.view(self.num_modalities, C, 1, 3, 3)[index].reshape(P * C, 1, 3, 3)
            dw_b = dw_b.view(self.num_modalities, C)[index].reshape(P * C)
            pw_w, pw_b = pw_w[index], pw_b[index]
        # P×B×H×W×C -> B×H×W×(P·C), seen as a channels-last B×(P·C)×H×W map (one copy)
        y = x.permute(1, 2, 3, 0, 4).reshape(B, H, W, P * C).permute(0, 3, 1, 2)
        y = F.conv2d(y, dw_w, dw_b, padding=1, groups=P * C)  # per-modality depth-wise 3×3
        y = y.permute(0, 2, 3, 1).reshape(B, H, W, P, C)
        # per-modality 1×1 conv C -> 1 (the grouped conv's weights), as a contraction over C
        s = torch.einsum("bhwpc,pc->pbhw", y, pw_w.view(P, C)) + pw_b.view(P, 1, 1, 1)
        return torch.sigmoid(s).unsqueeze(-1)  # P×B×H×W×1

    def forward(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """Hub output for every primary. ``x``: ``P×B×H×W×C`` (P >= 2, channels last) -> same shape.

        Args:
            x: stage features of the P present modalities, modality first.
            index: which of the model's N modalities these are (None: all N, in order).
        """
        P = x.shape[0]
        if self.mode == "mean":
            return (x.sum(0, keepdim=True) - x) / (P - 1)
        z = x * (1.0 + self.scores(x, index))  # s_m·x_m + x_m
        top = z.topk(2, dim=0)  # values/indices 2×B×H×W×C
        primary = torch.arange(P, device=x.device).view(P, 1, 1, 1, 1)
        # leave-one-out max: where the max is the primary's own value, take the runner-up
        return torch.where(top.indices[0] == primary, top.values[1], top.values[0])


def box_mean(x: torch.Tensor, k: int) -> torch.Tensor:
    """``avg_pool2d(x, k, stride=1, padding=k//2, count_include_pad=False)`` as two 1-D passes.

    The valid part of a padded window is a rectangle, so the mean over it factorises into a mean over
    valid rows of means over valid columns: 2k instead of k² reads per pixel.
    """
    x = F.avg_pool2d(x, (k, 1), stride=1, padding=(k // 2, 0), count_include_pad=False)
    return F.avg_pool2d(x, (1, k), stride=1, padding=(0, k // 2), count_include_pad=False)


class PoolingAttention(nn.Module):
    """PPX token mixer: dw 7×7 -> u = y + avgpool3/7/11(y) -> sigmoid(1×1 conv(u))·u + u."""

    def __init__(self, dim: int, pool_sizes: tuple[int, ...] = (3, 7, 11)) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.pool_sizes = pool_sizes
        self.gate = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x)
        u = y
        for k in self.pool_sizes:
            u = u + box_mean(y, k)
        return torch.sigmoid(self.gate(u)) * u + u


class ChannelGate(nn.Module):
    """ECA-style channel attention: global average pool -> 1-D conv (k=3) over channels -> sigmoid."""

    def __init__(self, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = x.mean((2, 3)).unsqueeze(1)  # B×1×C
        w = torch.sigmoid(self.conv(w)).transpose(1, 2).unsqueeze(-1)  # B×C×1×1
        return x * w


class ConvMlp(nn.Module):
    """1×1 (C -> rC) -> depth-wise 3×3 -> GELU -> 1×1 (rC -> C), on maps."""

    def __init__(self, dim: int, ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x))))


class PPX(nn.Module):
    """Parallel Pooling Mixer block: BN -> pooling attention (layer-scaled residual) -> channel gate
    -> BN -> MLP (layer-scaled residual). Maps ``B×C×H×W -> B×C×H×W``."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0, layer_scale: float = 1e-2) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.mixer = PoolingAttention(dim)
        self.channel_gate = ChannelGate()
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = ConvMlp(dim, mlp_ratio)
        self.layer_scale_init = layer_scale
        self.layer_scale1 = nn.Parameter(torch.full((dim,), layer_scale))
        self.layer_scale2 = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.layer_scale1.view(-1, 1, 1) * self.mixer(self.norm1(x))
        x = self.channel_gate(x)
        return x + self.layer_scale2.view(-1, 1, 1) * self.mlp(self.norm2(x))


class CMTB(nn.Module):
    """Cross-modal interaction of one stage: hub -> PPX -> cross-attention -> residual add.

    Args:
        dim: the stage's channels ``C_s``.
        num_heads, sr_ratio: the stage's attention settings (shared with MiT).
        num_modalities: N, the number of modality branches the model was built for.
        hub, cross_attention, residual: the Tab. 2 ablation switches.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        sr_ratio: int,
        num_modalities: int,
        *,
        hub: str = "selfquery",
        cross_attention: bool = True,
        residual: bool = True,
        qkv_bias: bool = True,
        ppx_layer_scale: float = 1e-2,
    ) -> None:
        super().__init__()
        self.hub = SelfQueryHub(dim, num_modalities, hub)
        self.ppx = PPX(dim, layer_scale=ppx_layer_scale)
        self.use_cross_attention = cross_attention
        self.residual = residual
        if cross_attention:
            self.cross_attn = SRAttention(dim, num_heads, sr_ratio=sr_ratio, qkv_bias=qkv_bias)

    def forward(
        self, x: torch.Tensor, H: int, W: int, num_present: int, index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Args:
            x: ``(P·B)×L×C`` tokens ``f'`` of the P present modalities, modality-major, L = H·W.
            num_present: P (>= 2).
            index: which of the N modalities are present (None: all, in order).

        Returns:
            ``(P·B)×L×C`` tokens ``f`` (before the stage LayerNorm).
        """
        PB, L, C = x.shape
        P = num_present
        hub = self.hub(x.view(P, PB // P, H, W, C), index)  # P×B×H×W×C
        aux = self.ppx(hub.view(PB, H, W, C).permute(0, 3, 1, 2))  # f_aux, (P·B)×C×H×W channels-last
        aux = aux.permute(0, 2, 3, 1).reshape(PB, L, C)  # -> (P·B)×L×C tokens (a view)
        fc = self.cross_attn(x, H, W, context=aux) if self.use_cross_attention else aux  # Eq. (1)
        return x + fc if self.residual else fc  # Eq. (2)
