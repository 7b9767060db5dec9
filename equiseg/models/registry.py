"""Model registry: ``create_model("equiseg_b0", num_classes=25, modalities=[...], pretrained=...)``.

Each variant is a registered function that only fills in the MiT configuration (SPEC §1.1), like
timm's ``@register_model``; everything else comes from :class:`~equiseg.config.ModelConfig` defaults
and the caller's overrides.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from equiseg.config import ModelConfig, from_dict, suggest

from .equiseg import EQUISeg

_MODELS: dict[str, Callable[[], dict[str, Any]]] = {}


def register_model(fn: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_MODELS)


_B1_PLUS = dict(embed_dims=(64, 128, 320, 512))


@register_model
def equiseg_b0() -> dict[str, Any]:
    return dict(embed_dims=(32, 64, 160, 256), depths=(2, 2, 2, 2), decoder_dim=256)


@register_model
def equiseg_b1() -> dict[str, Any]:
    return dict(**_B1_PLUS, depths=(2, 2, 2, 2), decoder_dim=256)


@register_model
def equiseg_b2() -> dict[str, Any]:
    # SegFormer-B2's head uses 768; CMNeXt's DeLiVER config uses 512 (override decoder_dim=512).
    return dict(**_B1_PLUS, depths=(3, 4, 6, 3), decoder_dim=768)


@register_model
def equiseg_b3() -> dict[str, Any]:
    return dict(**_B1_PLUS, depths=(3, 4, 18, 3), decoder_dim=768)


@register_model
def equiseg_b4() -> dict[str, Any]:
    return dict(**_B1_PLUS, depths=(3, 8, 27, 3), decoder_dim=768)


@register_model
def equiseg_b5() -> dict[str, Any]:
    return dict(**_B1_PLUS, depths=(3, 6, 40, 3), decoder_dim=768)


def model_config(
    name: str,
    num_classes: int = 25,
    modalities: Sequence[str] = ("rgb", "depth", "event", "lidar"),
    **overrides: Any,
) -> ModelConfig:
    """The :class:`ModelConfig` of a registered variant with ``overrides`` applied (validated)."""
    if name not in _MODELS:
        raise ValueError(f"unknown model '{name}'; choose from {', '.join(list_models())}")
    if isinstance(modalities, str):
        raise ValueError(f"modalities must be a list of names, got the string {modalities!r}")
    data = _MODELS[name]()
    data.update(num_classes=num_classes, modalities=tuple(modalities))
    valid = {f for f in ModelConfig.__dataclass_fields__}
    for key in overrides:
        if key not in valid:
            raise ValueError(f"unknown override '{key}' for model '{name}'{suggest(key, valid)}")
    data.update(overrides)
    return from_dict(ModelConfig, data)


def build_model(
    cfg: ModelConfig, pretrained: str | Path | None = None, pretrained_strict: bool = True
) -> EQUISeg:
    """Instantiate EQUISeg from a config; optionally load MiT or full-model weights (see weights.py).

    Args:
        cfg: the model configuration.
        pretrained: MiT weights (into every branch) or a full EQUISeg state dict; None: random init.
        pretrained_strict: refuse MiT weights matching under 90 % of the encoder's keys
            (:data:`~equiseg.models.weights.MIN_COVERAGE`; ``model.pretrained_strict`` in a config).

    Returns:
        The model; ``model.pretrained_report`` is the :class:`~equiseg.models.weights.LoadResult` of the
        weights (print its ``summary()``), or None without ``pretrained``.
    """
    model = EQUISeg(cfg)
    model.pretrained_report = None
    if pretrained is not None:
        from .weights import load_pretrained

        model.pretrained_report = load_pretrained(model, pretrained, strict=pretrained_strict)
    return model


def create_model(
    name: str,
    num_classes: int = 25,
    modalities: Sequence[str] = ("rgb", "depth", "event", "lidar"),
    pretrained: str | Path | None = None,
    pretrained_strict: bool = True,
    **overrides: Any,
) -> EQUISeg:
    """Build a registered EQUISeg variant.

    Args:
        name: ``equiseg_b0`` ... ``equiseg_b5``.
        num_classes: K (25 for DeLiVER, 19 for MUSES).
        modalities: names of the N inputs, in the order ``forward`` expects them.
        pretrained: path to ImageNet MiT weights (``mit_b*.pth`` or Hugging Face ``model.safetensors``),
            loaded into every modality branch, or to a full EQUISeg checkpoint / export. The load report
            is ``model.pretrained_report`` (:class:`~equiseg.models.weights.LoadResult`).
        pretrained_strict: refuse MiT weights that match under 90 % of the encoder's keys; False loads
            whatever matches (the report says how much).
        **overrides: any :class:`~equiseg.config.ModelConfig` field (``share_encoder=False``,
            ``hub="mean"``, ``lambda_sgm=40`` ...). An unknown key is a ``ValueError``.
    """
    return build_model(
        model_config(name, num_classes, modalities, **overrides), pretrained, pretrained_strict
    )
