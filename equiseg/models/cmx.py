"""CMX (Zhang et al., T-ITS 2023, "CMX: Cross-Modal Fusion for RGB-X Semantic Segmentation with
Transformers"), docs/design.md §8.4.

Public code: huaaaliu/RGBX_Semantic_Segmentation (``models/builder.py``, ``models/encoders/
dual_segformer.py``, ``models/net_utils.py``, ``models/decoders/MLPDecoder.py``). Exactly two
modalities, RGB (``modalities[0]``) and X (``modalities[1]``):

* two full MiTs with separate weights (``self.backbones[0]`` for RGB, ``[1]`` for X), both initialised
  from the same ImageNet file (:attr:`CMX.encoders` returns both);
* after every stage's blocks and LayerNorm, :class:`~equiseg.models.modules.frm_ffm.FRM` rectifies the
  two maps against each other and the *rectified* maps go on in both branches;
  :class:`~equiseg.models.modules.frm_ffm.FFM` fuses them into the stage's feature for the head;
* the MLP decoder (``DecoderHead``) on the four fused maps: it is SegFormer's head (linear per stage,
  concatenation ``[c4, c3, c2, c1]``, 1×1 fuse conv + BN + ReLU, ``Dropout2d(0.1)``, classifier) with
  two differences, both kept exactly: the fuse conv has a **bias**, and its BatchNorm has
  **eps 1e-3** (``init_weight`` sets the config's ``bn_eps = 1e-3`` on the decoder's norms). The bias
  is folded into the BatchNorm's running mean when a release is loaded (``BN(Wx + b)`` with running
  mean ``μ`` is ``BN(Wx)`` with running mean ``μ - b``, exactly, in eval and training mode alike -- in
  training the batch mean removes ``b``, so the bias never receives a gradient), so the shared
  :class:`~equiseg.models.modules.heads.SegFormerHead` serves unchanged; the eps is set on it here.
  Head width ``peer_decoder_dim`` (512; 256 for B0/B1 -- the RGBX config uses 512 for every size).
* loss: plain cross-entropy (RGBX trains with ``nn.CrossEntropyLoss(ignore_index=255)``).

LayerNorm eps are the SegFormer release's (1e-6 in blocks and stage norms, 1e-5 in the patch
embeddings and spatial reductions), which RGBX keeps, so ``ln_eps`` stays at its default.

``reference_compat``: the release has no known defect that would change outputs, so the logits are the
same in both modes. The one thing it changes is training-only: RGBX's stage 2 gives all RGB blocks the
stochastic-depth rate ``dpr[cur]`` and all X blocks ``dpr[cur + 1]`` instead of the linear schedule
``dpr[cur + j]`` of every other stage; compat reproduces those rates.

Other differences from the release, not reproduced: RGBX's builder builds a B0 encoder for
``mit_b1`` (and B3 is not offered); its decoder's convolutions are Kaiming-initialised and its linear
layers keep torch's default init (ours: SegFormer's init everywhere).

Absent modalities (``None``): CMX has no path without either branch (FRM and FFM need both maps at
every stage), so an absent modality is replaced by zeros -- what the robustness protocol
(docs/design.md §6) feeds for a missing modality (for normalised RGB the mean colour); both
conventions give the same logits.
``encode`` returns, per stage, the rectified map each present branch carries on (``P×B×C×h×w``).
"""

from __future__ import annotations

import torch
from torch import nn

from equiseg.layers import DropPath, init_weights
from equiseg.models.config import ModelConfig

from .backbones import MixVisionTransformer, mit_kwargs
from .base import SegModel, upsample_logits
from .modules.frm_ffm import FFM, FRM, fusion_reference_rules
from .modules.heads import SegFormerHead, head_release_rules, linear_to_conv
from .reference import map_state_dict
from .registry import peer_decoder_dim, register_architecture, register_mit_variants

__all__ = ["CMX"]

HEAD_BN_EPS = 1e-3  # RGBX config.py: C.bn_eps, applied to the decoder's BatchNorm by init_weight


