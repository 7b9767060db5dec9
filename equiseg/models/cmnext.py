"""CMNeXt (Zhang et al., CVPR 2023, "Delivering Arbitrary-Modal Semantic Segmentation"), docs/design.md §8.3.

Public code: jamycheung/DELIVER (``semseg/models/backbones/cmnext.py``, ``modules/ffm.py``,
``modules/mspa.py``, ``heads/segformer.py``). Two branches:

* **RGB**: a plain :class:`~equiseg.models.backbones.MixVisionTransformer` (``self.backbone``, named as the
  ImageNet ``mit_b*.pth`` files, so they load with no renaming). The *primary* is ``modalities[0]``
  whatever its name (``rgb`` in every published setting); the other N-1 are the auxiliaries.
* **Auxiliary**, per stage s: a :class:`ParallelPatchEmbed` (one conv shared by the auxiliaries, a channel
  LayerNorm each) -> the Self-Query Hub over the auxiliaries (``x_m·(1+s_m)``, max over m; skipped with
  one auxiliary) -> ``depths[s]`` PPX (= MSPA) blocks, MLP ratios 8, 8, 4, 4, stochastic depth as the
  RGB blocks -> a channel LayerNorm. Then :class:`~equiseg.models.modules.frm_ffm.FRM` rectifies the
  RGB stage output and this auxiliary feature against each other and
  :class:`~equiseg.models.modules.frm_ffm.FFM` fuses them: the fused map goes to the head; the
  rectified RGB map goes on in the RGB branch; the rectified auxiliary feature is added to every
  auxiliary stream before the next stage (with one auxiliary, it *is* the stream).
* Head: the SegFormer all-MLP head on the four fused maps (DELIVER's head is ours exactly: linear per
  stage, concatenation ``[c4, c3, c2, c1]``, bias-free 1×1 fuse conv + BN + ReLU, ``Dropout2d(0.1)``,
  classifier); width 512 for B2-B5, 256 for B0/B1; OHEM cross-entropy (``loss="ohem"`` in the
  variants). With one modality there is no auxiliary branch: a plain SegFormer, as the release.

Choices the release makes and we keep, in both modes:

* The auxiliary streams that go on are the hub's *scored* ones, ``x_m·(1+s_m)`` (the release's hub
  overwrites its input list in place), plus the rectified auxiliary feature. Only the reshape below
  is treated as a defect (docs/design.md §8.7).
* LayerNorm eps: DELIVER builds its MiT with torch's default ``nn.LayerNorm`` (eps 1e-5 in every
  norm, unlike SegFormer's 1e-6), so the variants fix ``ln_eps=1e-5``; the auxiliary channel
  LayerNorms use 1e-6 as there.

``reference_compat=True`` reproduces the released auxiliary-stream defect (docs/design.md §8.7): the stream
update ``x_.reshape(B, H, W, -1).permute(0, 3, 1, 2) + x_f`` is applied to maps that are already ``B×C×H×W``,
which re-reads each ``C×H×W`` block as ``H×W×C`` and scrambles channels and positions. It happens only with >=
2 auxiliaries (with one the stream is replaced by the rectified feature), which is why the default (corrected)
model equals the compat one with one auxiliary. The released weights were trained with it and score as
published only with it.

Differences from the release that are fixes, not behaviour: every branch starts from the same
ImageNet file (:meth:`CMNeXt.init_from_mit` also fills the auxiliary patch embeddings, which the
release leaves random); depth-wise convolutions are initialised with the correct fan-out (the release
computes ``fan_out // m.groups`` without assigning it); all six sizes B0-B5 are registered (the release
comments out B0, B1, B3).

Absent modalities (``None``): absent auxiliaries are left out -- the patch embedding, the hub's max and
the streams cover the present ones only (the hub over one present auxiliary of several is still its
``x·(1+s)``). The architecture has no path without its RGB branch or without any auxiliary feature (FRM and
FFM need both maps at every stage), so an absent RGB input, and all auxiliaries when none is present, are
replaced by zeros -- exactly what the robustness protocol (docs/design.md §6) feeds for a missing modality, so
both conventions give the same logits there.

``encode`` (the modality-contribution analysis): per stage, for each present modality in model order,
the feature that modality's branch carries on after the stage -- the rectified RGB map for the
primary, and for auxiliary m its stream ``x_m·(1+s_m) + f_aux`` (``f_aux`` with one auxiliary) -- also
computed after stage 4, where nothing follows.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from equiseg.layers import init_weights
from equiseg.layers.norm import ChannelLayerNorm
from equiseg.models.config import ModelConfig
from equiseg.utils import DEFAULT_CHANNELS

from .backbones import MixVisionTransformer, mit_kwargs, stem_weight_from_rgb
from .base import SegModel, upsample_logits
from .modules.frm_ffm import FFM, FRM, fusion_reference_rules, prefixed_rules
from .modules.heads import SegFormerHead, head_release_rules, linear_to_conv
from .modules.hub import SelfQueryHub
from .modules.parallel_embed import ParallelPatchEmbed
from .modules.ppx import PPX
from .reference import map_state_dict
from .registry import peer_decoder_dim, register_architecture, register_mit_variants

__all__ = ["CMNeXt"]

PPX_MLP_RATIOS = (8.0, 8.0, 4.0, 4.0)  # the release's extra_block{s} MLP ratios
PPX_LAYER_SCALE = 1e-2  # MSPABlock's layer-scale init
AUX_LN_EPS = 1e-6  # the release's ConvLayerNorm / LayerNormParallel eps

# PPX (MSPABlock) names of the release, relative to one block -> ours (frm_ffm.prefixed_rules format)
_PPX_RULES = [
    (r"norm(?P<n>[12])\.(?P<p>\w+)", "norm{n}.{p}"),  # BatchNorms incl. running stats
    (r"attn\.conv0\.(?P<p>weight|bias)", "mixer.dwconv.{p}"),
    (r"attn\.conv4\.(?P<p>weight|bias)", "mixer.gate.{p}"),
    (r"mlp\.fc(?P<n>[12])\.(?P<p>weight|bias)", "mlp.fc{n}.{p}"),
    (r"mlp\.dwconv\.dwconv\.(?P<p>weight|bias)", "mlp.dwconv.{p}"),
    (r"layer_scale_(?P<n>[12])", "layer_scale{n}"),
    (r"c_nets\.0\.weight", "channel_gate.conv.weight"),
]
_HUB_KEY = r"backbone\.extra_score_predictor\.(\d+)\.score_nets\.(\d+)\.([01])\.(weight|bias)"


@register_architecture("cmnext")
class CMNeXt(SegModel):
    """CMNeXt built from a :class:`~equiseg.config.ModelConfig` (``create_model("cmnext_b2", ...)``); see
    the module docstring for the structure, ``None`` inputs, ``encode`` and ``reference_compat``."""

    has_modality_features = True

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        dims, depths = tuple(cfg.embed_dims), tuple(cfg.depths)
        self.num_aux = self.num_modalities - 1
        # the primary's MiT takes its channels (its patch_embed1 is the stem of a non-3-channel primary)
        self.backbone = MixVisionTransformer(**mit_kwargs(cfg), in_chans=self.input_channels[0])
        if self.num_aux > 0:
            na = self.num_aux
            # auxiliaries with other than 3 channels get their own stage-1 convolution (their stem)
            own = {i: c for i, c in enumerate(self.input_channels[1:]) if c != DEFAULT_CHANNELS}
            self.aux_embeds = nn.ModuleList(
                [
                    ParallelPatchEmbed(
                        DEFAULT_CHANNELS if s == 0 else dims[s - 1],
                        dims[s],
                        7 if s == 0 else 3,
                        4 if s == 0 else 2,
                        na,
                        AUX_LN_EPS,
                        own_chans=own if s == 0 else None,
                    )
                    for s in range(4)
                ]
            )
            # the hub exists only with >= 2 auxiliaries (the release's extra_score_predictor)
            self.aux_hubs = nn.ModuleList([SelfQueryHub(d, na) for d in dims]) if na > 1 else None
            # stochastic depth: the same linear schedule over all blocks as the RGB branch (the release)
            dpr = torch.linspace(0, cfg.drop_path_rate, sum(depths)).tolist()
            starts = [sum(depths[:s]) for s in range(4)]
            self.aux_blocks = nn.ModuleList(
                [
                    nn.ModuleList(
                        [
                            PPX(dims[s], PPX_MLP_RATIOS[s], PPX_LAYER_SCALE, drop_path=dpr[starts[s] + j])
                            for j in range(depths[s])
                        ]
                    )
                    for s in range(4)
                ]
            )
            self.aux_norms = nn.ModuleList([ChannelLayerNorm(d, AUX_LN_EPS) for d in dims])
            self.frms = nn.ModuleList([FRM(d) for d in dims])
            self.ffms = nn.ModuleList([FFM(d, h) for d, h in zip(dims, cfg.num_heads)])
            for name in ("aux_embeds", "aux_hubs", "aux_blocks", "aux_norms", "frms", "ffms"):
                module = getattr(self, name)
                if module is not None:
                    module.apply(init_weights)
            for m in self.aux_blocks.modules():  # keep the layer-scale init after the generic pass
                if isinstance(m, PPX):
                    m.reset_layer_scale()
        self.head = SegFormerHead(dims, cfg.decoder_dim, cfg.num_classes, cfg.head_dropout)
        self.head.apply(init_weights)

    # --- weights --------------------------------------------------------------------------------------
    @property
    def encoders(self) -> list[MixVisionTransformer]:
        """The RGB branch's MiT; the auxiliary patch embeddings follow in :meth:`init_from_mit`."""
        return [self.backbone]

    @torch.no_grad()
    def init_from_mit(self, sd: dict[str, torch.Tensor]) -> None:
        """Initialise the auxiliary patch embeddings from the same ImageNet MiT file as the RGB branch:
        stage s's shared conv from ``patch_embed{s}.proj`` and every modality's LayerNorm from
        ``patch_embed{s}.norm`` (original key layout; :func:`~equiseg.models.weights.load_mit_weights`
        calls this). The release leaves them random. An auxiliary with other than 3 channels gets its
        stage-1 convolution from ``patch_embed1.proj`` through
        :func:`~equiseg.models.backbones.stem_weight_from_rgb`. Keys absent from ``sd`` are left as
        they are (the load report already lists them as missing from the RGB branch)."""
        if self.num_aux == 0:
            return
        for s, emb in enumerate(self.aux_embeds):
            pairs = [(f"patch_embed{s + 1}.proj.{p}", getattr(emb.proj, p)) for p in ("weight", "bias")]
            for norm in emb.norms:
                pairs += [(f"patch_embed{s + 1}.norm.{p}", getattr(norm, p)) for p in ("weight", "bias")]
            for stem in getattr(emb, "stems", {}).values():
                pairs += [(f"patch_embed{s + 1}.proj.{p}", getattr(stem, p)) for p in ("weight", "bias")]
            for key, param in pairs:
                if key not in sd:
                    continue
                value = sd[key]
                if key.endswith("proj.weight") and value.ndim == 4 and param.shape[1] != value.shape[1]:
                    value = stem_weight_from_rgb(value, param.shape[1])  # D×3×k×k -> D×C×k×k
                if value.shape != param.shape:
                    raise ValueError(
                        f"MiT weights: shape mismatch for '{key}' (auxiliary patch embedding): file has "
                        f"{tuple(sd[key].shape)}, model expects {tuple(param.shape)}"
                    )
                param.copy_(value)

    def reference_state_dict(self, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map a DELIVER CMNeXt release (``backbone.*``, ``decode_head.*``) onto this model's names, strictly.

        ``backbone.{patch_embed,block,norm}{s}`` are the RGB MiT's own names; ``extra_downsample_layers``,
        ``extra_block{s}``, ``extra_norm{s}``, ``FRMs``, ``FFMs`` become ``aux_embeds``, ``aux_blocks``,
        ``aux_norms``, ``frms``, ``ffms``; the per-modality score nets ``extra_score_predictor.{s}.
        score_nets.{i}`` are concatenated into the hub's grouped convolutions; the head's linear layers
        become 1×1 convolutions.
        """
        source = "CMNeXt release"
        sd = dict(sd)
        out = self._map_hub(sd, source)
        stage = lambda m: int(m[1]) - 1  # noqa: E731  (release stages are 1-based)
        rules: list = [
            (r"backbone\.((?:patch_embed|block|norm)\d.*)", r"backbone.\1"),
            (
                r"backbone\.extra_downsample_layers\.(\d)\.proj\.module\.(weight|bias)",
                r"aux_embeds.\1.proj.\2",
            ),
            (
                r"backbone\.extra_downsample_layers\.(\d)\.norm\.ln_(\d+)\.(weight|bias)",
                r"aux_embeds.\1.norms.\2.\3",
            ),
            (r"backbone\.extra_norm(\d)\.(weight|bias)", lambda m: f"aux_norms.{stage(m)}.{m[2]}"),
        ]
        rules += prefixed_rules(
            _PPX_RULES,
            r"backbone\.extra_block(?P<s>\d)\.(?P<j>\d+)\.",
            lambda m: f"aux_blocks.{int(m['s']) - 1}.{m['j']}.",
        )
        rules += fusion_reference_rules(
            r"backbone\.FRMs\.(?P<s>\d)\.", "frms.{s}.", r"backbone\.FFMs\.(?P<s>\d)\.", "ffms.{s}."
        )
        rules += head_release_rules("conv", "bn")
        out.update(linear_to_conv(map_state_dict(sd, rules, source)))
        return out

    def _map_hub(self, sd: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
        """Pop the release's per-modality score nets from ``sd`` and concatenate them into our hubs'
        grouped convolutions (``score_dw``: N·C depth-wise, ``score_pw``: N groups of C -> 1). Without a
        hub in this model they stay in ``sd`` and are reported as unmapped."""
        if getattr(self, "aux_hubs", None) is None:  # one auxiliary, or none (one modality)
            return {}
        parts: dict[tuple[int, int, str, str], torch.Tensor] = {}
        for key in [k for k in sd if re.fullmatch(_HUB_KEY, k)]:
            s, i, layer, p = re.fullmatch(_HUB_KEY, key).groups()
            if int(s) >= 4 or int(i) >= self.num_aux:
                raise ValueError(
                    f"{source}: key {key!r} has no place in the model (it has {self.num_aux} auxiliary "
                    "modalities and 4 stages)"
                )
            parts[(int(s), int(i), layer, p)] = sd.pop(key)
        out = {}
        names = {("0", "weight"): "score_dw.weight", ("0", "bias"): "score_dw.bias"}
        names.update({("1", "weight"): "score_pw.weight", ("1", "bias"): "score_pw.bias"})
        for s in range(4):
            for (layer, p), ours in names.items():
                found = [parts.get((s, i, layer, p)) for i in range(self.num_aux)]
                if all(t is None for t in found):
                    continue  # reported as missing by the strict load
                if any(t is None for t in found):
                    absent = [i for i, t in enumerate(found) if t is None]
                    raise ValueError(
                        f"{source}: backbone.extra_score_predictor.{s}.score_nets.{{{','.join(map(str, absent))}}}"
                        f".{layer}.{p} missing (the model has {self.num_aux} auxiliary modalities)"
                    )
                out[f"aux_hubs.{s}.{ours}"] = torch.cat(found, dim=0)
        return out

    # --- forward ----------------------------------------------------------------------------------------
    def _stream_carry(self, z: torch.Tensor) -> torch.Tensor:
        """What of the hub's scored streams ``z`` (``P×B×C×h×w``) goes on into the next stage: ``z``, or
        with ``reference_compat`` the release's re-read of each ``C×h×w`` block as ``h×w×C``."""
        if not self.cfg.reference_compat:
            return z
        P, B, C, h, w = z.shape
        # the release: x_.reshape(B, H, W, -1).permute(0, 3, 1, 2) on a B×C×H×W map (docs/design.md §8.7)
        return z.reshape(P, B, h, w, C).permute(0, 1, 4, 2, 3)

    def _run(
        self, xs: list[torch.Tensor], present: list[int], want_features: bool
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The present inputs (each ``B×C_i×H×W``) -> the four fused maps for the head and, with
        ``want_features``, the per-stage modality features ``P×B×C×h×w`` (see :meth:`encode`)."""
        B, H, W = xs[0].shape[0], xs[0].shape[-2], xs[0].shape[-1]
        zeros = lambda i: xs[0].new_zeros(B, self.input_channels[i], H, W)  # noqa: E731  (modality i)
        rgb = xs[present.index(0)] if 0 in present else zeros(0)  # absent RGB: zeros
        aux = index = None
        aux_present = [i - 1 for i in present if i > 0]
        if self.num_aux > 0:
            # stage 1 takes the auxiliaries as a list of B×C_i×H×W maps (their channels may differ)
            if aux_present:
                aux_idx = aux_present
                aux = [xs[present.index(i + 1)] for i in aux_idx]
            else:  # no auxiliary at all: zeros for every one (the protocol's missing input)
                aux_idx = list(range(self.num_aux))
                aux = [zeros(i + 1) for i in aux_idx]
            if self.aux_hubs is not None and len(aux_idx) < self.num_aux:
                index = torch.tensor(aux_idx, device=xs[0].device)
        fused, feats = [], []
        for s in range(4):
            t, h, w = self.backbone.embed(s, rgb)
            t = self.backbone.stage_norm(s, self.backbone.run_blocks(s, t, h, w))
            f_rgb = t.reshape(B, h, w, -1).permute(0, 3, 1, 2)  # tokens -> B×C×h×w (channels-last view)
            if self.num_aux == 0:  # one modality: a plain SegFormer
                rgb = f_rgb
                fused.append(f_rgb)
                if want_features:
                    feats.append(f_rgb.unsqueeze(0))
                continue
            streams = self.aux_embeds[s](aux, aux_idx)  # P_a×B×C×h×w
            if self.aux_hubs is not None:
                # SelfQueryHub.max_all, spelt out: the scored streams z are also what goes on
                scores = self.aux_hubs[s].scores(streams.permute(0, 1, 3, 4, 2), index)  # P_a×B×h×w×1
                z = streams * (1.0 + scores.permute(0, 1, 4, 2, 3))
                f_aux = z.amax(0)
            else:
                z, f_aux = None, streams[0]
            for blk in self.aux_blocks[s]:
                f_aux = blk(f_aux)
            f_aux = self.aux_norms[s](f_aux)
            rgb, f_aux = self.frms[s](f_rgb, f_aux)  # rectified: RGB goes on in the RGB branch
            fused.append(self.ffms[s](rgb, f_aux))
            if s < 3 or want_features:
                # the rectified auxiliary feature is added to every stream (with one auxiliary it is it)
                aux = self._stream_carry(z) + f_aux.unsqueeze(0) if z is not None else f_aux.unsqueeze(0)
            if want_features:
                mods = ([rgb.unsqueeze(0)] if 0 in present else []) + ([aux] if aux_present else [])
                feats.append(torch.cat(mods) if len(mods) > 1 else mods[0])
        return fused, feats

    def encode(self, inputs) -> list[torch.Tensor]:
        """Per stage ``P×B×C_s×h_s×w_s`` for the P present modalities in model order: the rectified RGB
        map (what goes on in the RGB branch) and each auxiliary's stream after the stage (what goes on
        into its next patch embedding; computed after stage 4 too)."""
        xs, present = self.prepare(inputs)
        return self._run(xs, present, want_features=True)[1]

    def forward_logits(self, xs: list[torch.Tensor], present: list[int]) -> torch.Tensor:
        fused, _ = self._run(xs, present, want_features=False)
        logits = self.head(fused)
        return upsample_logits(logits, xs[0].shape[-2:])


# cmnext_b0 ... cmnext_b5: head width 512 (256 for B0/B1), OHEM CE, and DELIVER's LayerNorm eps 1e-5
register_mit_variants("cmnext", "cmnext", peer_decoder_dim, loss="ohem", ln_eps=1e-5)
