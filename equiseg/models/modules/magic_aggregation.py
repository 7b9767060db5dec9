"""Modality aggregation of MAGIC (ECCV 2024, arXiv 2407.11344) and MAGIC++ (arXiv 2412.16876).

Neither paper has public code; the module is built from their method sections (see
:mod:`equiseg.models.magic` for every choice made where they are silent).

**MAM** (MAGIC's Multi-modal Aggregation Module). The paper: the multi-modal features go through a conv
layer and parallel 3×3 / 7×7 / 11×11 poolings, aggregated and passed through a conv with a sigmoid; then
parallel MLP layers aggregate these with the original features into the semantic feature ``f_se``. That
is the structure of CMNeXt's pooling mixer + conv MLP, so the parts are reused from
:mod:`~equiseg.models.modules.ppx` (:class:`PoolingAttention`, :class:`ConvMlp`). On the ``P`` present
modality maps of one stage::

    y_m = x_m + ls1 · A(BN1(x_m))        every modality, one set of weights, run as one P·B batch
    u   = fuse(y_1 … y_P)                MAM: the mean over the present modalities
    out = u + ls2 · MLP(BN2(u))          B×C×h×w

The mean is the only cross-modal operation: it treats every modality alike, needs no modality order and
takes any number of present modalities (absent ones are simply not in the batch). Layer scales start at
1e-2 (as CMNeXt's blocks), so an untrained MAM is close to the plain modality mean.

**MIM** (MAGIC++'s Multi-modal Interaction Module) = MAM whose fusion is guided channel- and space-wise:
per modality a channel descriptor ``[avgpool(y_m), maxpool(y_m)]`` (2C) through ``Linear -> ReLU ->
Linear`` gives channel logits ``a_m`` (C), and a spatial descriptor ``[mean_c(y_m), max_c(y_m)]``
(2×h×w) through a 7×7 conv gives spatial logits ``s_m`` (h×w); the fused map is
``u = Σ_m softmax_m(a_m + s_m) · y_m`` -- a per-channel, per-pixel convex combination of the present
modalities. With one modality it is that modality (as MAM's mean), and with equal logits it is the mean.
The paper names the two guidances but not their form; this one is CBAM-style (avg+max descriptors, 7×7
spatial conv) and modality-agnostic (softmax over whatever modalities are present).

``weight`` (both): a ``P×B`` bool of which maps of each sample take part in the fusion -- the selected
kept modalities under modality dropout, where a sample has fewer of them than the slots. The mean (MAM)
and the softmax (MIM) run over those only; the per-modality mixer still runs on every slot.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .ppx import ConvMlp, PoolingAttention

__all__ = ["MAM", "MIM"]


class MAM(nn.Module):
    """Multi-modal Aggregation Module: ``P×B×C×h×w`` (present modalities first) -> ``B×C×h×w``.

    Args:
        dim: C.
        mlp_ratio: hidden width of the conv MLP.
        layer_scale: init of the two per-channel layer scales.
    """

    def __init__(self, dim: int, mlp_ratio: float = 4.0, layer_scale: float = 1e-2) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.mixer = PoolingAttention(dim)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = ConvMlp(dim, mlp_ratio)
        self.layer_scale_init = layer_scale
        self.layer_scale1 = nn.Parameter(torch.full((dim,), layer_scale))
        self.layer_scale2 = nn.Parameter(torch.full((dim,), layer_scale))

    def reset_layer_scale(self) -> None:
        """Back to the init value (after a generic ``init_weights`` pass reset every parameter)."""
        nn.init.constant_(self.layer_scale1, self.layer_scale_init)
        nn.init.constant_(self.layer_scale2, self.layer_scale_init)

    def fuse(self, y: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """``P×B×C×h×w -> B×C×h×w``: the mean over the present modalities (those ``weight`` marks)."""
        if weight is None:
            return y.mean(0)
        w = weight.to(y.dtype)
        return (y * w[..., None, None, None]).sum(0) / w.sum(0).clamp_min(1)[:, None, None, None]

    def forward(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        P, B = x.shape[:2]
        flat = x.flatten(0, 1)  # P×B×C×h×w -> (P·B)×C×h×w (a view): one batch through the mixer
        y = flat + self.layer_scale1.view(-1, 1, 1) * self.mixer(self.norm1(flat))
        u = self.fuse(y.view(P, B, *y.shape[1:]), weight)  # -> B×C×h×w
        return u + self.layer_scale2.view(-1, 1, 1) * self.mlp(self.norm2(u))


class MIM(MAM):
    """Multi-modal Interaction Module: :class:`MAM` with channel- and spatial-guided fusion.

    Args:
        dim, mlp_ratio, layer_scale: as :class:`MAM`.
        reduction: hidden width of the channel-guidance MLP is ``max(dim // reduction, 8)`` (the paper
            gives none; 4, with a floor so the narrow stages of small models keep a usable width).
        spatial_kernel: kernel of the spatial-guidance conv (CBAM's 7).
    """

    def __init__(
        self,
        dim: int,
        mlp_ratio: float = 4.0,
        layer_scale: float = 1e-2,
        reduction: int = 4,
        spatial_kernel: int = 7,
    ) -> None:
        super().__init__(dim, mlp_ratio, layer_scale)
        hidden = max(dim // reduction, 8)
        # the logits' last layers have no bias: one shared by every modality cancels in the softmax over
        # modalities (it would never receive a gradient)
        self.channel_fc1 = nn.Linear(2 * dim, hidden)
        self.channel_fc2 = nn.Linear(hidden, dim, bias=False)
        self.spatial_conv = nn.Conv2d(2, 1, spatial_kernel, padding=spatial_kernel // 2, bias=False)

    def guidance(self, y: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Fusion weights ``P×B×C×h×w`` (softmax over the P modalities, or over those ``weight``
        marks) of the maps ``y`` (same shape)."""
        P, B, C, h, w = y.shape
        pooled = torch.cat([y.mean((3, 4)), y.amax((3, 4))], dim=-1)  # P×B×2C
        a = self.channel_fc2(F.relu(self.channel_fc1(pooled)))  # P×B×C channel logits
        desc = torch.stack([y.mean(2), y.amax(2)], dim=2).flatten(0, 1)  # (P·B)×2×h×w
        s = self.spatial_conv(desc).view(P, B, 1, h, w)  # spatial logits
        logits = a[..., None, None] + s
        if weight is not None:  # a very negative finite logit: weight exactly 0, no NaN gradient
            logits = logits.masked_fill(
                ~weight.bool()[..., None, None, None], torch.finfo(logits.dtype).min / 4
            )
        return torch.softmax(logits, dim=0)

    def fuse(self, y: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """``P×B×C×h×w -> B×C×h×w``: channel- and spatial-guided convex combination of the modalities."""
        return (self.guidance(y, weight) * y).sum(0)
