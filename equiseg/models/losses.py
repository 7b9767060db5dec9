"""Segmentation losses: cross-entropy (paper Eq. 7) and CMNeXt's OHEM cross-entropy (docs/design.md §3.2).

Both average over the valid (non-ignored) pixels only and return 0, not NaN, for a batch with no
valid pixel. Neither synchronises with the device (no ``.item()``), so they are safe on the hot path.

Both compute in fp32: the logits are cast up explicitly, so the log-softmax and the sums over up to
B·H·W pixels never run in fp16/bf16 whatever the caller's autocast policy (torch's autocast already
lists cross-entropy as fp32, but the mean's sum and the OHEM ranking are ours).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Mean CE over valid pixels. logits ``B×K×H×W``, labels ``B×H×W`` int64."""
    loss = F.cross_entropy(logits.float(), labels, ignore_index=ignore_index, reduction="sum")
    n_valid = (labels != ignore_index).sum().clamp_min(1)
    return loss / n_valid


def ohem_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = 255,
    thresh: float = 0.7,
    min_kept_ratio: float = 1.0 / 16,
) -> torch.Tensor:
    """Online hard example mining CE (CMNeXt's ``OhemCrossEntropy``).

    Keeps the pixels whose loss exceeds ``-log(thresh)`` (probability of the true class below
    ``thresh``); if fewer than ``n_valid·min_kept_ratio`` pixels pass, keeps that many hardest pixels
    instead. Implemented with a rank mask rather than a data-dependent slice, so no host sync.
    """
    loss = F.cross_entropy(logits.float(), labels, ignore_index=ignore_index, reduction="none").flatten()
    valid = (labels != ignore_index).flatten()
    n_min = (valid.sum() * min_kept_ratio).floor().clamp_min(1)
    # rank of each pixel's loss among the valid pixels, hardest first (ignored pixels rank last)
    order = torch.where(valid, loss, loss.new_tensor(-1.0)).argsort(descending=True)
    rank = torch.empty_like(order).scatter_(0, order, torch.arange(order.numel(), device=order.device))
    keep = valid & ((loss > -math.log(thresh)) | (rank < n_min))
    keep = keep.to(loss.dtype)
    return (loss * keep).sum() / keep.sum().clamp_min(1)
