"""Semantic-segmentation metrics from one confusion matrix over a whole split (docs/design.md §5).

The matrix sums intersections and unions over every pixel of the split (not per-image means). Two
conventions exist for classes that never occur in the ground truth or the predictions ("no union"):

- ``"reference"``: their IoU counts as 0 and mIoU averages over *all* classes, likewise mAcc counts a
  class with no ground-truth pixels as 0 % accuracy. This is what CMNeXt/DeLiVER and the MMSS
  robustness benchmark compute, so every published number uses it: use it to compare with papers.
- ``"present"``: such classes are left out of the means (mmseg's ``nanmean``); a class absent from the
  ground truth is left out of mAcc.

aAcc (overall pixel accuracy) is the same under both. All values are percentages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.distributed as dist

Convention = Literal["reference", "present"]
CONVENTIONS: tuple[str, ...] = ("reference", "present")


def class_ids(logits: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """The predicted class of every pixel: the index of the largest logit along ``dim``.

    The same indices as ``logits.argmax(dim)`` (the first maximum on ties, NaN wins), from
    ``logits.max(dim)``, whose CPU kernel is several times faster than argmax's over a non-innermost
    dimension (measured: README, Performance, and docs/results/benchmarks/code_notes.md).
    """
    return logits.max(dim).indices


class SegMetrics:
    """Confusion-matrix accumulator for semantic segmentation.

    The matrix lives on the device of the first ``update`` (or ``device``) so that accumulating never
    synchronises with the host: ``update`` is a handful of element-wise ops and one ``scatter_add_``.
    Rows are ground-truth classes, columns predicted classes.

    Besides the ``K×K`` matrix the accumulator keeps three overflow bins: pixels whose target equals
    ``ignore_index`` (skipped, as intended), pixels whose target is outside ``[0, K)`` and is not the
    ignore index, and pixels with a valid target but a prediction outside ``[0, K)``. The last two are
    bugs in the caller (a label map not converted to train ids, a wrong ``num_classes``); checking for
    them per call would need a host sync, so :meth:`compute` raises if any were seen.

    Args:
        num_classes: Number of classes ``K``.
        ignore_index: Target value to skip (255 for every dataset here); ``None`` to ignore nothing.
        class_names: Optional ``K`` names used as keys of ``per_class``; defaults to ``"0"`` … ``"K-1"``.
        device: Device of the matrix; by default that of the first ``update`` call.

    Example:
        >>> m = SegMetrics(3)
        >>> m.update(torch.tensor([[0, 1], [2, 2]]), torch.tensor([[0, 1], [1, 255]]))
        >>> round(m.compute()["aAcc"], 2)
        66.67
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = 255,
        class_names: Sequence[str] | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"got {len(class_names)} class names for {num_classes} classes")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.class_names = [str(n) for n in class_names] if class_names is not None else None
        k2 = self.num_classes * self.num_classes
        # Flat counts: [K*K confusion entries | ignored | target out of range | prediction out of range].
        self._bin_ignored, self._bin_bad_target, self._bin_bad_pred = k2, k2 + 1, k2 + 2
        self._counts = torch.zeros(k2 + 3, dtype=torch.int64, device=device)
        self._device_fixed = device is not None
        self._reduced = False

    # ------------------------------------------------------------------ accumulation

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch to the matrix.

        Args:
            pred: Predicted class ids, ``B×H×W`` or ``H×W`` (any integer dtype), or logits with one more
                dimension (``B×K×H×W`` / ``K×H×W``), which are arg-maxed over the class dimension.
            target: Ground-truth class ids of the same shape as the (arg-maxed) prediction.
        """
        if self._reduced:
            raise RuntimeError(
                "SegMetrics.update() after all_reduce(): the matrix already holds every rank's counts; "
                "call reset() first"
            )
        if pred.ndim == target.ndim + 1:
            pred = class_ids(pred, dim=-3)  # (B)×K×H×W logits -> (B)×H×W ids
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
        if pred.is_floating_point() or target.is_floating_point():
            raise TypeError(f"expected integer class ids, got {pred.dtype} / {target.dtype}")
        if not self._device_fixed:
            self._counts = self._counts.to(target.device)
            self._device_fixed = True
        k = self.num_classes
        t = target.reshape(-1).to(device=self._counts.device, dtype=torch.int64)
        p = pred.reshape(-1).to(device=self._counts.device, dtype=torch.int64)
        idx = torch.where((p >= 0) & (p < k), t * k + p, self._bin_bad_pred)
        idx = torch.where((t >= 0) & (t < k), idx, self._bin_bad_target)
        if self.ignore_index is not None:
            idx = idx.masked_fill(t == self.ignore_index, self._bin_ignored)
        # scatter_add_ into a fixed-size buffer: unlike bincount it never reads max() back to the host.
        ones = torch.ones(1, dtype=torch.int64, device=idx.device).expand_as(idx)
        self._counts.scatter_add_(0, idx, ones)

    def reset(self) -> None:
        """Zero the matrix (keeps the device)."""
        self._counts.zero_()
        self._reduced = False

    def merge(self, other: SegMetrics) -> SegMetrics:
        """Add another accumulator's counts to this one (e.g. per-case matrices into an overall one)."""
        if other.num_classes != self.num_classes or other.ignore_index != self.ignore_index:
            raise ValueError(
                f"cannot merge SegMetrics(num_classes={other.num_classes}, ignore_index={other.ignore_index})"
                f" into SegMetrics(num_classes={self.num_classes}, ignore_index={self.ignore_index})"
            )
        self._counts += other._counts.to(self._counts.device)
        return self

    def all_reduce(self) -> None:
        """Sum the matrix over all ranks when ``torch.distributed`` is initialised; a no-op otherwise.

        Call it once, after the last ``update`` of every rank (it is a collective: every rank must call
        it). The matrix must be on a device the backend supports (CPU for gloo, CUDA for NCCL).
        """
        if self._reduced:
            raise RuntimeError("SegMetrics.all_reduce() called twice; the counts would be summed again")
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(self._counts, op=dist.ReduceOp.SUM)
            self._reduced = True

    # ------------------------------------------------------------------ results

    @property
    def matrix(self) -> torch.Tensor:
        """The ``K×K`` confusion matrix (rows: ground truth, columns: prediction), a view of the counts."""
        k = self.num_classes
        return self._counts[: k * k].view(k, k)

    @property
    def num_ignored(self) -> int:
        """Number of pixels skipped because their target was ``ignore_index`` (syncs with the device)."""
        return int(self._counts[self._bin_ignored])

    def compute(self, convention: Convention = "reference") -> dict[str, Any]:
        """Compute the metrics from the accumulated matrix.

        With ``TP_c`` the diagonal, ``GT_c`` the row sums and ``PD_c`` the column sums:
        ``IoU_c = TP_c / (GT_c + PD_c - TP_c)``, ``Acc_c = TP_c / GT_c``, ``aAcc = ΣTP / ΣGT``.

        Args:
            convention: ``"reference"`` (classes with no union count as IoU 0, classes with no ground
                truth as Acc 0, means over all ``K`` classes; published numbers) or ``"present"``
                (such classes left out of the means; mmseg).

        Returns:
            ``{"mIoU", "aAcc", "mAcc"}`` as floats in %, ``"per_class"``: ``{name: {"IoU", "Acc"}}`` in %
            (``None`` for a class left out under ``"present"``, 0.0 under ``"reference"``),
            ``"absent_classes"``: names of the classes with no union, ``"num_pixels"``: the number of
            pixels scored, and ``"convention"``.

        Raises:
            ValueError: On an unknown convention, or if any pixel had a target or prediction outside
                ``[0, num_classes)`` other than ``ignore_index``.
        """
        if convention not in CONVENTIONS:
            raise ValueError(f"unknown metric convention {convention!r}; choose from {CONVENTIONS}")
        counts = self._counts.detach().to("cpu", torch.float64)
        bad_target, bad_pred = int(counts[self._bin_bad_target]), int(counts[self._bin_bad_pred])
        if bad_target or bad_pred:
            raise ValueError(
                f"{bad_target} target pixel(s) outside [0, {self.num_classes}) and not ignore_index="
                f"{self.ignore_index}, and {bad_pred} prediction(s) outside [0, {self.num_classes}) were "
                "seen: labels must be mapped to train ids before scoring"
            )
        k = self.num_classes
        mat = counts[: k * k].view(k, k)
        tp = mat.diagonal()
        gt = mat.sum(dim=1)
        pd = mat.sum(dim=0)
        union = gt + pd - tp
        iou = torch.where(union > 0, tp / union.clamp(min=1), torch.nan)
        acc = torch.where(gt > 0, tp / gt.clamp(min=1), torch.nan)
        total = gt.sum()
        a_acc = float(tp.sum() / total) * 100 if total > 0 else float("nan")
        if convention == "reference":
            iou, acc = iou.nan_to_num(0.0), acc.nan_to_num(0.0)
        # "present": nanmean; a split with no scored pixel gives NaN, as there is nothing to average.
        m_iou = float(iou.nanmean()) * 100
        m_acc = float(acc.nanmean()) * 100
        names = self.class_names or [str(c) for c in range(k)]
        per_class = {
            name: {"IoU": _pct_or_none(i), "Acc": _pct_or_none(a)}
            for name, i, a in zip(names, iou.tolist(), acc.tolist(), strict=True)
        }
        absent = [name for name, u in zip(names, union.tolist(), strict=True) if u == 0]
        return {
            "mIoU": m_iou,
            "aAcc": a_acc,
            "mAcc": m_acc,
            "per_class": per_class,
            "absent_classes": absent,
            "num_pixels": int(total),
            "convention": convention,
        }

    # ------------------------------------------------------------------ (de)serialisation

    def state_dict(self) -> dict[str, Any]:
        """Plain-typed state (loadable with ``torch.load(weights_only=True)``)."""
        return {
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
            "counts": self._counts.detach().cpu().clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore counts written by :meth:`state_dict` (moved to this accumulator's device)."""
        if state["num_classes"] != self.num_classes or state["ignore_index"] != self.ignore_index:
            raise ValueError(
                f"state is for num_classes={state['num_classes']}, ignore_index={state['ignore_index']}; "
                f"this accumulator has num_classes={self.num_classes}, ignore_index={self.ignore_index}"
            )
        counts = state["counts"]
        if counts.shape != self._counts.shape:
            raise ValueError(f"counts of shape {tuple(counts.shape)}, expected {tuple(self._counts.shape)}")
        self._counts = counts.to(device=self._counts.device, dtype=torch.int64).clone()
        self._reduced = False

    def __repr__(self) -> str:
        return (
            f"SegMetrics(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
            f"device={self._counts.device})"
        )


def _pct_or_none(x: float) -> float | None:
    return None if x != x else x * 100  # NaN -> None (valid JSON)
