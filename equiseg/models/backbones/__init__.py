"""Encoders shared by every architecture (one home each): the Mix Transformer (SegFormer's MiT)."""

from .mit import MIT_VARIANTS, Block, MixVisionTransformer, mit_kwargs

__all__ = ["MIT_VARIANTS", "Block", "MixVisionTransformer", "mit_kwargs"]
