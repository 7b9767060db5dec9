"""The model config: everything that defines a network (docs/design.md §1; the peers' own fields, §8).

It lives with the models (every architecture is built from it) and is imported by the experiment
config (:mod:`equiseg.config`), never the other way round. The typed-config machinery (YAML
round-trip, unknown-key errors, field constraints) is :mod:`equiseg.schema`.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

from equiseg.schema import _field, _validate, from_dict, load_yaml, save_yaml, to_dict
from equiseg.utils import DEFAULT_CHANNELS, check_channels

__all__ = ["ModelConfig"]


@dataclasses.dataclass
class ModelConfig:
    """Everything that defines an EQUISeg network (docs/design.md §1). Variants fill the MiT fields.

    The CMTB and SGM switches are the ablations of the paper's Tab. 2 and Tab. 3.
    """

    # --- which network: the architecture class (registry.register_architecture) and, for the peers,
    # whether to reproduce the released code's behaviour exactly, defects included (docs/design.md §8.7)
    arch: str = "equiseg"
    reference_compat: bool = False

    # --- task
    num_classes: int = _field(25, ge=1)
    modalities: tuple[str, ...] = ("rgb", "depth", "event", "lidar")
    ignore_index: int = 255
    # input channels of the modalities that do not have 3 (set from data.channels; e.g. {depth: 1}).
    # Each gets its own input stem (equiseg/models/backbones/stem.py); {} is the 3-channel network
    # of every released checkpoint, with the same state dict keys.
    channels: dict[str, int] = dataclasses.field(default_factory=dict)

    # --- MiT encoder (docs/design.md §1.2); defaults are B0
    embed_dims: tuple[int, ...] = (32, 64, 160, 256)
    depths: tuple[int, ...] = (2, 2, 2, 2)
    num_heads: tuple[int, ...] = (1, 2, 5, 8)
    sr_ratios: tuple[int, ...] = (8, 4, 2, 1)
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    # eps of the block and stage LayerNorms. The original release uses 1e-6; Hugging Face's port
    # uses 1e-5 everywhere. Patch-embedding and spatial-reduction norms are 1e-5 in both.
    ln_eps: float = 1e-6
    share_encoder: bool = True

    # --- Cross-modal Transformer Block (docs/design.md §1.5, paper Tab. 2)
    hub: typing.Literal["selfquery", "mean"] = "selfquery"
    cross_attention: bool = True
    residual: bool = True
    ppx_layer_scale: float = 1e-2
    # PPX blocks per stage and their MLP ratios: the paper does not say; one block per stage and
    # CMNeXt's ratios (8, 8, 4, 4) by default (docs/design.md §1.5). CMNeXt itself stacks depths[s] blocks.
    ppx_depths: tuple[int, ...] = (1, 1, 1, 1)
    ppx_mlp_ratios: tuple[float, ...] = (8.0, 8.0, 4.0, 4.0)

    # --- head (docs/design.md §1.6)
    decoder_dim: int = 256
    head_dropout: float = 0.1

    # --- losses (docs/design.md §2, §3.2, paper Tab. 3)
    loss: typing.Literal["ce", "ohem"] = "ce"
    ohem_thresh: float = 0.7  # keep pixels whose probability of the true class is below this
    sgm: bool = True
    prototype: bool = True
    pairing: typing.Literal["random", "cosine"] = "random"
    lambda_sgm: float = 60.0
    # Which stage feature f_n^i the SGM prototypes are taken from (the paper admits three readings):
    # "post_ln", the stage output after its LayerNorm (the default, docs/design.md §2.3: the feature
    # the next stage and the head see); "pre_ln", the CMTB output f' + f_c before it; "pre_cmtb", f'
    # before the CMTB (then L_s does not reach the CMTB). docs/reproduction.md reports each.
    sgm_features: typing.Literal["post_ln", "pre_ln", "pre_cmtb"] = "post_ln"
    # The SGM's arithmetic around Eq. (3)-(4), which the paper leaves open (equiseg/models/sgm.py):
    # "spec", the literal reading (batch prototypes of the present classes, class mean, KL averaged over
    # channels); "reference", that of the authors' RobustSeg code (per-sample prototypes of all classes
    # divided by the count twice, KL mean over K·C, divided by the batch size) -- about 10³ times weaker
    # at the same λ. docs/reproduction.md compares them.
    sgm_convention: typing.Literal["spec", "reference"] = "spec"

    # --- peers (docs/design.md §8): each architecture's own fields, one block per architecture, below
    # this line

    # --- StitchFusion (arch "stitchfusion"; LiBingyu01/StitchFusion; equiseg/models/stitchfusion.py)
    # which adapter carries modality i into j: one per unordered pair ("every_one", the release's
    # default), one per direction ("every_two"), or one for all pairs ("shared")
    stitch_adapter: typing.Literal["every_one", "every_two", "shared"] = "every_one"
    stitch_adapter_dim: int = _field(8, ge=1)  # the adapters' bottleneck width (8 in the release)
    # stages whose MiT blocks carry adapters; the released DeLiVER checkpoint has them in stages 3-4 only
    stitch_adapter_stages: tuple[bool, ...] = (True, True, True, True)
    # per-stage fusion of the modality maps for the head: the model file's FeatureCross, or their sum
    # (what the released DeLiVER checkpoint was trained with: it holds no FeatureCross weights)
    stitch_fusion: typing.Literal["feature_cross", "sum"] = "feature_cross"

    # --- MAGIC / MAGIC++ (arch "magic", "magicpp"; arXiv 2407.11344, 2412.16876; no public code). What
    # the papers leave open is chosen and explained in equiseg/models/magic.py.
    # modalities the selection keeps per sample: the k most robust + the k most fragile (papers: Top-1
    # and Last-1, k = 1); all present ones when 2k >= their number
    magic_num_selected: int = _field(1, ge=1)
    # "stage": each stage ranks its modalities by its own similarity (§8.6); "shared": one ranking per
    # sample from the mean similarity over the four stages, used at every stage
    magic_rank_scope: typing.Literal["stage", "shared"] = "stage"
    # MAGIC++'s multi-scale selection (MASM) also measures the similarity on g×g average-pooled grids
    # (g in this tuple) besides the full map, and averages; ignored by "magic"
    magic_rank_grids: tuple[int, ...] = _field((1, 2, 4), ge=1)
    # total loss L = L_M + λ·L_S + β·L_C (papers' Eq.; their values not stated in the sources at hand)
    magic_lambda_select: float = _field(1.0, ge=0)
    magic_beta_consistency: float = _field(1.0, ge=0)
    # temperature of the class-wise similarity distributions of the consistency loss L_C
    magic_temperature: float = _field(0.1, gt=0)
    # MAM/MIM blocks (CMNeXt-style pooling mixer + conv MLP): MLP ratio and layer-scale init
    magic_mlp_ratio: float = _field(4.0, gt=0)
    magic_layer_scale: float = _field(1e-2, ge=0)

    def __post_init__(self) -> None:
        # every field's declared range and Literal choices (schema.py; from_dict has checked YAML already)
        _validate(self, "")
        n = len(self.embed_dims)
        for name in ("depths", "num_heads", "sr_ratios", "ppx_depths", "ppx_mlp_ratios"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"{name} has {len(getattr(self, name))} entries, expected {n} (one per stage)"
                )
        if n != 4:
            raise ValueError(f"embed_dims must have 4 stages, got {n}")
        for c, h in zip(self.embed_dims, self.num_heads):
            if c % h:
                raise ValueError(f"embed dim {c} is not divisible by its number of heads {h}")
        if not self.modalities:
            raise ValueError("modalities must name at least one modality")
        if len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"modalities must be distinct, got {list(self.modalities)}")
        # kept in modality order and without the 3s, so equal networks have equal configs
        counts = check_channels(self.channels, self.modalities, "channels", "the modalities")
        self.channels = {m: c for m, c in counts.items() if c != DEFAULT_CHANNELS}

    @property
    def num_modalities(self) -> int:
        return len(self.modalities)

    @property
    def input_channels(self) -> tuple[int, ...]:
        """The channel count of each modality, in the order of ``modalities``."""
        return tuple(self.channels.get(m, DEFAULT_CHANNELS) for m in self.modalities)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return from_dict(cls, data, prefix="")

    def to_yaml(self, path: str | Path) -> None:
        save_yaml(self, path)

    @classmethod
    def from_yaml(cls, path: str | Path) -> ModelConfig:
        return from_dict(cls, load_yaml(path))
