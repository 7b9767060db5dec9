"""The EQUISeg network (paper §2.3, Fig. 1(a); SPEC §1): equal multi-branch MiT encoding with a
Cross-modal Transformer Block after every stage, a SegFormer head on the modality-mean features, and
the training-only Self-Guided Module loss.

Encoding every modality equally (SPEC §1.2): with ``share_encoder=True`` (default) all present
modalities run through the *same* MiT layers as one batch of ``P·B`` images -- no Python loop over
modalities on the hot path; with ``share_encoder=False`` each modality has its own MiT (N× the
parameters) and the stages are run per modality, the CMTB still batched.

Missing modalities are a first-class input: pass ``None`` in their slot. Only present modalities are
encoded; the hub takes its max over present auxiliaries, a modality with no present auxiliary keeps
``f_n = f'_n``, and the head averages over the present modalities. The benchmark protocol's
zero-filled tensors are ordinary inputs and work unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from equiseg.config import ModelConfig
from equiseg.layers import init_weights

from .fusion import CMTB
from .head import SegFormerHead
from .losses import cross_entropy, ohem_cross_entropy
from .mit import MixVisionTransformer
from .sgm import sgm_loss

MIN_INPUT_SIZE = 32  # below this the stride-32 stage / spatial reductions run out of pixels

Inputs = Sequence[torch.Tensor | None]


@dataclass
class LossOutput:
    """What :meth:`EQUISeg.compute_loss` returns. ``loss = loss_ce + lambda_sgm * loss_sgm`` (Eq. 8)."""

    loss: torch.Tensor
    loss_ce: torch.Tensor
    loss_sgm: torch.Tensor
    logits: torch.Tensor

    def as_dict(self) -> dict[str, torch.Tensor]:
        """The scalar terms, detached, for logging."""
        return {
            "loss": self.loss.detach(),
            "loss_ce": self.loss_ce.detach(),
            "loss_sgm": self.loss_sgm.detach(),
        }


class EQUISeg(nn.Module):
    """EQUISeg built from a :class:`~equiseg.config.ModelConfig` (see :func:`equiseg.create_model`)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.modalities = tuple(cfg.modalities)
        self.num_modalities = n = len(self.modalities)
        mit_kw = dict(
            embed_dims=cfg.embed_dims,
            depths=cfg.depths,
            num_heads=cfg.num_heads,
            sr_ratios=cfg.sr_ratios,
            mlp_ratio=cfg.mlp_ratio,
            qkv_bias=cfg.qkv_bias,
            drop_rate=cfg.drop_rate,
            attn_drop_rate=cfg.attn_drop_rate,
            drop_path_rate=cfg.drop_path_rate,
            ln_eps=cfg.ln_eps,
        )
        if cfg.share_encoder:
            self.backbone = MixVisionTransformer(**mit_kw)
        else:
            self.backbones = nn.ModuleList([MixVisionTransformer(**mit_kw) for _ in range(n)])
        self.out_channels = tuple(cfg.embed_dims)
        # With one modality there is nothing to fuse: the model is a plain SegFormer.
        self.fusions = None
        if n > 1:
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
                    )
                    for s in range(4)
                ]
            )
            self.fusions.apply(init_weights)
            for m in self.fusions.modules():  # init_weights resets every parameter; restore layer-scale
                if hasattr(m, "layer_scale_init"):
                    nn.init.constant_(m.layer_scale1, m.layer_scale_init)
                    nn.init.constant_(m.layer_scale2, m.layer_scale_init)
        self.head = SegFormerHead(cfg.embed_dims, cfg.decoder_dim, cfg.num_classes, cfg.head_dropout)
        self.head.apply(init_weights)

    # ------------------------------------------------------------------------------------------------
    @property
    def encoders(self) -> list[MixVisionTransformer]:
        """The MiT branch(es): one shared module, or one per modality."""
        return [self.backbone] if self.cfg.share_encoder else list(self.backbones)

    def _prepare(self, inputs: Inputs) -> tuple[torch.Tensor, list[int]]:
        """Validate ``inputs`` and stack the present ones: ``(P·B)×3×H×W`` and their modality indices."""
        names = ", ".join(self.modalities)
        if not isinstance(inputs, (list, tuple)):
            raise ValueError(
                f"inputs must be a list of {self.num_modalities} tensors ({names}), got {type(inputs).__name__}"
            )
        if len(inputs) != self.num_modalities:
            raise ValueError(
                f"expected {self.num_modalities} inputs ({names}) in that order, got {len(inputs)}; "
                "pass None for a missing modality"
            )
        present, ref = [], None
        for i, x in enumerate(inputs):
            if x is None:
                continue
            name = self.modalities[i]
            if not isinstance(x, torch.Tensor):
                raise ValueError(f"input '{name}' must be a tensor or None, got {type(x).__name__}")
            if x.ndim != 4 or x.shape[1] != 3:
                raise ValueError(
                    f"input '{name}' must have shape B×3×H×W (every modality is 3-channel), got {tuple(x.shape)}"
                )
            if not x.is_floating_point():
                raise ValueError(f"input '{name}' must be a normalised float tensor, got dtype {x.dtype}")
            if ref is None:
                ref = (self.modalities[i], x.shape)
                if min(x.shape[-2:]) < MIN_INPUT_SIZE:
                    raise ValueError(
                        f"input '{name}' is {x.shape[-2]}×{x.shape[-1]}; "
                        f"inputs must be at least {MIN_INPUT_SIZE}×{MIN_INPUT_SIZE}"
                    )
            elif x.shape != ref[1]:
                raise ValueError(
                    f"input '{name}' has shape {tuple(x.shape)} but '{ref[0]}' has {tuple(ref[1])}; "
                    "all modalities must share batch size and H×W"
                )
            present.append(i)
        if not present:
            raise ValueError(
                f"all {self.num_modalities} modalities ({names}) are None; at least one is needed"
            )
        x = torch.cat([inputs[i] for i in present], dim=0) if len(present) > 1 else inputs[present[0]]
        return x, present

    def _encode(self, x: torch.Tensor, present: list[int]) -> list[torch.Tensor]:
        """Run the four stages on ``(P·B)×3×H×W`` -> per stage ``P×B×C_s×h_s×w_s``."""
        P = len(present)
        B = x.shape[0] // P
        index = None
        if self.fusions is not None and P < self.num_modalities:
            index = torch.tensor(present, device=x.device)
        encs = self.encoders
        feats = []
        for s in range(4):
            if self.cfg.share_encoder:
                t, H, W = encs[0].embed(s, x)
                t = encs[0].run_blocks(s, t, H, W)
            else:  # separate weights: one branch per present modality
                outs = []
                for j, xi in zip(present, x.chunk(P)):
                    ti, H, W = encs[j].embed(s, xi)
                    outs.append(encs[j].run_blocks(s, ti, H, W))
                t = torch.cat(outs)
            if self.fusions is not None and P > 1:
                t = self.fusions[s](t, H, W, P, index)  # CMTB: f = f' + MHCA(f', PPX(hub(aux)))
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
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)

    # --- public API ---------------------------------------------------------------------------------
    def encode(self, inputs: Inputs) -> list[torch.Tensor]:
        """The four stage outputs, each ``P×B×C_s×h_s×w_s`` (modality first; P = present modalities,
        in model order -- all N when none is None)."""
        x, present = self._prepare(inputs)
        return self._encode(x, present)

    def forward(
        self, inputs: Inputs, labels: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor | LossOutput:
        """``inputs``: N tensors ``B×3×H×W`` (or None) in the order of ``modalities`` -> logits ``B×K×H×W``.

        With ``labels`` it returns :meth:`compute_loss`'s :class:`LossOutput` instead, so a training step
        can go through a wrapper's ``forward`` (DDP arms its gradient hooks there).
        """
        if labels is not None:
            return self.compute_loss(inputs, labels, generator)
        x, present = self._prepare(inputs)
        return self._decode(self._encode(x, present), x.shape[-2:])

    def compute_loss(
        self, inputs: Inputs, labels: torch.Tensor, generator: torch.Generator | None = None
    ) -> LossOutput:
        """Forward + loss of Eq. (8): ``L = L_CE + λ·L_s``.

        Args:
            inputs: as :meth:`forward`.
            labels: ``B×H×W`` int64, ``ignore_index`` (255) for unlabelled pixels.
            generator: seeds the SGM's random teacher/student pairing (None: torch's global RNG).
        """
        x, present = self._prepare(inputs)
        B, H, W = x.shape[0] // len(present), x.shape[-2], x.shape[-1]
        if labels.shape != (B, H, W):
            raise ValueError(
                f"labels must have shape {(B, H, W)} (B×H×W of the inputs), got {tuple(labels.shape)}"
            )
        if labels.dtype != torch.long:
            raise ValueError(f"labels must be int64, got {labels.dtype}")
        feats = self._encode(x, present)
        logits = self._decode(feats, (H, W))
        cfg = self.cfg
        if cfg.loss == "ohem":
            loss_ce = ohem_cross_entropy(logits, labels, cfg.ignore_index, cfg.ohem_thresh)
        else:
            loss_ce = cross_entropy(logits, labels, cfg.ignore_index)
        if cfg.sgm and len(present) > 1:
            loss_sgm = sgm_loss(
                feats,
                labels,
                cfg.num_classes,
                ignore_index=cfg.ignore_index,
                prototype=cfg.prototype,
                pairing=cfg.pairing,
                generator=generator,
            )
        else:
            loss_sgm = loss_ce.new_zeros(())
        return LossOutput(loss_ce + cfg.lambda_sgm * loss_sgm, loss_ce, loss_sgm, logits)
