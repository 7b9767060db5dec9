"""Model registry: ``create_model("equiseg_b0", num_classes=25, modalities=[...], pretrained=...)``.

Two levels, like timm: an *architecture* is a :class:`~equiseg.models.base.SegModel` subclass registered under
a name (``@register_architecture("equiseg")``), and a *model* (variant) is a registered function that fills in
the MiT configuration (docs/design.md §1.2) and the architecture's name (``arch``); everything else comes from
:class:`~equiseg.config.ModelConfig` defaults and the caller's overrides. A model config carries ``arch``, so
a checkpoint's stored config rebuilds the right class.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from equiseg.schema import from_dict, suggest
from equiseg.utils import bounded_repr

from .base import SegModel
from .config import ModelConfig

_MODELS: dict[str, Callable[[], dict[str, Any]]] = {}
_ARCHS: dict[str, type[SegModel]] = {}


def register_architecture(name: str) -> Callable[[type[SegModel]], type[SegModel]]:
    """Class decorator: ``ModelConfig(arch=name)`` builds this class."""

    def wrap(cls: type[SegModel]) -> type[SegModel]:
        _ARCHS[name] = cls
        return cls

    return wrap


def list_architectures() -> list[str]:
    _import_architectures()
    return sorted(_ARCHS)


def _import_architectures() -> None:
    """Import the architecture modules (each registers itself)."""
    from . import (
        cmnext,  # noqa: F401
        cmx,  # noqa: F401
        equiseg,  # noqa: F401
        magic,  # noqa: F401
        segformer,  # noqa: F401
        stitchfusion,  # noqa: F401
    )


def register_model(fn: Callable[[], dict[str, Any]], name: str | None = None) -> Callable[[], dict[str, Any]]:
    """Register a variant: ``fn()`` returns the :class:`ModelConfig` fields it fixes (incl. ``arch``)."""
    _MODELS[name or fn.__name__] = fn
    return fn


def register_mit_variants(
    prefix: str, arch: str, decoder_dim: Callable[[str], int], **fields: Any
) -> list[str]:
    """Register ``{prefix}_b0`` ... ``{prefix}_b5``: the six MiT sizes with ``arch``, the head width
    ``decoder_dim(size)`` and any further fixed ``fields`` (a callable value is called with the size)."""
    from .backbones import MIT_VARIANTS

    names = []
    for size, mit in MIT_VARIANTS.items():

        def variant(size: str = size, mit: dict = mit) -> dict[str, Any]:
            extra = {k: (v(size) if callable(v) else v) for k, v in fields.items()}
            return dict(arch=arch, **mit, decoder_dim=decoder_dim(size), **extra)

        names.append(f"{prefix}_{size}")
        register_model(variant, names[-1])
    return names


def segformer_decoder_dim(size: str) -> int:
    """SegFormer's head width: 256 for B0/B1, 768 for B2-B5."""
    return 256 if size in ("b0", "b1") else 768


def peer_decoder_dim(size: str) -> int:
    """CMNeXt / CMX / StitchFusion's head width: 256 for B0/B1, 512 for B2-B5."""
    return 256 if size in ("b0", "b1") else 512


def list_models() -> list[str]:
    _import_architectures()
    return sorted(_MODELS)


def model_config(
    name: str,
    num_classes: int = 25,
    modalities: Sequence[str] = ("rgb", "depth", "event", "lidar"),
    **overrides: Any,
) -> ModelConfig:
    """The :class:`ModelConfig` of a registered variant with ``overrides`` applied (validated)."""
    _import_architectures()
    if name not in _MODELS:
        sizes = ", ".join(sorted({n.rsplit("_", 1)[0] for n in _MODELS}))
        close = difflib.get_close_matches(name, list(_MODELS), n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(
            f"unknown model {bounded_repr(name)}{hint}; models are <architecture>_b0 ... _b5 with "
            f"architecture one of {sizes} (`equiseg models` lists them)"
        )
    if isinstance(modalities, str):
        raise ValueError(f"modalities must be a list of names, got the string {modalities!r}")
    data = _MODELS[name]()
    data.update(num_classes=num_classes, modalities=tuple(modalities))
    valid = {f for f in ModelConfig.__dataclass_fields__}
    for key in overrides:
        if key not in valid:
            raise ValueError(f"unknown override '{key}' for model '{name}'{suggest(key, valid)}")
    data.update(overrides)
    cfg = from_dict(ModelConfig, data)
    architecture(cfg.arch)  # validates the name
    return cfg


def architecture(name: str) -> type[SegModel]:
    """The class registered as ``name``."""
    _import_architectures()
    if name not in _ARCHS:
        raise ValueError(f"unknown architecture '{name}'; choose from {', '.join(sorted(_ARCHS))}")
    return _ARCHS[name]


def build_model(
    cfg: ModelConfig, pretrained: str | Path | None = None, pretrained_strict: bool = True
) -> SegModel:
    """Instantiate ``cfg.arch`` from a config; optionally load MiT or full-model weights (weights.py).

    Args:
        cfg: the model configuration.
        pretrained: MiT weights (into every branch) or a full EQUISeg state dict; None: random init.
        pretrained_strict: refuse MiT weights matching under 90 % of the encoder's keys
            (:data:`~equiseg.models.weights.MIN_COVERAGE`; ``model.pretrained_strict`` in a config).

    Returns:
        The model; ``model.pretrained_report`` is the :class:`~equiseg.models.weights.LoadResult` of the
        weights (print its ``summary()``), or None without ``pretrained``.
    """
    model = architecture(cfg.arch)(cfg)
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
) -> SegModel:
    """Build a registered model (``list_models()``).

    Args:
        name: ``equiseg_b0`` ... ``equiseg_b5``, or a peer (``segformer_b0``, ``cmnext_b2`` ...).
        num_classes: K (25 for DeLiVER, 19 for MUSES).
        modalities: names of the N inputs, in the order ``forward`` expects them.
        pretrained: path to ImageNet MiT weights (``mit_b*.pth`` or Hugging Face ``model.safetensors``),
            loaded into every modality branch, or to a full EQUISeg checkpoint / export. The load report
            is ``model.pretrained_report`` (:class:`~equiseg.models.weights.LoadResult`).
        pretrained_strict: refuse MiT weights that match under 90 % of the encoder's keys; False loads
            whatever matches (the report says how much).
        **overrides: any :class:`~equiseg.config.ModelConfig` field (``share_encoder=False``,
            ``hub="mean"``, ``lambda_sgm=40``, ``channels={"depth": 1}`` for a modality with other than 3
            input channels ...). An unknown key is a ``ValueError``.
    """
    return build_model(
        model_config(name, num_classes, modalities, **overrides), pretrained, pretrained_strict
    )
