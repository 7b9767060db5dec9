"""StitchFusion's per-stage fusion of the modality features for the head (``FeatureCross``,
docs/design.md §8.5).

For the M modality maps ``x_1 … x_M`` (``B×C×h×w``) of a stage:

    s   = Linear_{M·C -> C}(concat_c(x_1, …, x_M))                     (per pixel)
    u   = BN1(pw1(fc1(s)))                                            (fc1: Linear C -> C; pw1: 1×1 conv)
    v   = u + dw3(u) + dw5(u) + dw7(u)                                (depth-wise, "same" padding, biased)
    out = fc2(GELU(BN2(pw2(v)))) + s · SE(s)

with ``SE(s) = sigmoid(W2 · ReLU(W1 · avgpool(s)))`` (no biases, reduction 16). The released code calls
the first part ``MixFFN`` and the second ``ChannelAttentionBlock``; the SE gate is a *parallel* branch
added to the MixFFN output, not a gate on it, and the MixFFN keeps the identity term ``u +``.

Computed in an equivalent, cheaper order: ``fc1`` and ``pw1`` are consecutive linear maps and are merged
on the fly into one ``C×C`` map; the identity and the three depth-wise convolutions, all linear and
centred, are merged into one depth-wise 7×7 kernel (3×3 and 5×5 zero-padded, +1 at the centre). The
parameters (and so the gradients and the state dict) are those of the original layers.

Open points, decided here:

* The SE hidden width is ``C // 16`` as in the release. For C < 16 (test-sized models only; every MiT
  size has C >= 32) that is zero channels: the release's gate is then the constant ``sigmoid(0) = 1/2``,
  which is what is computed here, without the zero-element weights (``se_reduce``/``se_expand`` are
  None).
* Absent modalities (``present``) contribute zeros to the concatenation, i.e. their column blocks of
  the fusion Linear are left out of the product (the same numbers as zero-filled slots, without them).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class FeatureCross(nn.Module):
    """Fuse the M modality maps of one stage into one ``B×C×h×w`` map (module docstring).

    Args:
        dim: C.
        num_modalities: M, the slots of the fusion Linear (all of the model's modalities).
        reduction: SE reduction (16 in the release).
    """

    def __init__(self, dim: int, num_modalities: int, reduction: int = 16) -> None:
        super().__init__()
        self.dim, self.num_modalities = dim, num_modalities
        self.fuse = nn.Linear(num_modalities * dim, dim)  # input columns: modality-major [x_1 | x_2 | ...]
        self.fc1 = nn.Linear(dim, dim)
        self.pw1 = nn.Conv2d(dim, dim, 1)
        self.bn1 = nn.BatchNorm2d(dim)
        self.dw3 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.dw5 = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.dw7 = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.pw2 = nn.Conv2d(dim, dim, 1)
        self.bn2 = nn.BatchNorm2d(dim)
        self.fc2 = nn.Linear(dim, dim)
        hidden = dim // reduction
        self.se_reduce = nn.Linear(dim, hidden, bias=False) if hidden else None
        self.se_expand = nn.Linear(hidden, dim, bias=False) if hidden else None

    def _merged_dw(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Identity + dw3 + dw5 + dw7 as one depth-wise 7×7 kernel ``C×1×7×7`` and bias ``C``."""
        k = self.dw7.weight + F.pad(self.dw5.weight, (1, 1, 1, 1)) + F.pad(self.dw3.weight, (2, 2, 2, 2))
        k = k + F.pad(k.new_ones(self.dim, 1, 1, 1), (3, 3, 3, 3))  # the identity term u +
        return k, self.dw3.bias + self.dw5.bias + self.dw7.bias

    def forward(self, feats: torch.Tensor, present: Sequence[int] | None = None) -> torch.Tensor:
        """Fuse one stage.

        Args:
            feats: ``P×B×C×h×w`` maps of the P present modalities (channels-last per map is fastest).
            present: which of the M modalities these are, ascending (None: all M, in order).

        Returns:
            ``B×C×h×w`` (channels-last).
        """
        P, B, C, h, w = feats.shape
        M = self.num_modalities
        tok = feats.permute(0, 1, 3, 4, 2).reshape(P, B * h * w, C)  # P×N×C (a view when channels-last)
        wf = self.fuse.weight.view(C, M, C)  # D×M×C: the block of modality m is wf[:, m]
        if present is not None and len(present) < M:
            wf = wf[:, list(present)]
        elif P != M:
            raise ValueError(f"FeatureCross got {P} modality maps without their indices, expected {M}")
        s = torch.einsum("pnc,dpc->nd", tok, wf) + self.fuse.bias  # N×C, N = B·h·w
        # fc1 then pw1 (1×1 conv): one merged C×C map
        pw1 = self.pw1.weight.view(C, C)
        u = F.linear(s, pw1 @ self.fc1.weight, pw1 @ self.fc1.bias + self.pw1.bias)
        u = self.bn1(u.view(B, h, w, C).permute(0, 3, 1, 2))  # N×C -> B×C×h×w (channels-last view)
        k, kb = self._merged_dw()
        v = F.conv2d(u, k, kb, padding=3, groups=C)
        v = v.permute(0, 2, 3, 1).reshape(-1, C)  # B×C×h×w -> N×C (a view when channels-last)
        y = F.linear(v, self.pw2.weight.view(C, C), self.pw2.bias)
        y = self.bn2(y.view(B, h, w, C).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # B×h×w×C
        y = self.fc2(F.gelu(y)).reshape(B, h * w, C)
        # SE branch on s: per-sample channel gate
        s = s.view(B, h * w, C)
        if self.se_reduce is None:  # zero-width SE: sigmoid(0)
            out = y + 0.5 * s
        else:
            gate = torch.sigmoid(self.se_expand(F.relu(self.se_reduce(s.mean(1)))))  # B×C
            out = y + s * gate.unsqueeze(1)  # B×(h·w)×C
        return out.view(B, h, w, C).permute(0, 3, 1, 2)  # -> B×C×h×w, channels-last
