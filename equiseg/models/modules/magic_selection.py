"""Modality selection of MAGIC (ASM, arXiv 2407.11344) and MAGIC++ (MASM, arXiv 2412.16876), and the
two training losses it drives. Training only: at inference MAGIC predicts from the aggregate alone.

**Cross-modal semantic similarity ranking** (both papers): the aggregated feature ``f_se`` is the
benchmark; each present modality's feature is scored by its cosine similarity to it, and the modalities
are ranked. The most similar is the most *robust*, the least similar the most *fragile*; the selected
set ``f_rf`` = the top-k and the bottom-k (papers: Top-1 and Last-1), the rest ``f_rm`` = the others.

* :class:`ASM` (MAGIC) scores one cosine per sample and modality over the whole stage map (``C·h·w``
  flattened): a ranking per sample, as a batch of samples can have different failing sensors.
* :class:`MASM` (MAGIC++, "multi-scale": similarity "at hierarchical feature spaces") averages that
  cosine with the cosines of ``g×g`` average-pooled versions of both maps (``g`` in ``grids``, default
  1, 2, 4: from the global descriptor up), so a modality that agrees with the aggregate in layout but
  not in detail, or the reverse, is ranked by both. Both rank every stage (docs/design.md §8.6;
  ``scope="shared"`` ranks once per sample from the mean over the stages instead).

The ranking is one ``sort`` over the modality axis for all samples (no Python loop over samples) and runs
without gradient: the selection is discrete.

**Kept modalities** (``keep``, modality dropout with zero-filled inputs): a sample ranks only the
modalities it kept -- the dropped ones are sorted after them and never selected -- so robust and fragile
are the best and worst *kept* ones and the rest is what lies between; a sample with ``n`` kept
modalities has fewer than the usual selected or remaining ones when ``n < P``. The index tensors keep
their fixed shapes and come with a validity mask (:meth:`Selection.selected_slots`,
:meth:`Selection.rest_slots`): an invalid slot points at a kept modality of the sample and has weight 0
in the fusion (:class:`~equiseg.models.modules.magic_aggregation.MAM`'s ``weight``) and in
``consistency_loss``. With every modality kept the slots are exactly ``selected`` / ``rest``, all valid.

**Losses.** ``selective_labels``: MAGIC's prediction-level selection training supervises the
prediction from the selected features ``P_s`` with the labels only where the aggregate's prediction
``argmax P_m`` agrees with them (the rest ignored): ``L_S = CE(P_s, M)``. ``consistency_loss``: MAGIC's
cross-modal semantic consistency training on the rest ``f_rm``: for each remaining modality ``r`` the
class-wise similarity profile to the salient feature ``f_sa`` -- cosine of the class prototypes (mean
feature over the pixels of each class present in the sample), softmax over those classes with
temperature τ -- and ``L_C = Σ_r KL(c_r ‖ c̄)``, ``c̄`` their mean: for the paper's two remaining
modalities exactly its ``Σ_k c1 log(c1/½(c1+c2)) + c2 log(c2/½(c1+c2))`` (the Jensen-Shannon
divergence without the ½), generalised to any number of them; 0 with fewer than two.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ASM", "MASM", "Selection", "consistency_loss", "gather_modalities", "selective_labels"]


@dataclass(frozen=True)
class Selection:
    """One stage's ranking. ``order``: ``P×B`` indices into the present modalities (dim 0 of the stage
    features), most similar to the aggregate first, per sample; ``k``: how many robust / fragile."""

    order: torch.Tensor
    k: int
    kept: torch.Tensor | None = None  # B: how many modalities each sample kept (they lead ``order``)

    @property
    def robust(self) -> torch.Tensor:
        """``k×B``: the most similar modalities (the most robust), best first."""
        return self.order[: self.k]

    @property
    def fragile(self) -> torch.Tensor:
        """``k×B``: the least similar modalities (the most fragile), least similar last."""
        return self.order[-self.k :]

    @property
    def selected(self) -> torch.Tensor:
        """``S×B``: robust then fragile (``f_rf``); all ``P`` (in rank order) when ``2k >= P``."""
        P = self.order.shape[0]
        if 2 * self.k >= P:
            return self.order
        return torch.cat([self.order[: self.k], self.order[P - self.k :]])

    @property
    def rest(self) -> torch.Tensor:
        """``R×B``: the remaining modalities (``f_rm``), in rank order; ``0×B`` when ``2k >= P``."""
        P = self.order.shape[0]
        return self.order[self.k : max(P - self.k, self.k)]

    def _slots(self, positions: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rank positions ``S×B`` (invalid ones redirected to position 0, a kept modality) -> indices
        into the modalities and the validity mask."""
        positions = torch.where(valid, positions, torch.zeros_like(positions))
        return self.order.gather(0, positions), valid

    def selected_slots(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``selected`` of each sample's kept modalities: indices ``S×B`` and a bool validity mask
        (``S = min(2k, P)``, as :attr:`selected`; all valid when every modality was kept)."""
        P, B = self.order.shape
        dev = self.order.device
        n = self.kept if self.kept is not None else torch.full((B,), P, device=dev)
        if 2 * self.k >= P:
            pos = torch.arange(P, device=dev)[:, None].expand(P, B)
            return self._slots(pos, pos < n)
        j = torch.arange(self.k, device=dev)[:, None]
        robust = j.expand(self.k, B)
        fragile = n - self.k + j  # the last k kept; those overlapping the robust ones are invalid
        pos = torch.cat([robust, fragile])
        valid = torch.cat([robust < n, fragile >= self.k])
        return self._slots(pos, valid)

    def rest_slots(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``rest`` of each sample's kept modalities (ranks ``k .. n-k-1``): indices ``R×B`` and a bool
        validity mask (``R`` as :attr:`rest`; all valid when every modality was kept)."""
        P, B = self.order.shape
        dev = self.order.device
        R = max(P - 2 * self.k, 0)
        n = self.kept if self.kept is not None else torch.full((B,), P, device=dev)
        pos = (self.k + torch.arange(R, device=dev))[:, None].expand(R, B)
        return self._slots(pos, pos < n - self.k)


def gather_modalities(feats: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Per-sample modality pick: ``feats`` ``P×B×C×h×w``, ``index`` ``R×B`` -> ``R×B×C×h×w`` with
    ``out[r, b] = feats[index[r, b], b]`` (one indexing op for all samples)."""
    batch = torch.arange(feats.shape[1], device=feats.device)
    return feats[index, batch]


def _cosine(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine per modality and sample over all of ``C×h×w``: ``a`` ``P×B×C×h×w``, ``b`` ``B×C×h×w`` -> ``P×B``.
    Sums over the axes (no flatten) so channels-last views need no copy."""
    dot = (a * b).sum((2, 3, 4))
    na = a.pow(2).sum((2, 3, 4)).sqrt()
    nb = b.pow(2).sum((1, 2, 3)).sqrt()
    return dot / (na * nb).clamp_min(eps)


class ASM(nn.Module):
    """Arbitrary-modal Selection Module (MAGIC): rank the present modalities per sample by the cosine
    similarity of their stage features to the aggregated feature. No parameters.

    Args:
        num_selected: k, the number of robust and of fragile modalities kept (papers: 1).
    """

    def __init__(self, num_selected: int = 1) -> None:
        super().__init__()
        if num_selected < 1:
            raise ValueError(f"num_selected must be >= 1, got {num_selected}")
        self.num_selected = num_selected

    def similarity(self, feats: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
        """``feats`` ``P×B×C×h×w``, ``fused`` ``B×C×h×w`` -> cosine similarities ``P×B``."""
        return _cosine(feats, fused)

    @torch.no_grad()
    def forward(
        self,
        feats: Sequence[torch.Tensor],
        fused: Sequence[torch.Tensor],
        scope: str = "stage",
        keep: torch.Tensor | None = None,
    ) -> list[Selection]:
        """Rank every stage. ``feats``: per stage ``P×B×C×h×w``; ``fused``: per stage ``B×C×h×w``.

        Args:
            scope: ``"stage"`` -- each stage by its own similarities; ``"shared"`` -- one ranking per
                sample from the similarities averaged over the stages, used at every stage.
            keep: ``P×B`` bool, the modalities each sample kept (the module docstring); None: all.
        """
        if scope not in ("stage", "shared"):
            raise ValueError(f"scope must be 'stage' or 'shared', got {scope!r}")
        scores = torch.stack([self.similarity(f, u).float() for f, u in zip(feats, fused)])  # S×P×B
        if scope == "shared":
            scores = scores.mean(0, keepdim=True).expand_as(scores)
        kept = None
        if keep is not None:  # dropped modalities rank after every kept one
            scores = scores.masked_fill(~keep.bool(), float("-inf"))
            kept = keep.sum(0)
        # one sort for all stages and samples; stable, so ties keep the model's modality order
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices  # S×P×B
        k = min(self.num_selected, order.shape[1])
        return [Selection(o, k, kept) for o in order]


class MASM(ASM):
    """Multi-scale Arbitrary-modal Selection Module (MAGIC++): the similarity is the mean of the
    full-map cosine and the cosines of the maps average-pooled to ``g×g`` for each ``g`` in ``grids``.

    Args:
        num_selected: as :class:`ASM`.
        grids: pooled grid sizes (positive); ``()`` makes it :class:`ASM`.
    """

    def __init__(self, num_selected: int = 1, grids: Sequence[int] = (1, 2, 4)) -> None:
        super().__init__(num_selected)
        if any(int(g) < 1 for g in grids):
            raise ValueError(f"grids must be positive sizes, got {tuple(grids)}")
        self.grids = tuple(int(g) for g in grids)

    def similarity(self, feats: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
        P, B = feats.shape[:2]
        total = _cosine(feats, fused)
        flat = feats.flatten(0, 1)  # (P·B)×C×h×w
        for g in self.grids:
            pf = F.adaptive_avg_pool2d(flat, g)
            pf = pf.view(P, B, *pf.shape[1:])  # P×B×C×g×g
            total = total + _cosine(pf, F.adaptive_avg_pool2d(fused, g))
        return total / (1 + len(self.grids))


def selective_labels(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """MAGIC's selection-training target ``M``: the label where ``argmax`` of the aggregate's logits
    (``B×K×H×W``) equals it, ``ignore_index`` elsewhere. ``B×H×W`` int64."""
    pred = logits.detach().max(1).indices  # = argmax(1), several times faster on CPU
    return torch.where(pred == labels, labels, torch.full_like(labels, ignore_index))


def consistency_loss(
    rest: torch.Tensor,
    salient: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    ignore_index: int = 255,
    temperature: float = 0.1,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-modal semantic consistency ``L_C`` of one stage (see the module docstring).

    Args:
        rest: ``R×B×C×h×w`` features of the remaining (non-selected) modalities, per sample.
        salient: ``B×C×h×w`` the salient feature ``f_sa`` of the selected ones.
        labels: ``B×H×W`` int64 at any resolution (nearest-resized to ``h×w``).
        num_classes: K.
        temperature: τ of ``softmax_k(cos_k / τ)``.
        weight: ``R×B`` bool, which entries of ``rest`` are real (:meth:`Selection.rest_slots`); the
            others are left out of the sum and of the mean ``c̄``. None: all.

    Returns:
        Scalar: ``Σ_r KL(c_r ‖ c̄)`` averaged over the samples that have a labelled pixel; 0 (no NaN) with
        fewer than two remaining modalities or no labelled pixel. Computed in fp32.
    """
    R, B, C, h, w = rest.shape
    if R < 2:
        return salient.new_zeros((), dtype=torch.float32)
    if labels.shape[-2:] != (h, w):
        labels = F.interpolate(labels[:, None].float(), size=(h, w), mode="nearest")[:, 0].long()
    with torch.autocast(device_type=rest.device.type, enabled=False):
        rest, salient = rest.float(), salient.float()
        classes = torch.arange(num_classes, device=labels.device)
        onehot = (labels[..., None] == classes).float()  # B×h×w×K (ignored pixels: all 0)
        counts = onehot.sum((1, 2))  # B×K
        present = counts > 0
        # per-sample class prototypes: mean feature over each class's pixels
        proto_rest = torch.einsum("rbchw,bhwk->rbkc", rest, onehot) / counts.clamp_min(1)[None, ..., None]
        proto_sal = torch.einsum("bchw,bhwk->bkc", salient, onehot) / counts.clamp_min(1)[..., None]
        sim = F.cosine_similarity(proto_rest, proto_sal[None], dim=-1)  # R×B×K
        # absent classes: a very negative finite logit -> probability 0 with a finite log (no 0·inf NaN)
        neg = torch.finfo(sim.dtype).min / 4
        logp = F.log_softmax((sim / temperature).masked_fill(~present, neg), dim=-1)  # R×B×K
        valid = present.any(-1).float()
        if weight is None:
            log_mean = torch.logsumexp(logp, dim=0) - torch.log(logp.new_tensor(float(R)))  # log c̄, B×K
            js = (logp.exp() * (logp - log_mean)).sum((0, 2))  # B: Σ_r KL(c_r ‖ c̄)
        else:  # the mean and the sum over the real entries only; a sample needs two of them
            w = weight.float()
            count = w.sum(0)  # B
            # a finite "log 0" (as for the absent classes): an all-invalid sample stays NaN-free, also
            # in the backward of logsumexp
            log_w = torch.where(w > 0, 0.0, neg)[..., None]  # R×B×1
            log_mean = torch.logsumexp(logp + log_w, dim=0) - torch.log(count.clamp_min(1))[:, None]
            js = (w[..., None] * logp.exp() * (logp - log_mean)).sum((0, 2))
            valid = valid * (count >= 2).float()
        return (js * valid).sum() / valid.sum().clamp_min(1)
