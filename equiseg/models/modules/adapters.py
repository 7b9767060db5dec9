"""StitchFusion's cross-modal adapters ("MultiAdapter", Li et al., arXiv 2408.01343; docs/design.md §8.5).

One adapter is a bottleneck ``Linear(C -> r) -> Linear(r -> r) -> GELU -> Dropout(0.1) -> Linear(r -> C)``
(r = 8 in the release). Inside every adapted MiT block, after the attention and again after the MLP,
each ordered pair of modalities (i -> j) gets ``adapter_{i->j}(norm(x_i))`` added to ``x_j``, with the
block's own LayerNorm (``norm1`` after the attention, ``norm2`` after the MLP) and its own drop-path
(an independent mask per contribution, as each call in the release draws its own). Which adapter
carries i -> j is the *mode* (the release's block classes):

* ``every_one`` (``Block_every_one``): one adapter per unordered pair {i, j}, used in both directions;
  N(N-1)/2 adapters, the release's default;
* ``every_two`` (``Block_every_two``): one adapter per direction; N(N-1) adapters;
* ``shared`` (``Block_shared`` / ``Block_every_one_1``): one adapter for all pairs.

All adapters of a block are stored *stacked* (``down_weight`` is ``A×r×C`` ...), so the contributions
of all pairs are computed with batched matrix products -- no Python loop over pairs:

1. ``Linear(r->r) ∘ Linear(C->r)`` has no nonlinearity between them, so each adapter's first two
   layers are merged on the fly into one ``r×C`` map (the same function; parameters and gradients are
   those of the two layers);
2. every source modality projects its normalised tokens through the merged maps of its P-1 adapters in
   one batched product (``P×N×C @ P×C×(P-1)r``);
3. GELU, dropout and the drop-path masks act on that small ``(P-1)·r``-channel tensor;
4. it is regrouped target-major, and each target sums its P-1 incoming contributions in one batched
   product with the adapters' up-projections (``P×N×(P-1)r @ P×(P-1)r×C``).

Two orders of evaluation (see :meth:`PairAdapters.forward` and :meth:`PairAdapters.sequential`): the
corrected one, where every adapter reads the features from *before* the update (the features the
block's attention/MLP read), and the release's, whose list alias (``outputs_orig_beforeAtt =
outputs``) makes modality i's adapters read its features *after* the adapters of modalities 0..i-1
have already been added to them -- the result depends on the modality order (docs/design.md §8.7).

Initialisation: the release's ``Bi_direct_adapter`` zero-fills its layers, but the full model then
applies SegFormer's ``_init_weights`` to every ``nn.Linear``, so the adapters it actually trains from
are truncated-normal (std 0.02) weights with zero biases. That effective initialisation is used here
(an all-zero adapter would also pass no gradient to its weights in the first step).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from equiseg.layers import trunc_normal_

AdapterMode = Literal["every_one", "every_two", "shared"]
ADAPTER_MODES: tuple[str, ...] = ("every_one", "every_two", "shared")


def adapter_pairs(mode: str, num_modalities: int) -> list[tuple[int, int]]:
    """The adapters of a block in their storage order, each named by the modality pair it serves.

    ``every_one``: unordered pairs ``(i, j)``, i < j, in the release's order (i, then j ascending:
    ``adap_t_att12, 13, 14, 23, ...``); ``every_two``: ordered pairs (source i, target j), i != j, source
    major (``adap_t_att12, 13, ..., 21, 23, ...``); ``shared``: one adapter, named ``(0, 0)``.
    """
    n = num_modalities
    if mode == "every_one":
        return [(i, j) for i in range(n) for j in range(n) if i < j]
    if mode == "every_two":
        return [(i, j) for i in range(n) for j in range(n) if i != j]
    if mode == "shared":
        return [(0, 0)] if n > 1 else []
    raise ValueError(f"adapter mode must be one of {', '.join(ADAPTER_MODES)}, got {mode!r}")


def adapter_index(mode: str, num_modalities: int) -> list[list[int]]:
    """``table[i][j]``: index of the adapter carrying modality i's features into modality j (-1 on the
    diagonal)."""
    pairs = {p: a for a, p in enumerate(adapter_pairs(mode, num_modalities))}
    n = num_modalities
    table = [[-1] * n for _ in range(n)]
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            if mode == "every_one":
                key = (min(i, j), max(i, j))  # one adapter serves both directions
            elif mode == "every_two":
                key = (i, j)
            else:
                key = (0, 0)
            table[i][j] = pairs[key]
    return table


@dataclass(frozen=True)
class PairPlan:
    """Index tables for P >= 2 present modalities (built once per forward, shared by every block).

    ``src_adapter[p, k]``: adapter of source p's k-th target (its targets are the other present
    modalities, in order); ``tgt_adapter[q, k]``: adapter of target q's k-th source; ``tgt_source[q, k]``
    / ``tgt_slot[q, k]``: where that contribution sits in the source-major layout (source position,
    target slot); ``targets[p]``: positions of source p's targets.
    """

    src_adapter: torch.Tensor  # P×(P-1)
    tgt_adapter: torch.Tensor  # P×(P-1)
    tgt_source: torch.Tensor  # P×(P-1)
    tgt_slot: torch.Tensor  # P×(P-1)
    targets: torch.Tensor  # P×(P-1)

    @property
    def num_present(self) -> int:
        return self.src_adapter.shape[0]


@functools.lru_cache(maxsize=256)
def _plan_lists(mode: str, num_modalities: int, present: tuple[int, ...]) -> tuple[list[list[int]], ...]:
    table = adapter_index(mode, num_modalities)
    P = len(present)
    others = [[q for q in range(P) if q != p] for p in range(P)]  # positions, not model indices
    src_adapter = [[table[present[p]][present[q]] for q in others[p]] for p in range(P)]
    tgt_adapter = [[table[present[p]][present[q]] for p in others[q]] for q in range(P)]
    tgt_source = others
    # source p lists its targets in order, skipping itself: target q sits in slot q - (q > p)
    tgt_slot = [[q - (q > p) for p in others[q]] for q in range(P)]
    return src_adapter, tgt_adapter, tgt_source, tgt_slot, others


def pair_plan(mode: str, num_modalities: int, present: list[int], device: torch.device) -> PairPlan:
    """The :class:`PairPlan` of the present modalities ``present`` (model indices, ascending, >= 2)."""
    if len(present) < 2:
        raise ValueError(f"cross-modal adapters need at least 2 present modalities, got {len(present)}")
    lists = _plan_lists(mode, num_modalities, tuple(present))
    return PairPlan(*(torch.tensor(v, dtype=torch.long, device=device) for v in lists))


def _drop_path_mask(drop_path: nn.Module | None, n: int, like: torch.Tensor) -> torch.Tensor | None:
    """Per-sample drop-path multipliers (0 or 1/keep) for ``n`` contributions, drawn by the block's own
    ``drop_path`` module applied to ones (so its probability and train/eval behaviour hold); None when
    it is inactive."""
    if drop_path is None or not drop_path.training or getattr(drop_path, "p", 0.0) == 0.0:
        return None
    return drop_path(like.new_ones(n, 1)).view(n)


class PairAdapters(nn.Module):
    """The cross-modal adapters of one block position (after attention, or after the MLP), stacked.

    Args:
        dim: C, the stage's channels.
        num_modalities: N, the model's modalities.
        mode: ``every_one`` | ``every_two`` | ``shared`` (module docstring).
        hidden: r, the bottleneck width (8 in the release).
        dropout: dropout on the bottleneck after the GELU (0.1 in the release).
    """

    def __init__(
        self, dim: int, num_modalities: int, mode: str = "every_one", hidden: int = 8, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.mode = mode
        self.pairs = adapter_pairs(mode, num_modalities)
        self.num_modalities = num_modalities
        self.dim, self.hidden, self.dropout = dim, hidden, dropout
        A = len(self.pairs)
        self.down_weight = nn.Parameter(torch.empty(A, hidden, dim))
        self.down_bias = nn.Parameter(torch.empty(A, hidden))
        self.mid_weight = nn.Parameter(torch.empty(A, hidden, hidden))
        self.mid_bias = nn.Parameter(torch.empty(A, hidden))
        self.up_weight = nn.Parameter(torch.empty(A, dim, hidden))
        self.up_bias = nn.Parameter(torch.empty(A, dim))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The release's effective initialisation: truncated normal (std 0.02) weights, zero biases."""
        for w in (self.down_weight, self.mid_weight, self.up_weight):
            trunc_normal_(w, std=0.02)
        for b in (self.down_bias, self.mid_bias, self.up_bias):
            nn.init.zeros_(b)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, mode={self.mode}, adapters={len(self.pairs)}, hidden={self.hidden}"

    # --- pieces --------------------------------------------------------------------------------------
    def _bottleneck(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Merged ``mid ∘ down`` maps of the adapters ``idx`` (any shape S): weights ``S×r×C``, biases
        ``S×r``."""
        mid = self.mid_weight[idx]
        w = mid @ self.down_weight[idx]
        b = (mid @ self.down_bias[idx].unsqueeze(-1)).squeeze(-1) + self.mid_bias[idx]
        return w, b

    def _activate(self, h: torch.Tensor) -> torch.Tensor:
        return F.dropout(F.gelu(h), self.dropout, self.training)

    # --- corrected order: every adapter reads the features from before the update -------------------
    def forward(
        self, n: torch.Tensor, plan: PairPlan, batch: int, drop_path: nn.Module | None = None
    ) -> torch.Tensor:
        """What the adapters add to each modality, all pairs at once.

        Args:
            n: the normalised tokens the block's attention (or MLP) read, ``P×(B·L)×C``, modality first.
            plan: :func:`pair_plan` of the P present modalities.
            batch: B (drop-path masks are per sample).
            drop_path: the block's drop-path module (one independent mask per contribution).

        Returns:
            ``P×(B·L)×C``: for target q, ``Σ_{p≠q} adapter_{p->q}(n_p)``.
        """
        P, N, C = n.shape
        K, r = P - 1, self.hidden
        w, b = self._bottleneck(plan.src_adapter)  # P×K×r×C, P×K×r
        # each source through its K adapters' merged down/mid maps at once: P×N×(K·r)
        h = torch.baddbmm(b.view(P, 1, K * r), n, w.view(P, K * r, C).transpose(1, 2))
        h = self._activate(h).view(P, N, K, r)
        up_w = self.up_weight[plan.tgt_adapter]  # P×K×C×r (target major)
        up_b = self.up_bias[plan.tgt_adapter]  # P×K×C
        mask = _drop_path_mask(drop_path, P * K * batch, n)
        if mask is not None:  # the mask multiplies a contribution's up-projection, bias included
            mask = mask.view(P, K, batch)
            h = (h.view(P, batch, -1, K, r) * mask.transpose(1, 2).reshape(P, batch, 1, K, 1)).view(
                P, N, K, r
            )
        # regroup target major: target q's k-th source is tgt_source[q, k], found in its slot tgt_slot[q, k]
        ht = h[plan.tgt_source, :, plan.tgt_slot]  # P×K×N×r
        ht = ht.permute(0, 2, 1, 3).reshape(P, N, K * r)
        out = torch.bmm(ht, up_w.permute(0, 1, 3, 2).reshape(P, K * r, C))  # Σ over sources and r
        if mask is None:
            return out + up_b.sum(1).unsqueeze(1)
        m_t = mask[plan.tgt_source, plan.tgt_slot]  # P×K×B: the masks of target q's contributions
        bias = torch.einsum("qkb,qkc->qbc", m_t, up_b)  # P×B×C
        return (out.view(P, batch, -1, C) + bias.unsqueeze(2)).view(P, N, C)

    # --- the release's order (reference_compat): sources in turn, each reading updated features ------
    def sequential(
        self,
        z: torch.Tensor,
        norm: nn.Module,
        plan: PairPlan,
        batch: int,
        drop_path: nn.Module | None = None,
    ) -> torch.Tensor:
        """The release's update, defect included: for source p = 0, 1, ... in turn, ``x_q +=
        adapter_{p->q}(norm(x_p))`` for every q != p, where ``x_p`` already holds the contributions of
        sources 0..p-1 (its list alias). Inherently sequential over the sources; the P-1 targets of one
        source are done at once.

        Args:
            z: tokens after the attention (or MLP) residual, ``P×(B·L)×C``.
            norm: the block's ``norm1`` (or ``norm2``).

        Returns:
            The updated tokens, ``P×(B·L)×C``.
        """
        P, N, C = z.shape
        K, r = P - 1, self.hidden
        w, b = self._bottleneck(plan.src_adapter)  # P×K×r×C, P×K×r
        up_w = self.up_weight[plan.src_adapter]  # P×K×C×r (source major)
        up_b = self.up_bias[plan.src_adapter]  # P×K×C
        for p in range(P):
            src = norm(z[p])  # N×C: modality p as it stands now
            h = torch.addmm(b[p].view(1, K * r), src, w[p].view(K * r, C).t())  # N×(K·r)
            h = self._activate(h).view(N, K, r).transpose(0, 1)  # K×N×r
            delta = torch.baddbmm(up_b[p].unsqueeze(1), h, up_w[p].transpose(1, 2))  # K×N×C
            mask = _drop_path_mask(drop_path, K * batch, z)
            if mask is not None:
                delta = (delta.view(K, batch, -1, C) * mask.view(K, batch, 1, 1)).view(K, N, C)
            z = z.index_add(0, plan.targets[p], delta)
        return z