@register_architecture("cmx")
class CMX(SegModel):
    """CMX built from a :class:`~equiseg.config.ModelConfig` (``create_model("cmx_b2", modalities=
    ["rgb", "depth"])``); see the module docstring for the structure and ``None`` inputs."""

    has_modality_features = True

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        if self.num_modalities != 2:
            raise ValueError(
                f"CMX fuses exactly two modalities (RGB + X), got {self.num_modalities}: "
                f"{list(self.modalities)}"
            )
        dims = tuple(cfg.embed_dims)
        # one MiT per modality, each taking its modality's channels (its patch_embed1 is the stem)
        self.backbones = nn.ModuleList(
            [MixVisionTransformer(**mit_kwargs(cfg), in_chans=c) for c in self.input_channels]
        )
        self.frms = nn.ModuleList([FRM(d) for d in dims])
        self.ffms = nn.ModuleList([FFM(d, h) for d, h in zip(dims, cfg.num_heads)])
        self.head = SegFormerHead(dims, cfg.decoder_dim, cfg.num_classes, cfg.head_dropout)
        for module in (self.frms, self.ffms, self.head):
            module.apply(init_weights)
        self.head.linear_fuse[1].eps = HEAD_BN_EPS
        if cfg.reference_compat:
            self._reference_drop_path()

    def _reference_drop_path(self) -> None:
        """RGBX's stage-2 stochastic-depth rates: ``dpr[cur]`` for every RGB block, ``dpr[cur + 1]`` for
        every X block (training only; the other stages keep the linear schedule)."""
        depths = self.cfg.depths
        dpr = torch.linspace(0, self.cfg.drop_path_rate, sum(depths)).tolist()
        cur = depths[0]
        for branch, rate in zip(self.backbones, (dpr[cur], dpr[min(cur + 1, len(dpr) - 1)])):
            for blk in branch.block2:
                blk.drop_path = DropPath(rate)

    @property
    def encoders(self) -> list[MixVisionTransformer]:
        """Both branches (each receives the same ImageNet weights)."""
        return list(self.backbones)

    def reference_state_dict(self, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map an RGBX CMX release (``backbone.*``, ``decode_head.*``) onto this model's names, strictly.

        ``backbone.{patch_embed,block,norm}{s}`` -> ``backbones.0.*`` (RGB), ``backbone.extra_*`` ->
        ``backbones.1.*`` (X), ``FRMs``/``FFMs`` -> ``frms``/``ffms``; the decoder's linear layers become
        1×1 convolutions and the fuse conv's bias is folded into its BatchNorm's running mean.
        """
        source = "CMX release"
        sd = dict(sd)
        fuse_bias = sd.pop("decode_head.linear_fuse.0.bias", None)
        rules: list = [
            (r"backbone\.extra_((?:patch_embed|block|norm)\d.*)", r"backbones.1.\1"),
            (r"backbone\.((?:patch_embed|block|norm)\d.*)", r"backbones.0.\1"),
        ]
        rules += fusion_reference_rules(
            r"backbone\.FRMs\.(?P<s>\d)\.", "frms.{s}.", r"backbone\.FFMs\.(?P<s>\d)\.", "ffms.{s}."
        )
        rules += head_release_rules("0", "1")  # RGBX's MLPDecoder: linear_fuse = Sequential(conv, BN)
        out = linear_to_conv(map_state_dict(sd, rules, source))
        if fuse_bias is not None:
            key = "head.linear_fuse.1.running_mean"
            if key not in out:
                raise ValueError(
                    f"{source}: decode_head.linear_fuse.1.running_mean missing (needed to fold the bias)"
                )
            if out[key].shape != fuse_bias.shape:
                raise ValueError(
                    f"{source}: decode_head.linear_fuse.0.bias has shape {tuple(fuse_bias.shape)}, "
                    f"its BatchNorm {tuple(out[key].shape)}"
                )
            out[key] = out[key] - fuse_bias
        return out

    # --- forward ----------------------------------------------------------------------------------------
    def _run(
        self, xs: list[torch.Tensor], present: list[int], want_features: bool
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The present inputs (each ``B×C_i×H×W``) -> the four fused maps and, with ``want_features``,
        the rectified maps of the present branches per stage (``P×B×C×h×w``)."""
        B, H, W = xs[0].shape[0], xs[0].shape[-2], xs[0].shape[-1]
        maps = [
            xs[present.index(i)] if i in present else xs[0].new_zeros(B, self.input_channels[i], H, W)
            for i in range(2)
        ]
        fused, feats = [], []
        for s in range(4):
            outs = []
            for enc, m in zip(self.backbones, maps):
                t, h, w = enc.embed(s, m)
                t = enc.stage_norm(s, enc.run_blocks(s, t, h, w))
                outs.append(t.reshape(B, h, w, -1).permute(0, 3, 1, 2))  # tokens -> B×C×h×w
            maps = list(self.frms[s](*outs))  # rectified maps go on in both branches
            fused.append(self.ffms[s](*maps))
            if want_features:
                feats.append(torch.stack([maps[i] for i in present]))
        return fused, feats

    def encode(self, inputs) -> list[torch.Tensor]:
        """Per stage ``P×B×C_s×h_s×w_s``: the rectified map of each present branch (model order)."""
        xs, present = self.prepare(inputs)
        return self._run(xs, present, want_features=True)[1]

    def forward_logits(self, xs: list[torch.Tensor], present: list[int]) -> torch.Tensor:
        fused, _ = self._run(xs, present, want_features=False)
        logits = self.head(fused)
        return upsample_logits(logits, xs[0].shape[-2:])


# cmx_b0 ... cmx_b5: head width 512 (256 for B0/B1), plain CE (ModelConfig's default loss)
register_mit_variants("cmx", "cmx", peer_decoder_dim)
