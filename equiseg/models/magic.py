"""MAGIC (Zheng et al., ECCV 2024, arXiv 2407.11344) and MAGIC++ (Zheng et al., arXiv 2412.16876), the
modality-agnostic peers of the paper's Tab. 1 (docs/design.md §8.6), built from their papers: neither has
public code (zhengxuJosh/AnySeg holds MAGIC++'s model only as compiled bytecode, ``MixT_magicplus.cpython-38.pyc``),
so there is no release to load -- no ``reference_state_dict``, no parity fixtures -- and
``reference_compat`` changes nothing here. Sources at hand: both abstracts, a paper note on MAGIC's
method (its MAM / ASM description and the equations of ``L_M``, ``L_S``, ``L_C`` and the total loss) and
a review of MAGIC++'s method (MIM's channel- and spatial-wise guidance, MASM's ranking); the papers'
implementation details (loss weights) were not among them.

**MAGIC.** One MiT with shared weights encodes every modality; the present ones run as one ``P·B`` batch
through all four stages (nothing is exchanged between modalities inside the backbone). Per stage:

1. the Multi-modal Aggregation Module (:class:`~equiseg.models.modules.magic_aggregation.MAM`) fuses the
   P modality features into the semantic feature ``f_se``; the SegFormer head on the four ``f_se`` gives
   ``P_m``, supervised by ``L_M`` = CE (``loss_ce``). This is the whole inference path.
2. training only, the Arbitrary-modal Selection Module
   (:class:`~equiseg.models.modules.magic_selection.ASM`) ranks the modalities of every sample by the
   cosine similarity of their features to ``f_se``; the most robust (most similar) and the most fragile
   (least similar) ones, ``f_rf``, go through a second MAM into the salient feature ``f_sa``; the head on
   the four ``f_sa`` gives ``P_s``, supervised where ``argmax P_m`` agrees with the labels:
   ``L_S = CE(P_s, M)``; the remaining modalities ``f_rm`` are held consistent with ``f_sa`` by ``L_C``.
3. ``L = L_M + λ·L_S + β·L_C`` (``magic_lambda_select``, ``magic_beta_consistency``).

**MAGIC++** (:class:`MAGICPlusPlus`) is the same network with the MAM replaced by the channel- and
spatial-guided Multi-modal Interaction Module (:class:`~equiseg.models.modules.magic_aggregation.MIM`,
both for ``f_se`` and ``f_sa``) and the ASM by the multi-scale selection
(:class:`~equiseg.models.modules.magic_selection.MASM`); losses and everything else are shared.

Absent modalities (``None``): modality-agnostic by design -- only the present ones are encoded, the
MAM/MIM aggregate over them, and the selection ranks among them (one present modality: it is both the
robust and the fragile one; fewer than two left over: ``L_C = 0``). ``encode`` returns the backbone's
per-modality stage outputs (``P×B×C_s×h_s×w_s``, present modalities in model order): the features the
MAM aggregates and the selection ranks.

Choices the papers leave open (or that the sources at hand did not state), made here:

* **Where the modules sit**: on the backbone's four stage outputs (the papers' plug-and-play modules on
  a backbone's multi-scale features), one MAM/MIM per stage for ``f_se`` and a second one per stage for
  ``f_sa`` ("another MAM"); they do not feed back into the backbone.
* **MAM's form**: the paper's conv + parallel 3/7/11 poolings + sigmoid conv + MLP is CMNeXt's pooling
  mixer + conv MLP, reused, run per modality on the ``P·B`` batch, then the mean over the present
  modalities, then the MLP; BatchNorm and layer scales (init ``magic_layer_scale`` = 1e-2) as CMNeXt;
  MLP ratio ``magic_mlp_ratio`` = 4. **MIM's guidance**: CBAM-style channel (avg+max -> MLP, width
  ``dim//4``, at least 8) and spatial (avg+max over channels -> 7×7 conv) logits, softmax over the present
  modalities, a weighted sum in place of the mean.
* **Number selected**: ``magic_num_selected`` = 1 robust + 1 fragile (the papers' Top-1 / Last-1); all
  present modalities when ``2k >= P``.
* **Ranking**: per sample (a batch mixes conditions); cosine over the whole ``C·h·w`` map of a stage;
  every stage ranks on its own (docs/design.md §8.6). MAGIC++'s abstract ("ranks ... at hierarchical feature
  spaces", "at every feature granularity") can also be read as MAGIC ranking only once per sample:
  ``magic_rank_scope: shared`` gives that reading (one ranking from the mean similarity over the stages,
  used at all four). **MASM's multi-scale**: per stage, the mean of that cosine and those of ``g×g``
  average-pooled maps, ``g`` in ``magic_rank_grids`` = (1, 2, 4). Ranking runs without gradient.
* **Head**: one SegFormer MLP head shared by ``P_m`` and ``P_s`` (the papers name one "SegHead"), width
  256 for every size: MAGIC reports 24.73 M parameters with MiT-B2, which is MiT-B2 (24.20 M) plus a
  256-wide head (0.53 M), not a 512- or 768-wide one (1.6 M / 3.2 M). That count leaves nothing for
  the MAM, which the paper describes with convs and MLPs; ours adds 3.57 M at B2 on the inference path
  (and as much again in the training-only second MAM), 28.3 M at inference in all.
* **What the head sees at inference**: ``f_se`` only (the selection branch is training-only).
* **``L_S``'s mask**: labels kept where ``argmax P_m`` (the aggregate's prediction, no gradient) equals
  them; the same segmentation loss (``loss``: CE or OHEM) as ``L_M``.
* **``L_C``**: the paper's formula is a JS divergence between two distributions over the K classes
  built from the cosine similarity of the two remaining features to ``f_sa``; here: per sample, the
  cosine of class prototypes (labels nearest-resized to the stage grid, classes present in the sample),
  ``softmax(cos/τ)`` with ``magic_temperature`` τ = 0.1 (cosines in [-1, 1] at τ = 1 would give nearly
  uniform distributions), ``Σ_r KL(c_r ‖ c̄)`` for any number of remaining modalities, averaged over
  samples and over the four stages; gradients flow into both sides.
* **Loss weights**: λ = β = 1 (``magic_lambda_select``, ``magic_beta_consistency``); not stated in
  the sources at hand.
* ``share_encoder: false`` is refused: both papers share one backbone across modalities.
"""

