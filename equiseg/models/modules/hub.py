"""Self-Query Hub (CMNeXt's, SPEC §1.3 step 1): per-modality score nets and a max over auxiliaries.

Modality ``m`` has its own score net ``s_m = sigmoid(conv1x1_{C->1}(dwconv3x3(x_m)))`` and contributes
``s_m·x_m + x_m``; the hub output is the element-wise max of those over the auxiliaries. Shared by
EQUISeg (every modality is a primary: a leave-one-out max for each, :meth:`SelfQueryHub.forward`) and
CMNeXt (RGB is the primary, all others are auxiliaries: :meth:`SelfQueryHub.max_all`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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

    def max_all(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """One hub output over *all* P modalities of ``x`` (``P×B×H×W×C`` -> ``B×H×W×C``): CMNeXt's
        auxiliary hub, where the primary (RGB) is not among them. ``mode="mean"``: their mean."""
        if self.mode == "mean":
            return x.mean(0)
        return (x * (1.0 + self.scores(x, index))).amax(0)
