"""Input stems: the first patch embedding of a modality with other than 3 channels.

Only a MiT's stage-1 patch embedding (conv 7×7 / stride 4, then a LayerNorm) sees an input's channels;
everything after it works on ``C_1``-dim tokens. So a modality with ``C != 3`` channels (``data.channels``)
gets its own stage-1 patch embedding, its *stem*, and shares everything else: in a shared encoder the
stem sits beside ``patch_embed1`` (``backbone.stems.<modality>``); an architecture with one encoder per
modality gives that encoder a ``C``-channel ``patch_embed1``; CMNeXt's auxiliary branch gives the
modality its own stage-1 convolution beside the one its 3-channel auxiliaries share.

Every stem starts from the 3-channel pretrained weights through :func:`stem_weight_from_rgb`, the one
initialisation used by every architecture (MiT branches in :meth:`~equiseg.models.backbones.
MixVisionTransformer.adapt_rgb_state_dict`, CMNeXt's auxiliary convolution in its ``init_from_mit``).
"""

from __future__ import annotations

import torch

from equiseg.utils import DEFAULT_CHANNELS

__all__ = ["stem_weight_from_rgb"]


def stem_weight_from_rgb(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """A pretrained 3-channel convolution weight made to take ``channels`` input channels.

    ``D×3×k×k -> D×C×k×k``: the mean over the three input channels, repeated ``C`` times and scaled by
    ``3 / C``. Why this one: for an input whose ``C`` channels all carry one signal ``g``, the new filter
    answers ``Σ_c (3/C)·mean(W)·g = Σ_rgb W_rgb·g`` -- exactly what the pretrained filter answers to
    ``g`` repeated on R, G and B. So

    * with ``C = 1`` the stem computes, at initialisation, what the 3-channel network computed when the
      loaders repeated a 1-channel image three times: nothing is lost by no longer repeating it;
    * for any ``C`` the stage-1 activations keep the scale the pretrained LayerNorm and blocks expect
      (no ``C/3``-fold growth of the response), and no channel is favoured before training sets them
      apart.

    The bias and the patch embedding's LayerNorm are copied as they are. ``channels == 3`` returns the
    weight unchanged (the pretrained RGB filters, not their mean).

    Args:
        weight: ``D×3×k×k``, the pretrained stage-1 convolution.
        channels: ``C >= 1``.

    Raises:
        ValueError: ``weight`` is not a 3-channel convolution weight.
    """
    if weight.ndim != 4 or weight.shape[1] != DEFAULT_CHANNELS:
        raise ValueError(
            f"stem initialisation expects a D×3×k×k convolution weight, got shape {tuple(weight.shape)}"
        )
    if channels == DEFAULT_CHANNELS:
        return weight
    mean = weight.mean(dim=1, keepdim=True)  # D×1×k×k
    return (mean * (DEFAULT_CHANNELS / channels)).repeat(1, channels, 1, 1).contiguous()  # D×C×k×k
