"""Building blocks shared by the backbone, the fusion blocks and the head (one concept per file)."""

from .attention import SRAttention
from .drop import DropPath
from .init import init_weights, trunc_normal_
from .mlp import MixFFN
from .patch_embed import OverlapPatchEmbed

__all__ = ["DropPath", "MixFFN", "OverlapPatchEmbed", "SRAttention", "init_weights", "trunc_normal_"]
