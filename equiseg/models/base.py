"""What every architecture of equiseg shares (EQUISeg and its peers): one calling convention.

* ``model(inputs)`` -- ``inputs`` is a list of N tensors ``B×C_i×H×W`` in the order of
  ``model.modalities`` (``C_i = model.input_channels[i]``: 3 unless the config's ``channels`` says
  otherwise), ``None`` for an absent modality (each architecture documents how it handles one) ->
  logits ``B×K×H×W`` at the input size.
* ``model(inputs, labels=..., generator=...)`` / ``model.compute_loss(inputs, labels, generator)`` ->
  :class:`LossOutput` with the method's own training losses (a training step goes through ``forward``
  so that a DDP wrapper arms its gradient hooks).
* ``model.encode(inputs)`` -- per-modality stage features ``P×B×C_s×h_s×w_s`` where the architecture has
  them (``model.has_modality_features``), for the modality-contribution analysis.
* ``model.encoders`` -- the MiT module(s) that ImageNet weights initialise (every branch).
* ``model.cfg`` -- the :class:`~equiseg.config.ModelConfig` it was built from (``arch`` names the class).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from equiseg.models.config import ModelConfig

from .losses import cross_entropy, ohem_cross_entropy

MIN_INPUT_SIZE = 32  # below this the stride-32 stage / spatial reductions run out of pixels


def upsample_logits(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize of ``B×K×h×w`` head logits to the input ``size`` (``align_corners=False``), in the
    standard (NCHW) layout.

    The heads produce channels-last logits (their convolutions run that way); resized as they are, the
    full-size logits stay channels-last, and the cross-entropy's log-softmax over K is then about twice
    as slow on CPU. Making the small logits contiguous first costs next to nothing and makes resize +
    loss clearly faster (measured: README, Performance, and docs/results/benchmarks/code_notes.md).
    """
    return F.interpolate(logits.contiguous(), size=tuple(size), mode="bilinear", align_corners=False)


Inputs = Sequence[torch.Tensor | None]


@dataclass
class LossOutput:
    """What ``compute_loss`` returns: ``loss`` is the total that is back-propagated.

    ``loss_ce`` is the segmentation loss (CE or OHEM CE); ``loss_sgm`` EQUISeg's SGM term before λ (0 for
    the peers); ``terms`` the method's other loss terms *before* their weights (e.g. MAGIC's consistency
    losses), by name; ``logits`` the training logits at the input size.
    """

    loss: torch.Tensor
    loss_ce: torch.Tensor
    loss_sgm: torch.Tensor
    logits: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)

    def as_dict(self) -> dict[str, torch.Tensor]:
        """The scalar terms, detached, for logging."""
        return {
            "loss": self.loss.detach(),
            "loss_ce": self.loss_ce.detach(),
            "loss_sgm": self.loss_sgm.detach(),
            **{k: v.detach() for k, v in self.terms.items()},
        }