from __future__ import annotations

import torch
from torch import nn

from equiseg.layers import init_weights
from equiseg.models.config import ModelConfig

from .backbones import MixVisionTransformer, mit_kwargs
from .base import Inputs, LossOutput, SegModel, upsample_logits
from .modules.heads import SegFormerHead
from .modules.magic_aggregation import MAM, MIM
from .modules.magic_selection import (
    ASM,
    MASM,
    Selection,
    consistency_loss,
    gather_modalities,
    selective_labels,
)
from .registry import register_architecture, register_mit_variants

__all__ = ["MAGIC", "MAGICPlusPlus", "magic_decoder_dim"]


def magic_decoder_dim(size: str) -> int:
    """MAGIC's head width: 256 for every MiT size (see the module docstring for the parameter count)."""
    return 256


@register_architecture("magic")
class MAGIC(SegModel):
    """MAGIC built from a :class:`~equiseg.config.ModelConfig` (``create_model("magic_b0", ...)``)."""

    has_modality_features = True

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        if not cfg.share_encoder:
            raise ValueError(f"{cfg.arch} shares one MiT across all modalities; share_encoder must be true")
        if cfg.magic_num_selected < 1:
            raise ValueError(f"magic_num_selected must be >= 1, got {cfg.magic_num_selected}")
        if cfg.magic_temperature <= 0:
            raise ValueError(f"magic_temperature must be > 0, got {cfg.magic_temperature}")
        if cfg.magic_rank_scope not in ("stage", "shared"):
            raise ValueError(f"magic_rank_scope must be 'stage' or 'shared', got {cfg.magic_rank_scope!r}")
        self.backbone = MixVisionTransformer(**mit_kwargs(cfg), stems=cfg.channels)
        dims = tuple(cfg.embed_dims)
        self.out_channels = dims
        self.aggregate = nn.ModuleList([self.make_aggregator(c) for c in dims])  # -> f_se
        self.aggregate_selected = nn.ModuleList([self.make_aggregator(c) for c in dims])  # -> f_sa
        self.selector = self.make_selector()
        self.head = SegFormerHead(dims, cfg.decoder_dim, cfg.num_classes, cfg.head_dropout)
        for module in (self.aggregate, self.aggregate_selected, self.head):
            module.apply(init_weights)
        for m in self.modules():  # init_weights resets every parameter; restore the layer scales
            if hasattr(m, "reset_layer_scale"):
                m.reset_layer_scale()

    # --- what MAGIC++ replaces ---------------------------------------------------------------------
    def make_aggregator(self, dim: int) -> nn.Module:
        return MAM(dim, self.cfg.magic_mlp_ratio, self.cfg.magic_layer_scale)

    def make_selector(self) -> ASM:
        return ASM(self.cfg.magic_num_selected)

    # ------------------------------------------------------------------------------------------------
    @property
    def encoders(self) -> list[MixVisionTransformer]:
        """The shared MiT (ImageNet weights go here)."""
        return [self.backbone]

    def _encode(self, xs: list[torch.Tensor], present: list[int]) -> list[torch.Tensor]:
        """The present inputs (each ``B×C_i×H×W``) -> per stage ``P×B×C_s×h_s×w_s`` (one batch of P·B
        through the shared MiT after each modality's stage-1 patch embedding)."""
        P, B = len(present), xs[0].shape[0]
        names = [self.modalities[i] for i in present]
        return [f.view(P, B, *f.shape[1:]) for f in self.backbone.forward_features(xs, names)]

    def _predict(self, feats: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """Four ``B×C_s×h_s×w_s`` maps -> logits ``B×K×H×W`` at the input size."""
        return upsample_logits(self.head(feats), size)

    # --- public API ---------------------------------------------------------------------------------
    def encode(self, inputs: Inputs) -> list[torch.Tensor]:
        """The four backbone stage outputs, each ``P×B×C_s×h_s×w_s`` (P = present modalities, model
        order): the features the aggregation fuses and the selection ranks."""
        xs, present = self.prepare(inputs)
        return self._encode(xs, present)

    def forward_logits(self, xs: list[torch.Tensor], present: list[int]) -> torch.Tensor:
        feats = self._encode(xs, present)
        return self._predict([agg(f) for agg, f in zip(self.aggregate, feats)], xs[0].shape[-2:])

    def select(
        self, feats: list[torch.Tensor], fused: list[torch.Tensor], keep: torch.Tensor | None = None
    ) -> list[Selection]:
        """The per-stage rankings of the present modalities (training only; no gradient); ``keep``
        (``P×B``): each sample ranks only the modalities it kept."""
        return self.selector(feats, fused, scope=self.cfg.magic_rank_scope, keep=keep)

    def compute_loss(
        self,
        inputs: Inputs,
        labels: torch.Tensor,
        generator: torch.Generator | None = None,
        keep: torch.Tensor | None = None,
    ) -> LossOutput:
        """``L = L_M + λ·L_S + β·L_C``; ``terms``: ``loss_select`` (``L_S``) and ``loss_consistency``
        (``L_C``), unweighted; ``loss_ce`` is ``L_M``. ``generator`` is unused (nothing is random).

        ``keep`` (``B×N`` bool, modality dropout with zero-filled inputs): the aggregate ``f_se`` and
        ``P_m`` see every input as the network does at test time, but the selection ranks, the second
        aggregator fuses and ``L_C`` compares only each sample's kept modalities
        (:mod:`~equiseg.models.modules.magic_selection`, "Kept modalities")."""
        cfg = self.cfg
        xs, present = self.prepare(inputs)
        self.check_labels(xs, labels)
        if keep is not None:
            keep = self.check_keep(keep, labels.shape[0])[:, present].T  # P×B, present modalities
        size = xs[0].shape[-2:]
        feats = self._encode(xs, present)
        fused = [agg(f) for agg, f in zip(self.aggregate, feats)]  # f_se per stage, B×C×h×w
        logits = self._predict(fused, size)  # P_m
        loss_m = self.segmentation_loss(logits, labels)

        selections = self.select(feats, fused, keep)
        # (indices, validity) of the selected and the remaining modalities per stage; all valid (None)
        # without dropped inputs
        picked = [(s.selected, None) if keep is None else s.selected_slots() for s in selections]
        rests = [(s.rest, None) if keep is None else s.rest_slots() for s in selections]
        salient = [  # f_sa per stage: the second aggregator on the selected modalities (S×B×C×h×w)
            agg(gather_modalities(f, idx), valid) if valid is not None else agg(gather_modalities(f, idx))
            for agg, f, (idx, valid) in zip(self.aggregate_selected, feats, picked)
        ]
        loss_s = self.segmentation_loss(
            self._predict(salient, size), selective_labels(logits, labels, cfg.ignore_index)
        )
        loss_c = torch.stack(
            [
                consistency_loss(
                    gather_modalities(f, idx),
                    sa,
                    labels,
                    cfg.num_classes,
                    cfg.ignore_index,
                    cfg.magic_temperature,
                    weight=valid,
                )
                for f, sa, (idx, valid) in zip(feats, salient, rests)
            ]
        ).mean()
        loss = loss_m + cfg.magic_lambda_select * loss_s + cfg.magic_beta_consistency * loss_c
        terms = {"loss_select": loss_s, "loss_consistency": loss_c}
        return LossOutput(loss, loss_m, loss_m.new_zeros(()), logits, terms)


@register_architecture("magicpp")
class MAGICPlusPlus(MAGIC):
    """MAGIC++: MAGIC with the Multi-modal Interaction Module (channel- and spatial-guided fusion) and
    the multi-scale selection; everything else is MAGIC's."""

    def make_aggregator(self, dim: int) -> nn.Module:
        return MIM(dim, self.cfg.magic_mlp_ratio, self.cfg.magic_layer_scale)

    def make_selector(self) -> ASM:
        return MASM(self.cfg.magic_num_selected, self.cfg.magic_rank_grids)


# magic_b0 ... magic_b5, magicpp_b0 ... magicpp_b5: head width 256 for every size (magic_decoder_dim);
# EQUISeg's SGM fields do not apply
register_mit_variants("magic", "magic", magic_decoder_dim, sgm=False)
register_mit_variants("magicpp", "magicpp", magic_decoder_dim, sgm=False)
