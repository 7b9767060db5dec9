"""The EQUISeg network (paper §2.3, Fig. 1(a); docs/design.md §1): equal multi-branch MiT encoding with a
Cross-modal Transformer Block after every stage, a SegFormer head on the modality-mean features, and
the training-only Self-Guided Module loss.

Encoding every modality equally (docs/design.md §1.4): with ``share_encoder=True`` (default) all present
modalities run through the *same* MiT layers as one batch of ``P·B`` images -- no Python loop over
modalities on the hot path; with ``share_encoder=False`` each modality has its own MiT (N× the
parameters) and the stages are run per modality, the CMTB still batched.

Missing modalities are a first-class input: pass ``None`` in their slot. Only present modalities are
encoded; the hub takes its max over present auxiliaries, a modality with no present auxiliary keeps
``f_n = f'_n``, and the head averages over the present modalities. The benchmark protocol's
zero-filled tensors are ordinary inputs and work unchanged.

For the modality-contribution analysis (docs/design.md §7), ``encode(inputs, return_intermediates=True)`` also
returns, from the same forward pass, each stage's tokens before the CMTB (``f'``), the CMTB output before the
stage LayerNorm and the CMTB's own term ``f_c``; the default ``encode`` path keeps none of them and computes
nothing extra.
"""

from __future__ import annotations

import torch
from torch import nn

from equiseg.layers import init_weights
from equiseg.models.config import ModelConfig

from .backbones import MixVisionTransformer, mit_kwargs
from .base import MIN_INPUT_SIZE, Inputs, LossOutput, SegModel, upsample_logits
from .modules import CMTB, SegFormerHead
from .registry import register_architecture, register_mit_variants, segformer_decoder_dim
from .sgm import sgm_loss

__all__ = ["EQUISeg", "LossOutput", "MIN_INPUT_SIZE"]


