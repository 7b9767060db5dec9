"""Building blocks of the architectures, each defined once and shared where the papers share them:
the Self-Query Hub and PPX (EQUISeg's CMTB and CMNeXt), EQUISeg's CMTB, the SegFormer head."""

from .cmtb import CMTB
from .heads import SegFormerHead
from .hub import SelfQueryHub
from .ppx import PPX, ChannelGate, ConvMlp, PoolingAttention, box_mean

__all__ = [
    "CMTB",
    "PPX",
    "ChannelGate",
    "ConvMlp",
    "PoolingAttention",
    "SegFormerHead",
    "SelfQueryHub",
    "box_mean",
]
