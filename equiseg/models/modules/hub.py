"""Self-Query Hub (CMNeXt's, docs/design.md §1.5 step 1): per-modality score nets and a max over auxiliaries.

Modality ``m`` has its own score net ``s_m = sigmoid(conv1x1_{C->1}(dwconv3x3(x_m)))`` and contributes
``s_m·x_m + x_m``; the hub output is the element-wise max of those over the auxiliaries. Shared by
EQUISeg (every modality is a primary: a leave-one-out max for each, :meth:`SelfQueryHub.forward`) and
CMNeXt (RGB is the primary, all others are auxiliaries: :meth:`SelfQueryHub.max_all`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _running_loo_max(z: torch.Tensor) -> torch.Tensor:
    P = z.shape[0]
    if P == 2:
        return z.flip(0)
    pre = [z[0]]
    for i in range(1, P - 1):
        pre.append(torch.maximum(pre[-1], z[i]))
    suf = [z[P - 1]]
    for i in range(P - 2, 0, -1):
        suf.append(torch.maximum(suf[-1], z[i]))
    suf.reverse()  # suf[j] = max z[j+1 .. P-1]
    inner = [torch.maximum(pre[n - 1], suf[n]) for n in range(1, P - 1)]
    return torch.stack([suf[0], *inner, pre[P - 2]])


class _LeaveOneOutMax(torch.autograd.Function):
    """The leave-one-out max with a backward that reads the winners off the output.

    For every element, ``out[n]`` is the overall maximum ``m1`` for every ``n`` but the argmax, whose
    output is the runner-up ``m2``. So ``m1 = max(out[0], out[1])``, ``m2 = min_n out[n]``, the argmax
    primary is where ``out != m1``, and ``dz[m] = [z_m = m1]·(Σ_n g_n - g_argmax) + [z_m = m2]·g_argmax``:
    about ten element-wise passes instead of autograd's chain of ``maximum`` backwards.
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor) -> torch.Tensor:
        out = _running_loo_max(z)
        ctx.save_for_backward(z, out)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        z, out = ctx.saved_tensors
        m1 = torch.maximum(out[0], out[1])
        m2 = out[0]
        for n in range(1, out.shape[0]):
            m2 = torch.minimum(m2, out[n])
        g_top = (g * (out != m1)).sum(0)  # the gradient of the argmax primary's own output
        return (z == m1) * (g.sum(0) - g_top) + (z == m2) * g_top


def leave_one_out_max(z: torch.Tensor) -> torch.Tensor:
    """``out[n] = max_{m != n} z[m]`` along dim 0 (``P >= 2``), from running maxima.

    With prefix maxima ``pre[i] = max z[0..i]`` and suffix maxima ``suf[i] = max z[i..P-1]``,
    ``out[n] = max(pre[n-1], suf[n+1])``: ``3P - 6`` element-wise maxima, no sort. Against the former
    ``topk(2)`` + ``where`` it is several times faster forward and clearly faster forward + backward
    on a stage-1 map, with identical values and gradients (measured: README, Performance).

    Ties: where the maximum is reached by two auxiliaries exactly, each receives the whole gradient of
    the primaries it wins for (autograd's ``amax`` would split it; a top-k gives it to one). Continuous
    features essentially never tie.
    """
    if z.requires_grad and torch.is_grad_enabled():
        return _LeaveOneOutMax.apply(z)
    return _running_loo_max(z)


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
        return leave_one_out_max(z)

    def max_all(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """One hub output over *all* P modalities of ``x`` (``P×B×H×W×C`` -> ``B×H×W×C``): CMNeXt's
        auxiliary hub, where the primary (RGB) is not among them. ``mode="mean"``: their mean."""
        if self.mode == "mean":
            return x.mean(0)
        return (x * (1.0 + self.scores(x, index))).amax(0)
