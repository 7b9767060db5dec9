"""Released checkpoints of the public methods (CMNeXt, CMX, StitchFusion) in equiseg's models.

A release is a full-model ``state_dict`` in the public code's names (``backbone.*``, ``decode_head.*``;
docs/design.md §8.1). The loader (:func:`equiseg.models.loading.load_model`) recognises one and builds
the model its config names; :func:`load_reference_state_dict` maps every key to the equivalent equiseg
model's name *strictly*: a key no rule maps, a model key nothing fills, or a shape that differs is an
error naming the first few -- never the public benchmark scripts' ``strict=False``. Each architecture
that has a public release implements ``reference_state_dict(sd) -> sd`` (usually with
:func:`map_state_dict` and a rule table).

The released weights were trained with the public code's defects (CMNeXt's auxiliary reshape,
StitchFusion's list alias), so they score as published only in a model built with
``reference_compat=True``; :func:`load_reference_state_dict` warns when it is not.
:func:`load_reference_checkpoint` is the same for a file into a model the caller built.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .weights import load_state_dict_strict

__all__ = [
    "ReferenceLoad",
    "detect_release",
    "is_reference_state_dict",
    "load_reference_checkpoint",
    "load_reference_state_dict",
    "map_state_dict",
]

Rule = tuple[str, str | Callable[[re.Match[str]], str]]


@dataclass(frozen=True)
class ReferenceLoad:
    """What :func:`load_reference_checkpoint` loaded: the file, its format, how many tensors."""

    path: str
    format: str
    tensors: int

    def summary(self) -> str:
        return f"{self.path}: {self.format}, {self.tensors} tensors mapped and loaded strictly"


def is_reference_state_dict(sd: Mapping[str, object]) -> bool:
    """Whether ``sd`` looks like a public release (``backbone.*`` and ``decode_head.*`` keys)."""
    keys = [re.sub(r"^module\.", "", k) for k in sd]
    return any(k.startswith("backbone.") for k in keys) and any(k.startswith("decode_head.") for k in keys)


# Keys only one public release has: how a file tells which method it is from.
_SIGNATURES: tuple[tuple[str, str], ...] = (
    ("cmnext", r"backbone\.(extra_downsample_layers|extra_score_predictor)\."),
    ("cmx", r"backbone\.extra_patch_embed\d\."),
    ("stitchfusion", r"backbone\.(block\d\.\d+\.adap|feature_cross\.)"),
)


def detect_release(sd: Mapping[str, object]) -> str | None:
    """Which public method's release ``sd`` is (``cmnext``, ``cmx``, ``stitchfusion``), from the keys
    only one of them has; None if none matches. A release whose blocks carry no adapters and which
    has no other method's keys is StitchFusion's plain-MiT layout only if nothing else fits, so it is
    reported as None (the model's own mapping then decides)."""
    keys = [re.sub(r"^module\.", "", k) for k in sd]
    for arch, pattern in _SIGNATURES:
        rx = re.compile(pattern)
        if any(rx.match(k) for k in keys):
            return arch
    return None


def map_state_dict(
    sd: Mapping[str, torch.Tensor], rules: Iterable[Rule], source: str, drop: Iterable[str] = ()
) -> dict[str, torch.Tensor]:
    """Rename every key of ``sd`` by the first matching ``(regex, replacement)`` rule (``re.fullmatch``;
    the replacement is a template with ``\\1`` groups or a callable of the match).

    Args:
        drop: regexes of keys to leave out on purpose (e.g. buffers the public code keeps but never
            uses); they are not "unmapped".

    Raises:
        ValueError: keys no rule maps (the first few named), or two keys mapped to one name.
    """
    rules = [(re.compile(p), r) for p, r in rules]
    drops = [re.compile(p) for p in drop]
    out: dict[str, torch.Tensor] = {}
    unmapped = []
    for key, value in sd.items():
        k = re.sub(r"^module\.", "", key)
        if any(d.fullmatch(k) for d in drops):
            continue
        for pattern, repl in rules:
            m = pattern.fullmatch(k)
            if m:
                new = repl(m) if callable(repl) else m.expand(repl)
                if new in out:
                    raise ValueError(f"{source}: keys map to the same name {new!r} (second: {key!r})")
                out[new] = value
                break
        else:
            unmapped.append(key)
    if unmapped:
        shown = ", ".join(unmapped[:5]) + (", ..." if len(unmapped) > 5 else "")
        raise ValueError(
            f"{source}: {len(unmapped)} key(s) of the release have no place in the model: {shown}"
        )
    return out


def load_reference_checkpoint(model: nn.Module, path: str | Path) -> ReferenceLoad:
    """Load a public release's file into the equivalent equiseg ``model`` (built by the caller), strictly.

    Args:
        model: a peer built with the release's configuration (e.g. ``create_model("cmnext_b2",
            num_classes=25, modalities=[...], reference_compat=True)``).
        path: the released ``.pth`` or ``.safetensors``, read once by the loader's reader
            (:func:`equiseg.models.loading.read_model_file`: ``weights_only``; a ``state_dict``/``model``
            wrapper is unwrapped).

    Raises:
        ValueError: the architecture has no public release, the file is not one, or a key is unmapped,
            missing or mis-shaped (the first few named).
        FileNotFoundError, CheckpointError: no such file; an unreadable or unsafe one.
    """
    from .loading import read_model_file

    _mapper(model, path)  # before the file is read
    file = read_model_file(path)
    if file.format != "release":
        raise ValueError(
            f"{path}: not a released full-model state dict (expected 'backbone.*' and 'decode_head.*' keys, "
            f"got e.g. {', '.join(map(str, list(file.state_dict)[:3]))})"
        )
    return load_reference_state_dict(model, file.state_dict, path)


def _mapper(
    model: nn.Module, path: str | Path
) -> Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    mapper = getattr(model, "reference_state_dict", None)
    if not callable(mapper):
        raise ValueError(f"{path}: architecture '{_arch(model)}' has no public release to load")
    return mapper


def _arch(model: nn.Module) -> str:
    return getattr(getattr(model, "cfg", None), "arch", type(model).__name__)


def load_reference_state_dict(
    model: nn.Module, sd: Mapping[str, torch.Tensor], path: str | Path
) -> ReferenceLoad:
    """Map a release's state dict (already read from ``path``, named in messages) into ``model`` and load
    it strictly; warns when ``model`` is not built with ``reference_compat=True`` (docs/design.md §8.7).

    Raises:
        ValueError: as :func:`load_reference_checkpoint`; the release of another method than the model
            (``X is a cmnext release, but the model (from the config) is stitchfusion``).
    """
    arch = _arch(model)
    mapper = _mapper(model, path)
    detected = detect_release(sd)
    if detected is not None and detected != arch:
        raise ValueError(f"{path} is a {detected} release, but the model (from the config) is {arch}")
    try:
        mapped = mapper({re.sub(r"^module\.", "", k): v for k, v in sd.items()})
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    load_state_dict_strict(model, mapped, str(path), f"the {arch} release does not fit this model")
    if not getattr(model.cfg, "reference_compat", False):
        warnings.warn(
            f"{path}: released {arch} weights loaded into a model built without reference_compat=True; "
            "they were trained with the public code's behaviour and score as published only with it",
            stacklevel=2,
        )
    return ReferenceLoad(str(path), f"{arch} release state dict (backbone.*, decode_head.*)", len(mapped))
