"""Cross-modal Transformer Block (CMTB), paper §2.1 / Fig. 1(b), docs/design.md §1.5.

After a stage's MiT blocks have produced ``f'_n`` for every present modality ``n``, each modality takes
the others as auxiliaries:

1. **Self-Query Hub** (CMNeXt's): modality ``m`` has its own score net
   ``s_m = sigmoid(conv1x1(dwconv3x3(x_m)))``; the hub output for primary ``n`` is the element-wise max
   over ``m != n`` of ``s_m·x_m + x_m``. Scores do not depend on the primary, so they are computed once
   per modality and the leave-one-out max comes from running maxima along the modality axis.
2. **PPX** (CMNeXt's Parallel Pooling Mixer) turns the hub output into ``f_aux``.
3. **Cross-attention** (Eq. 1): ``f_c = softmax(Q K^T / sqrt(d)) V`` with ``Q`` from ``f'_n`` and
   ``K, V`` from ``f_aux`` (spatially reduced like MiT's attention).
4. **Residual** (Eq. 2): ``f_n = f'_n + f_c``; the stage LayerNorm follows in the encoder.

Maps are kept channels-last throughout (token tensors viewed as ``B×C×H×W`` without copies): on
CPU the depth-wise and 1×1 convolutions and the poolings run several times faster that way.

All primaries run as one batch of ``P·B`` (P present modalities). Only the score nets are per
modality (as in CMNeXt's hub); PPX and the cross-attention are shared by all primaries of a stage,
which keeps the block batched and makes it independent of modality order. Ablation switches (paper
Tab. 2): ``hub="mean"`` (leave-one-out mean instead of the hub), ``cross_attention=False``
(``f_n = f'_n + f_aux``), ``residual=False`` (``f_n = f_c``).

The hub lives in :mod:`.hub`, PPX in :mod:`.ppx` (both shared with CMNeXt). A note on a reference
defect this avoids: CMNeXt reshapes its already ``B×C×H×W`` auxiliary features
as if they were tokens, scrambling them whenever there is more than one auxiliary; here every reshape
between tokens and maps is annotated and tested.
"""

from __future__ import annotations

import torch
from torch import nn

from equiseg.layers import SRAttention

from .hub import SelfQueryHub
from .ppx import PPX


class CMTB(nn.Module):
    """Cross-modal interaction of one stage: hub -> PPX -> cross-attention -> residual add.

    Args:
        dim: the stage's channels ``C_s``.
        num_heads, sr_ratio: the stage's attention settings (shared with MiT).
        num_modalities: N, the number of modality branches the model was built for.
        hub, cross_attention, residual: the Tab. 2 ablation switches.
        ppx_depth, ppx_mlp_ratio: PPX blocks in this stage and their MLP ratio (the paper leaves both
            open; defaults: one block, CMNeXt's ratio of the stage).
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
        ppx_depth: int = 1,
        ppx_mlp_ratio: float = 8.0,
    ) -> None:
        super().__init__()
        self.hub = SelfQueryHub(dim, num_modalities, hub)
        self.ppx = nn.Sequential(
            *[PPX(dim, mlp_ratio=ppx_mlp_ratio, layer_scale=ppx_layer_scale) for _ in range(ppx_depth)]
        )
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
