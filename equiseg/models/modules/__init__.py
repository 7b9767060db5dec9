"""Building blocks of the architectures, each defined once and shared where the papers share them:
the Self-Query Hub and PPX (EQUISeg's CMTB and CMNeXt), EQUISeg's CMTB, FRM/FFM (CMX and CMNeXt), the
parallel patch embedding (CMNeXt), StitchFusion's adapters and FeatureCross, MAGIC's aggregation and
selection, the SegFormer head."""

from .adapters import PairAdapters
from .cmtb import CMTB
from .feature_cross import FeatureCross
from .frm_ffm import FFM, FRM, ChannelEmbed
from .heads import SegFormerHead
from .hub import SelfQueryHub
from .magic_aggregation import MAM, MIM
from .magic_selection import ASM, MASM
from .parallel_embed import ParallelPatchEmbed
from .ppx import PPX, ChannelGate, ConvMlp, PoolingAttention, box_mean

__all__ = [
    "ASM",
    "CMTB",
    "FFM",
    "FRM",
    "MAM",
    "MASM",
    "MIM",
    "PPX",
    "ChannelEmbed",
    "ChannelGate",
    "ConvMlp",
    "FeatureCross",
    "PairAdapters",
    "ParallelPatchEmbed",
    "PoolingAttention",
    "SegFormerHead",
    "SelfQueryHub",
    "box_mean",
]