def _token_maps(tokens: torch.Tensor, P: int, H: int, W: int) -> torch.Tensor:
    """``(P·B)×(H·W)×C`` tokens -> a ``P×B×C×H×W`` channels-last view (no copy)."""
    return tokens.reshape(P, tokens.shape[0] // P, H, W, -1).permute(0, 1, 4, 2, 3)


@register_architecture("equiseg")
class EQUISeg(SegModel):
    """EQUISeg built from a :class:`~equiseg.config.ModelConfig` (see :func:`equiseg.create_model`)."""

    has_modality_features = True
    # encode(inputs, return_intermediates=True) gives pre-CMTB / pre-LN / post-LN / f_c per stage
    has_intermediate_features = True
    cross_modal = True  # the CMTB after each stage and the SGM loss (False: the SegFormer baseline)

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        n = self.num_modalities
        mit_kw = mit_kwargs(cfg)
        if cfg.share_encoder:  # a modality with other than 3 channels: its own stem in the shared MiT
            self.backbone = MixVisionTransformer(**mit_kw, stems=cfg.channels)
        else:  # one MiT per modality, taking that modality's channels
            self.backbones = nn.ModuleList(
                [MixVisionTransformer(**mit_kw, in_chans=c) for c in self.input_channels]
            )
        self.out_channels = tuple(cfg.embed_dims)
        # With one modality there is nothing to fuse: the model is a plain SegFormer.
        self.fusions = None
        if n > 1 and self.cross_modal:
            self.fusions = nn.ModuleList(
                [
                    CMTB(
                        cfg.embed_dims[s],
                        cfg.num_heads[s],
                        cfg.sr_ratios[s],
                        n,
                        hub=cfg.hub,
                        cross_attention=cfg.cross_attention,
                        residual=cfg.residual,
                        qkv_bias=cfg.qkv_bias,
                        ppx_layer_scale=cfg.ppx_layer_scale,
                        ppx_depth=cfg.ppx_depths[s],
                        ppx_mlp_ratio=cfg.ppx_mlp_ratios[s],
                    )
                    for s in range(4)
                ]
            )
            self.fusions.apply(init_weights)
            for m in self.fusions.modules():  # init_weights resets every parameter; restore layer-scale
                if hasattr(m, "reset_layer_scale"):
                    m.reset_layer_scale()
        self.head = SegFormerHead(cfg.embed_dims, cfg.decoder_dim, cfg.num_classes, cfg.head_dropout)
        self.head.apply(init_weights)

    # ------------------------------------------------------------------------------------------------
    @property
    def encoders(self) -> list[MixVisionTransformer]:
        """The MiT branch(es): one shared module, or one per modality."""
        return [self.backbone] if self.cfg.share_encoder else list(self.backbones)

    def _encode(
        self, xs: list[torch.Tensor], present: list[int], intermediates: dict[str, list] | None = None
    ) -> list[torch.Tensor]:
        """Run the four stages on the present inputs (each ``B×C_i×H×W``) -> per stage
        ``P×B×C_s×h_s×w_s``; from stage 1's patch embedding on, the P modalities are one batch of P·B.

        ``intermediates``: if given, a dict of empty lists ``pre_cmtb``, ``pre_ln`` and ``cross`` that
        receive per stage the tokens before the CMTB, before the stage LayerNorm, and the CMTB's term
        ``f_c`` (None where no CMTB ran), each as a ``P×B×C_s×h_s×w_s`` channels-last view. None (the
        hot path): nothing is kept or computed beyond the stage outputs.
        """
        P = len(present)
        B = xs[0].shape[0]
        index = None
        if self.fusions is not None and P < self.num_modalities:
            index = torch.tensor(present, device=xs[0].device)
        names = [self.modalities[i] for i in present]
        encs = self.encoders
        feats = []
        x = None  # the previous stage's output, (P·B)×C×H×W
        for s in range(4):
            if self.cfg.share_encoder:
                t, H, W = encs[0].embed_inputs(xs, names) if s == 0 else encs[0].embed(s, x)
                t = encs[0].run_blocks(s, t, H, W)
            else:  # separate weights: one branch per present modality
                outs = []
                for j, xi in zip(present, xs if s == 0 else x.chunk(P)):
                    ti, H, W = encs[j].embed(s, xi)
                    outs.append(encs[j].run_blocks(s, ti, H, W))
                t = torch.cat(outs)
            pre_cmtb = t  # f', (P·B)×L×C
            fused_here = self.fusions is not None and P > 1
            if fused_here:
                t = self.fusions[s](t, H, W, P, index)  # CMTB: f = f' + MHCA(f', PPX(hub(aux)))
            if intermediates is not None:
                intermediates["pre_cmtb"].append(_token_maps(pre_cmtb, P, H, W))  # P×B×C×H×W
                intermediates["pre_ln"].append(_token_maps(t, P, H, W))
                # f_c: the residual's added term, or the whole CMTB output with residual=False
                cross = (t - pre_cmtb if self.cfg.residual else t) if fused_here else None
                intermediates["cross"].append(None if cross is None else _token_maps(cross, P, H, W))
            if self.cfg.share_encoder:
                t = encs[0].stage_norm(s, t)
            else:
                t = torch.cat([encs[j].stage_norm(s, ti) for j, ti in zip(present, t.chunk(P))])
            x = t.reshape(P * B, H, W, -1).permute(0, 3, 1, 2)  # tokens -> (P·B)×C×H×W, channels-last
            feats.append(x.view(P, B, *x.shape[1:]))  # P×B×C×H×W
        return feats

    def _decode(self, feats: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        # mean over present modalities (the fused feature), taken in the channels-last layout
        fused = [f.permute(0, 1, 3, 4, 2).mean(0).permute(0, 3, 1, 2) for f in feats]
        logits = self.head(fused)
        return upsample_logits(logits, size)

    # --- public API ---------------------------------------------------------------------------------
    def encode(
        self, inputs: Inputs, return_intermediates: bool = False
    ) -> list[torch.Tensor] | dict[str, list[torch.Tensor | None]]:
        """The four stage outputs, each ``P×B×C_s×h_s×w_s`` (modality first; P = present modalities,
        in model order -- all N when none is None).

        With ``return_intermediates=True``, from the same single forward pass, a dict of four-element
        lists (one per stage), each entry ``P×B×C_s×h_s×w_s`` (channels-last views):

        - ``post_ln``: the stage output after the stage LayerNorm (what the default call returns);
        - ``pre_ln``: the CMTB output before the stage LayerNorm, ``f' + f_c`` (``f_c`` alone with
          ``residual=False``);
        - ``pre_cmtb``: ``f'``, the tokens after the stage's MiT blocks, before the CMTB;
        - ``cross``: ``f_c``, the CMTB's term (cross-attention output, or ``f_aux`` with
          ``cross_attention=False``): ``pre_ln - pre_cmtb`` with the residual, the CMTB output without
          it; None in every stage where no CMTB runs (N = 1, a single present modality, or the
          SegFormer baseline), and there ``pre_cmtb`` equals ``pre_ln``.
        """
        xs, present = self.prepare(inputs)
        if not return_intermediates:
            return self._encode(xs, present)
        out: dict[str, list] = {"pre_cmtb": [], "pre_ln": [], "cross": []}
        out["post_ln"] = self._encode(xs, present, out)
        return out

    def forward_logits(self, xs: list[torch.Tensor], present: list[int]) -> torch.Tensor:
        return self._decode(self._encode(xs, present), xs[0].shape[-2:])

    def compute_loss(
        self,
        inputs: Inputs,
        labels: torch.Tensor,
        generator: torch.Generator | None = None,
        keep: torch.Tensor | None = None,
    ) -> LossOutput:
        """Forward + loss of Eq. (8): ``L = L_CE + λ·L_s``.

        Args:
            inputs: as :meth:`forward`.
            labels: ``B×H×W`` int64, ``ignore_index`` (255) for unlabelled pixels.
            generator: seeds the SGM's random teacher/student pairing (None: torch's global RNG).
            keep: ``B×N`` bool, which inputs each sample kept under modality dropout (the others are
                zeros): the network encodes all of them, the SGM compares only kept features
                (:func:`~equiseg.models.sgm.sgm_loss`). None: every present input counts.
        """
        xs, present = self.prepare(inputs)
        self.check_labels(xs, labels)
        if keep is not None:
            keep = self.check_keep(keep, labels.shape[0])[:, present].T  # P×B, present modalities
        cfg = self.cfg
        use_sgm = cfg.sgm and self.cross_modal and len(present) > 1
        # the SGM's reading of "stage feature" (ModelConfig.sgm_features): the stage outputs themselves,
        # or a tensor kept from the same forward pass
        keep_inter = use_sgm and cfg.sgm_features != "post_ln"
        inter: dict[str, list] | None = {"pre_cmtb": [], "pre_ln": [], "cross": []} if keep_inter else None
        feats = self._encode(xs, present, inter)
        logits = self._decode(feats, xs[0].shape[-2:])
        loss_ce = self.segmentation_loss(logits, labels)
        if use_sgm:
            loss_sgm = sgm_loss(
                feats if inter is None else inter[cfg.sgm_features],
                labels,
                cfg.num_classes,
                ignore_index=cfg.ignore_index,
                prototype=cfg.prototype,
                pairing=cfg.pairing,
                convention=cfg.sgm_convention,
                generator=generator,
                keep=keep,
            )
        else:
            loss_sgm = loss_ce.new_zeros(())
        return LossOutput(loss_ce + cfg.lambda_sgm * loss_sgm, loss_ce, loss_sgm, logits)


# equiseg_b0 ... equiseg_b5. SegFormer's head widths (256 for B0/B1, 768 for B2+); CMNeXt's DeLiVER
# config uses 512 for B2 (override decoder_dim=512).
register_mit_variants("equiseg", "equiseg", segformer_decoder_dim)
