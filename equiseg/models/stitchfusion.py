"""StitchFusion (Li et al., ACM MM 2025, arXiv 2408.01343; LiBingyu01/StitchFusion) in equiseg
(docs/design.md §8.5).

One MiT, shared by all M modalities and run on them as one batch of ``M·B`` images (as EQUISeg does).
Inside the MiT blocks of the adapted stages, after the attention and again after the MLP, the
cross-modal adapters (:mod:`equiseg.models.modules.adapters`) add ``adapter_{i->j}(norm(x_i))`` to
every other modality j -- ``norm`` being the block's own ``norm1`` / ``norm2`` and each contribution
passing through the block's ``drop_path``. The block's submodules are reused as they are; only the
order of the two halves changes. The per-modality streams (after each stage's LayerNorm) go on to the
next stage; per stage the M maps are fused for the SegFormer head (width 256 for B0/B1, 512 for B2+)
by a ``FeatureCross`` (:mod:`equiseg.models.modules.feature_cross`) or, as in the released DeLiVER
checkpoint, by their sum. The release trains with OHEM cross-entropy on DeLiVER (``configs/deliver.yaml``),
the loss of the registered variants.

The release's defect and ``reference_compat``: ``Block_every_one`` keeps ``outputs_orig_beforeAtt =
outputs`` -- the same list, not a copy -- so the features its adapters read have already been updated:
modality i's adapters read ``norm(x_i)`` *after* the attention residual and after the adapters of
modalities 0..i-1 have been added to it, and the result depends on the modality order (the same
happens after the MLP). ``reference_compat=True`` reproduces that exactly (the released weights were
trained with it). The default is the corrected model, which the release's own comment describes ("the
original, before the attention"): every adapter reads the normalised block input that the attention
reads (and, after the MLP, the normalised input of the MLP), all pairs at once, order-free.

Absent modalities (``None``): only the present ones are encoded; the adapters run among the present
modalities only (an absent one neither sends nor receives), and a stage's fusion sees zeros in the
absent slots -- the FeatureCross's ``Linear(M·C -> C)`` has a weight block per modality slot, so the
absent slots are zero-filled (their blocks drop out of the product), and the sum fusion simply sums the
present ones. That is what the released model computes on the benchmark's zero-filled *fused* slots,
and it keeps every present modality's features independent of an absent one's placeholder.
``encode`` returns the present modalities' stage features (after each stage's LayerNorm), in model
order.

The released checkpoints differ from the released model file: StitchFusion's issues #3/#4 report
that its checkpoints do not load into ``semseg/models/backbones/stitchfusion.py``. The missing-key
lists quoted there show why. The DeLiVER RGB-D-E-L checkpoint (MiT-B2; pair adapters up to
``adap_t_att34``) lacks every adapter of stages 1-2 (``block1.*``, ``block2.0-3.*``) and every
``feature_cross`` weight, while nothing of stages 3-4 is missing: it has ``every_one`` adapters in
stages 3 and 4 only and no FeatureCross -- the configuration the repository's
``stitchfusion_with_tips_you_can_copy.py`` gives for RGB-D-E-L (plain ``Block`` in stages 1-2,
``Block_every_one_2`` in 3-4, the *sum* of the modality maps to the head; a ``FeatureConc`` fusion
would have left ``feature_conc.*`` keys, and none is quoted). The FMB checkpoint (issue #4, MiT-B3,
RGB-T) has ``shared`` adapters (``adap_t`` / ``adap2_t``) in stage 1 where the model file expects
pair adapters; the tips file gives FMB shared adapters in stages 1-2 and pair adapters in 3-4, a mix
of kinds this model does not build (one ``stitch_adapter`` for all adapted stages; for two modalities
the two kinds compute the same function, as the release's own comment notes, but are named apart). Hence the fields
``stitch_adapter_stages`` and ``stitch_fusion``: the DeLiVER release loads with
``stitch_adapter_stages=(False, False, True, True), stitch_fusion="sum"`` (modalities in the release's
order), and :meth:`StitchFusion.reference_state_dict` reads the layout off the keys and says which
fields to set when a file does not match the model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

from equiseg.layers import init_weights
from equiseg.models.config import ModelConfig

from .backbones import MixVisionTransformer, mit_kwargs
from .base import Inputs, SegModel, upsample_logits
from .modules.adapters import ADAPTER_MODES, PairAdapters, PairPlan, adapter_pairs, pair_plan
from .modules.feature_cross import FeatureCross
from .modules.heads import SegFormerHead, head_release_rules, linear_to_conv
from .reference import map_state_dict
from .registry import peer_decoder_dim, register_architecture, register_mit_variants

__all__ = ["StitchFusion"]

# release key of one adapter: backbone.block{s}.{j}.{adap_t_att12 | adap_t_mlp12 | adap_t | adap2_t}.adapter_*
_ADAPTER_KEY = re.compile(
    r"backbone\.block(\d)\.(\d+)\.(adap_t_att|adap_t_mlp|adap_t|adap2_t)(\d*)\.adapter_(down|mid|up)\.(weight|bias)"
)


@register_architecture("stitchfusion")
class StitchFusion(SegModel):
    """StitchFusion built from a :class:`~equiseg.config.ModelConfig` (module docstring)."""

    has_modality_features = True

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        if not cfg.share_encoder:
            raise ValueError("stitchfusion shares one MiT across its modalities: share_encoder must be true")
        if cfg.stitch_adapter not in ADAPTER_MODES:
            raise ValueError(
                f"stitch_adapter must be one of {', '.join(ADAPTER_MODES)}, got {cfg.stitch_adapter!r}"
            )
        if len(cfg.stitch_adapter_stages) != 4:
            raise ValueError(
                f"stitch_adapter_stages needs one true/false per stage (4), got {list(cfg.stitch_adapter_stages)}"
            )
        if cfg.stitch_adapter_dim < 1:
            raise ValueError(f"stitch_adapter_dim must be >= 1, got {cfg.stitch_adapter_dim}")
        n = self.num_modalities
        self.backbone = MixVisionTransformer(**mit_kwargs(cfg), stems=cfg.channels)
        # adapters[s][j]: the two PairAdapters of block j of stage s ("attn": after the attention, "mlp":
        # after the MLP); empty for stages without adapters and for a single modality
        self.adapters = nn.ModuleList()
        for s in range(4):
            blocks = nn.ModuleList()
            if n > 1 and cfg.stitch_adapter_stages[s]:
                for _ in range(cfg.depths[s]):
                    pa = dict(mode=cfg.stitch_adapter, hidden=cfg.stitch_adapter_dim)
                    blocks.append(
                        nn.ModuleDict(
                            {
                                "attn": PairAdapters(cfg.embed_dims[s], n, **pa),
                                "mlp": PairAdapters(cfg.embed_dims[s], n, **pa),
                            }
                        )
                    )
            self.adapters.append(blocks)
        self.fusions = None
        if cfg.stitch_fusion == "feature_cross":
            self.fusions = nn.ModuleList([FeatureCross(c, n) for c in cfg.embed_dims])
            self.fusions.apply(init_weights)
        self.head = SegFormerHead(cfg.embed_dims, cfg.decoder_dim, cfg.num_classes, cfg.head_dropout)
        self.head.apply(init_weights)

    @property
    def encoders(self) -> list[MixVisionTransformer]:
        """The shared MiT (ImageNet weights go here; adapters and fusion keep their own init)."""
        return [self.backbone]

    # --- encoder ----------------------------------------------------------------------------------------
    def _block(
        self, blk: nn.Module, ad: nn.ModuleDict, t: torch.Tensor, H: int, W: int, P: int, plan: PairPlan
    ) -> torch.Tensor:
        """One adapted MiT block on the stacked tokens ``(P·B)×L×C``, with the block's own submodules."""
        PB, L, C = t.shape
        B = PB // P
        if not self.cfg.reference_compat:
            # corrected: the adapters read the normalised features the attention / MLP read
            n1 = blk.norm1(t)
            a1 = ad["attn"](n1.view(P, B * L, C), plan, B, blk.drop_path).view(PB, L, C)
            t = t + blk.drop_path(blk.attn(n1, H, W)) + a1
            n2 = blk.norm2(t)
            a2 = ad["mlp"](n2.view(P, B * L, C), plan, B, blk.drop_path).view(PB, L, C)
            return t + blk.drop_path(blk.mlp(n2, H, W)) + a2
        # the release (list alias): each source's adapters read its already-updated features, in turn
        t = t + blk.drop_path(blk.attn(blk.norm1(t), H, W))
        t = ad["attn"].sequential(t.view(P, B * L, C), blk.norm1, plan, B, blk.drop_path).view(PB, L, C)
        t = t + blk.drop_path(blk.mlp(blk.norm2(t), H, W))
        return ad["mlp"].sequential(t.view(P, B * L, C), blk.norm2, plan, B, blk.drop_path).view(PB, L, C)

    def _encode(self, xs: list[torch.Tensor], present: list[int]) -> list[torch.Tensor]:
        """The present inputs (each ``B×C_i×H×W``) -> per stage the per-modality maps
        ``P×B×C_s×h_s×w_s`` (after the stage norm)."""
        P = len(present)
        B = xs[0].shape[0]
        plan = (
            pair_plan(self.cfg.stitch_adapter, self.num_modalities, present, xs[0].device) if P > 1 else None
        )
        names = [self.modalities[i] for i in present]
        enc = self.backbone
        feats = []
        x = None  # the previous stage's output, (P·B)×C×H×W
        for s in range(4):
            # (P·B)×L×C: all modalities through the shared layers at once (stage 1: each its own stem)
            t, H, W = enc.embed_inputs(xs, names) if s == 0 else enc.embed(s, x)
            adapters = self.adapters[s]
            for j, blk in enumerate(getattr(enc, f"block{s + 1}")):
                if plan is None or not len(adapters):  # one present modality, or a stage without adapters
                    t = blk(t, H, W)
                else:
                    t = self._block(blk, adapters[j], t, H, W, P, plan)
            t = enc.stage_norm(s, t)
            x = t.reshape(P * B, H, W, -1).permute(0, 3, 1, 2)  # tokens -> (P·B)×C×H×W, channels-last
            feats.append(x.view(P, B, *x.shape[1:]))  # P×B×C×H×W; each modality goes on to stage s+1
        return feats

    def _fuse(self, feats: list[torch.Tensor], present: list[int]) -> list[torch.Tensor]:
        """Per stage, the M modality maps -> one ``B×C×h×w`` map for the head (absent slots: zeros)."""
        if self.fusions is None:
            return [f.sum(0) for f in feats]
        return [fc(f, present) for fc, f in zip(self.fusions, feats)]

    # --- public API -------------------------------------------------------------------------------------
    def encode(self, inputs: Inputs) -> list[torch.Tensor]:
        """The four stages' per-modality features, each ``P×B×C_s×h_s×w_s`` (P = present modalities, in
        model order; after the stage LayerNorm, i.e. what the fusion and the next stage read)."""
        xs, present = self.prepare(inputs)
        return self._encode(xs, present)

    def forward_logits(self, xs: list[torch.Tensor], present: list[int]) -> torch.Tensor:
        logits = self.head(self._fuse(self._encode(xs, present), present))
        return upsample_logits(logits, xs[0].shape[-2:])

    # --- released checkpoints ---------------------------------------------------------------------------
    def reference_state_dict(self, sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map a StitchFusion release (``backbone.*``, ``decode_head.*``) onto this model, strictly.

        The MiT keys keep their names (the release uses the original ``mit_b*.pth`` names under
        ``backbone.``); each block's per-pair adapters ``adap_t_att{i}{j}`` / ``adap_t_mlp{i}{j}`` (or
        ``adap_t`` / ``adap2_t`` when shared) are stacked into ``adapters.{s}.{j}.attn|mlp``; the
        ``feature_cross`` layers go to ``fusions.{s}``; the head's ``linear_c{i}.proj`` Linear weights
        become 1×1 convolutions. Modality i of the release is modality i of this model (build it with
        the modalities in the release's order, e.g. ``img, depth, event, lidar`` -> ``rgb, depth, event,
        lidar``).

        Raises:
            ValueError: the release's layout (adapter stages and kind, fusion) differs from this model's
                (with the settings that fit), or a key has no place in the model (named).
        """
        self._check_release_layout(sd)
        adapters = {k: v for k, v in sd.items() if _ADAPTER_KEY.fullmatch(k)}
        rest = {k: v for k, v in sd.items() if k not in adapters}
        out = self._stack_adapters(adapters)
        fc = r"backbone\.feature_cross\."
        rules = [
            (r"backbone\.((?:patch_embed|norm)\d\..+)", r"backbone.\1"),
            (r"backbone\.(block\d\.\d+\.(?:norm1|norm2|attn|mlp)\..+)", r"backbone.\1"),
            (fc + r"liner_fusion_layers\.(\d)\.(weight|bias)", r"fusions.\1.fuse.\2"),
            (fc + r"mix_ffn\.(\d)\.(fc1|fc2)\.(weight|bias)", r"fusions.\1.\2.\3"),
            (fc + r"mix_ffn\.(\d)\.pwconv(\d)\.pwconv\.(weight|bias)", r"fusions.\1.pw\2.\3"),
            (fc + r"mix_ffn\.(\d)\.pwconv(\d)\.bn\.(.+)", r"fusions.\1.bn\2.\3"),
            (fc + r"mix_ffn\.(\d)\.dwconv(3|5|7)\.dwconv\.(weight|bias)", r"fusions.\1.dw\2.\3"),
            (fc + r"channel_attns\.(\d)\.fc\.0\.weight", r"fusions.\1.se_reduce.weight"),
            (fc + r"channel_attns\.(\d)\.fc\.2\.weight", r"fusions.\1.se_expand.weight"),
            *head_release_rules("conv", "bn"),
        ]
        # a zero-width SE layer (C < 16) holds no numbers; this model builds none
        rest = {k: v for k, v in rest.items() if not (v.numel() == 0 and ".channel_attns." in k)}
        mapped = map_state_dict(rest, rules, "stitchfusion release")
        own = self.state_dict()
        stray = [k for k in mapped if k not in own]
        if stray:
            back = {v: k for k, v in zip(rest, mapped)}  # map_state_dict keeps the order of the keys
            names = ", ".join(back.get(k, k) for k in stray[:5]) + (", ..." if len(stray) > 5 else "")
            raise ValueError(
                f"stitchfusion release: {len(stray)} key(s) have no place in this model: {names}"
            )
        out.update(linear_to_conv(mapped))
        return out

    def _stack_adapters(self, adapters: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Gather the release's per-pair adapter tensors into this model's stacked parameters."""
        own = self.state_dict()
        n = self.num_modalities
        mode = self.cfg.stitch_adapter
        index = {
            ("" if mode == "shared" else f"{i + 1}{j + 1}"): a
            for a, (i, j) in enumerate(adapter_pairs(mode, n))
        }
        slots: dict[str, dict[int, torch.Tensor]] = {}
        for key, value in adapters.items():
            s, j, kind, pair, layer, what = _ADAPTER_KEY.fullmatch(key).groups()
            where = "attn" if kind in ("adap_t_att", "adap_t") else "mlp"
            if (kind in ("adap_t", "adap2_t")) != (mode == "shared") or pair not in index:
                raise ValueError(
                    f"stitchfusion release: key {key!r} has no place in this model "
                    f"(stitch_adapter={mode!r}, {n} modalities)"
                )
            name = f"adapters.{int(s) - 1}.{j}.{where}.{layer}_{what}"
            if name not in own:
                raise ValueError(f"stitchfusion release: key {key!r} has no place in this model (no {name})")
            slots.setdefault(name, {})[index[pair]] = value
        out = {}
        for name, got in slots.items():
            A = own[name].shape[0]
            if sorted(got) != list(range(A)):
                missing = sorted(set(range(A)) - set(got))
                raise ValueError(f"stitchfusion release: {name} lacks the adapters of pairs {missing}")
            out[name] = torch.stack([got[a] for a in range(A)])
        return out

    def _check_release_layout(self, sd: Mapping[str, torch.Tensor]) -> None:
        """Compare the release's adapter stages / kind and fusion (read off its keys) with this model's."""
        stages, kinds = [False] * 4, set()
        for key in sd:
            m = _ADAPTER_KEY.fullmatch(key)
            if m:
                stages[int(m[1]) - 1] = True
                digits = m[4]
                if m[3] in ("adap_t", "adap2_t"):
                    kinds.add("shared")
                elif len(digits) == 2 and digits[0] > digits[1]:
                    kinds.add("every_two")
        has_fc = any(k.startswith("backbone.feature_cross.") for k in sd)
        cfg = self.cfg
        want_stages = tuple(bool(cfg.stitch_adapter_stages[s]) and self.num_modalities > 1 for s in range(4))
        problems, fix = [], []
        if tuple(stages) != want_stages:
            problems.append(f"adapters in stages {[s + 1 for s in range(4) if stages[s]]}")
            fix.append(f"stitch_adapter_stages={tuple(stages)}")
        if len(kinds) > 1:
            raise ValueError(
                "stitchfusion release: its blocks mix adapter kinds (shared and per-pair) across stages, "
                "which this model does not build (one stitch_adapter for all adapted stages)"
            )
        if any(_ADAPTER_KEY.fullmatch(k) for k in sd) and not kinds:
            kinds.add("every_one")  # per-pair adapters, i < j only
        kind = kinds.pop() if kinds else None
        if kind is not None and kind != cfg.stitch_adapter:
            problems.append(f"{kind} adapters")
            fix.append(f"stitch_adapter={kind!r}")
        if has_fc != (cfg.stitch_fusion == "feature_cross"):
            problems.append(
                "a FeatureCross fusion" if has_fc else "no FeatureCross (the sum of the modality maps)"
            )
            fix.append(f"stitch_fusion={'feature_cross' if has_fc else 'sum'!r}")
        if problems:
            raise ValueError(
                f"stitchfusion release: the file has {', '.join(problems)}; build the model with {', '.join(fix)}"
            )


# stitchfusion_b0 ... stitchfusion_b5: the release's head widths (256 for B0/B1, 512 for B2+), its
# DeLiVER loss (OHEM CE, configs/deliver.yaml) and LayerNorm eps (torch's default 1e-5 in every
# nn.LayerNorm(dim) of the release, where the original MiT uses 1e-6).
register_mit_variants("stitchfusion", "stitchfusion", peer_decoder_dim, loss="ohem", ln_eps=1e-5)
