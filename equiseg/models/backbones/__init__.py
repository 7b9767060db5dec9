"""Encoders shared by every architecture (one home each): the Mix Transformer (SegFormer's MiT) and
the input stems of modalities with other than 3 channels."""

from .mit import MIT_VARIANTS, Block, MixVisionTransformer, mit_kwargs
from .stem import stem_weight_from_rgb

__all__ = ["MIT_VARIANTS", "Block", "MixVisionTransformer", "mit_kwargs", "stem_weight_from_rgb"]