class SegModel(nn.Module):
    """Base class of every architecture: input validation, the forward/loss dispatch, the CE loss.

    Subclasses implement :meth:`forward_logits` (the present inputs, each ``B×C_i×H×W``, and their
    modality indices -> logits at the input size) and usually override :meth:`compute_loss` to add their
    own training losses.
    """

    has_modality_features = False  # True where encode() returns per-modality stage features
    # whether ``None`` inputs are accepted (every architecture here: each documents what it does with
    # one); ``train.modality_dropout.fill: absent`` is refused for a class that sets this False
    accepts_absent = True

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.modalities = tuple(cfg.modalities)
        self.num_modalities = len(self.modalities)
        self.input_channels = cfg.input_channels  # per modality; a modality with C != 3 has its own stem

    @property
    def encoders(self) -> list[nn.Module]:
        """The MiT module(s) ImageNet weights are loaded into (each gets the same tensors). An
        architecture with non-MiT branches built from MiT parts also defines ``init_from_mit(sd)``,
        called with the same (original-layout) state dict after the encoders are loaded."""
        return []

    # --- inputs ------------------------------------------------------------------------------------
    def prepare(self, inputs: Inputs) -> tuple[list[torch.Tensor], list[int]]:
        """Validate ``inputs`` -> the present ones (each ``B×C_i×H×W``) and their modality indices.

        They are not stacked here: modalities of different channel counts cannot share one tensor
        before their stems; each architecture stacks what its first layers share.
        """
        names = ", ".join(self.modalities)
        if not isinstance(inputs, (list, tuple)):
            raise ValueError(
                f"inputs must be a list of {self.num_modalities} tensors ({names}), got {type(inputs).__name__}"
            )
        if len(inputs) != self.num_modalities:
            raise ValueError(
                f"expected {self.num_modalities} inputs ({names}) in that order, got {len(inputs)}; "
                "pass None for a missing modality"
            )
        present, ref = [], None
        for i, x in enumerate(inputs):
            if x is None:
                continue
            name, channels = self.modalities[i], self.input_channels[i]
            if not isinstance(x, torch.Tensor):
                raise ValueError(f"input '{name}' must be a tensor or None, got {type(x).__name__}")
            if x.ndim != 4 or x.shape[1] != channels:
                raise ValueError(
                    f"input '{name}' must have shape B×{channels}×H×W ({channels} channel(s), the model's "
                    f"channels for it), got {tuple(x.shape)}"
                )
            if not x.is_floating_point():
                raise ValueError(f"input '{name}' must be a normalised float tensor, got dtype {x.dtype}")
            if ref is None:
                ref = (self.modalities[i], x.shape)
                if min(x.shape[-2:]) < MIN_INPUT_SIZE:
                    raise ValueError(
                        f"input '{name}' is {x.shape[-2]}×{x.shape[-1]}; "
                        f"inputs must be at least {MIN_INPUT_SIZE}×{MIN_INPUT_SIZE}"
                    )
            elif x.shape[0] != ref[1][0] or x.shape[-2:] != ref[1][-2:]:
                raise ValueError(
                    f"input '{name}' has shape {tuple(x.shape)} but '{ref[0]}' has {tuple(ref[1])}; "
                    "all modalities must share batch size and H×W"
                )
            present.append(i)
        if not present:
            raise ValueError(
                f"all {self.num_modalities} modalities ({names}) are None; at least one is needed"
            )
        return [inputs[i] for i in present], present

    def check_labels(self, xs: Sequence[torch.Tensor], labels: torch.Tensor) -> None:
        """``labels`` must be the ``B×H×W`` int64 of the present inputs ``xs``."""
        B, H, W = xs[0].shape[0], xs[0].shape[-2], xs[0].shape[-1]
        if labels.shape != (B, H, W):
            raise ValueError(
                f"labels must have shape {(B, H, W)} (B×H×W of the inputs), got {tuple(labels.shape)}"
            )
        if labels.dtype != torch.long:
            raise ValueError(f"labels must be int64, got {labels.dtype}")

    def check_keep(self, keep: torch.Tensor, batch: int) -> torch.Tensor:
        """``keep`` (``B×N``, which modality inputs each sample kept) checked, as bool."""
        if not isinstance(keep, torch.Tensor) or tuple(keep.shape) != (batch, self.num_modalities):
            shape = tuple(keep.shape) if isinstance(keep, torch.Tensor) else type(keep).__name__
            raise ValueError(
                f"keep must be a B×N tensor ({batch}×{self.num_modalities}: sample × modality), got {shape}"
            )
        return keep.bool()

    # --- the interface -----------------------------------------------------------------------------
    def forward_logits(self, xs: list[torch.Tensor], present: list[int]) -> torch.Tensor:
        """The present inputs (each ``B×C_i×H×W``, modalities ``present``) -> logits ``B×K×H×W``
        (subclasses)."""
        raise TypeError(f"{type(self).__name__} does not implement forward_logits")

    def encode(self, inputs: Inputs) -> list[torch.Tensor]:
        """Per-modality stage features, each ``P×B×C_s×h_s×w_s`` (where ``has_modality_features``)."""
        raise TypeError(f"{type(self).__name__} has no per-modality stage features to encode")

    def forward(
        self,
        inputs: Inputs,
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor | LossOutput:
        """``inputs``: N tensors ``B×C_i×H×W`` (or None) in the order of ``modalities`` -> logits ``B×K×H×W``.

        With ``labels`` it returns :meth:`compute_loss`'s :class:`LossOutput` instead, so a training step
        can go through a wrapper's ``forward`` (DDP arms its gradient hooks there); ``keep`` goes with it.
        """
        if labels is not None:
            if keep is None:
                return self.compute_loss(inputs, labels, generator)
            return self.compute_loss(inputs, labels, generator, keep=keep)
        xs, present = self.prepare(inputs)
        return self.forward_logits(xs, present)

    def segmentation_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """CE or OHEM CE (``cfg.loss``) over the non-ignored pixels."""
        cfg = self.cfg
        if cfg.loss == "ohem":
            return ohem_cross_entropy(logits, labels, cfg.ignore_index, cfg.ohem_thresh)
        return cross_entropy(logits, labels, cfg.ignore_index)

    def compute_loss(
        self,
        inputs: Inputs,
        labels: torch.Tensor,
        generator: torch.Generator | None = None,
        keep: torch.Tensor | None = None,
    ) -> LossOutput:
        """Forward + the segmentation loss (architectures with more training losses override this).

        ``keep``: optional ``B×N`` bool, which modality inputs of each sample were kept by modality
        dropout (the others are zero tensors). The network encodes every input as it is; only a
        method's own training losses (the SGM, MAGIC's selection) restrict themselves to the kept
        ones, so the segmentation loss alone does not use it.
        """
        xs, present = self.prepare(inputs)
        self.check_labels(xs, labels)
        if keep is not None:
            self.check_keep(keep, labels.shape[0])
        logits = self.forward_logits(xs, present)
        ce = self.segmentation_loss(logits, labels)
        return LossOutput(ce, ce, ce.new_zeros(()), logits)
