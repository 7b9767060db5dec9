"""SegFormer (Xie et al., NeurIPS 2021) as the lower bound every table needs (docs/design.md §8.2).

One modality: the plain SegFormer -- the MiT of docs/design.md §1.2 and the all-MLP head of §1.6. N
modalities: the simplest equal-treatment baseline -- one shared MiT encodes every modality (batched as
``N·B``), the head reads the mean of the per-modality stage features, and nothing else is exchanged between
the modalities. It is EQUISeg without its two contributions (no Cross-modal Transformer Block, no SGM loss),
so it is built as exactly that: the same encoding, mean fusion and head code, with ``cross_modal = False``.
The ``sgm``/``lambda_sgm``/CMTB fields of the config are ignored.

Absent modalities (``None``) are left out of the mean: the head sees the mean of the present ones, and
``encode`` returns the present modalities' features. ``share_encoder: false`` gives every modality its
own MiT (the late-fusion "N SegFormers" baseline). No public multimodal release exists to load.
"""

from __future__ import annotations

from .equiseg import EQUISeg
from .registry import register_architecture, register_mit_variants, segformer_decoder_dim

__all__ = ["SegFormer"]


@register_architecture("segformer")
class SegFormer(EQUISeg):
    """SegFormer; with N modalities a shared MiT and the mean of the per-modality stage features."""

    cross_modal = False


# segformer_b0 ... segformer_b5: SegFormer's own head widths (256 for B0/B1, 768 for B2+)
register_mit_variants("segformer", "segformer", segformer_decoder_dim, sgm=False)
