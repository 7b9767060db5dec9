"""One way to turn a saved model into a network: :func:`load_model`.

A source is read once (:func:`read_model_file`), and what it is comes from its content, not its name:

- ``checkpoint``: a training checkpoint written by ``equiseg train`` (``best.pt``, ``last.pt``): the
  weights (``model``), the model config they belong to (``model_config``), the class and normalisation
  meta (``meta``), the run's experiment config (``config``) and its iteration (``iter``);
- ``export``: an ``equiseg export`` folder (or its ``config.json`` / ``model.safetensors``): the weights
  in ``model.safetensors``, the model config and meta in ``config.json``;
- ``release``: a public release of a peer method, a full-model state dict in the public code's names
  (``backbone.*``, ``decode_head.*``; docs/design.md §8.1), mapped strictly into our module;
- ``state_dict``: a bare full-model state dict of ours (``torch.save(model.state_dict())``).

The first two carry their model config; the last two do not, and the caller names the model
(``config``, a :class:`~equiseg.models.config.ModelConfig`) and, for meaningful class names and
normalisation, its ``meta``. MiT encoder weights (docs/design.md §1.3) are recognised too (``mit``) but
are no model: they initialise training (``model.pretrained``), and :func:`load_model` says so.

This is the model-level part and needs nothing above ``models/``. Resolving an experiment config (a YAML
naming a release's model *and* its data set, whose definition gives the classes and normalisation) is
one layer up, :func:`equiseg.engine.eval_setup.load_with_config`, which every command and API function
uses; ``equiseg.load`` is that function.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from equiseg.checkpoint_io import load_checkpoint, load_safetensors
from equiseg.schema import from_dict, to_dict

from .base import SegModel
from .config import ModelConfig
from .reference import detect_release, is_reference_state_dict, load_reference_state_dict
from .weights import ANOTHER_ARCHITECTURE, is_mit_state_dict, load_state_dict_strict

__all__ = [
    "CONFIG_NAME",
    "EXPORT_FORMAT_VERSION",
    "FORMATS",
    "LoadedModel",
    "ModelFile",
    "TRAINING_ONLY_MODEL_KEYS",
    "WEIGHTS_NAME",
    "load_model",
    "model_from_checkpoint",
    "read_export_config",
    "read_model_file",
]

FORMATS = ("checkpoint", "export", "release", "state_dict")  # what load_model builds a network from
CONFIG_NAME = "config.json"  # an export folder's files (written by equiseg.tasks.export)
WEIGHTS_NAME = "model.safetensors"
EXPORT_FORMAT_VERSION = 1

_SOURCES = "an equiseg checkpoint (.pt), an `equiseg export` folder or a peer's released state dict"
_FULL_MODEL_KEYS = ("head.linear_pred.", "fusions.")  # every architecture of ours has the first
# What a weights mismatch means, per format: the message of load_state_dict_strict.
_MISMATCH = {
    "checkpoint": "weights do not match the model config stored with them",
    "export": ANOTHER_ARCHITECTURE,
    "state_dict": "the state dict does not fit the model the config names",
}

# ModelConfig fields that shape only the training losses or stochastic training layers, not the
# network evaluated in eval mode: a config may differ from a checkpoint in them (e.g. an ablation
# checkpoint with lambda_sgm 60 scored under the demo config's lambda_sgm 1) without changing a number.
TRAINING_ONLY_MODEL_KEYS = frozenset(
    {
        "loss",
        "ohem_thresh",
        "sgm",
        "prototype",
        "pairing",
        "lambda_sgm",
        "sgm_features",
        "sgm_convention",
        "drop_rate",
        "attn_drop_rate",
        "drop_path_rate",
        "head_dropout",
    }
)


def _variant(train_config: Mapping[str, Any] | None) -> str | None:
    model = (train_config or {}).get("model")
    name = model.get("name") if isinstance(model, Mapping) else None
    return str(name) if name else None


@dataclass
class ModelFile:
    """A model source as read, once, by :func:`read_model_file`: which format it is and its contents.

    Attributes:
        path: The source as given (the folder for an export).
        format: ``checkpoint``, ``export``, ``release``, ``state_dict`` (:data:`FORMATS`); or ``mit``
            (encoder weights) or ``unknown``, which :func:`load_model` refuses.
        state_dict: The weights (a wrapper such as ``{"state_dict": ...}`` removed).
        weights: The file the weights came from (``DIR/model.safetensors`` for an export).
        model_config: The stored model config (a mapping; checkpoints and exports only).
        meta: The stored class and normalisation meta (``{}`` when none is stored).
        train_config: The training run's experiment config (checkpoints only).
        iteration: The training iteration the checkpoint was saved at (checkpoints only).
    """

    path: Path
    format: str
    state_dict: dict[str, Any]
    weights: Path
    model_config: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    train_config: dict[str, Any] | None = None
    iteration: int | None = None

    @property
    def needs_config(self) -> bool:
        """Whether the caller must name the model (a release or a bare state dict carries no config)."""
        return self.format in ("release", "state_dict")

    @property
    def variant(self) -> str | None:
        """The registered model name the checkpoint was trained as (``equiseg_b0`` ...), if stored."""
        return _variant(self.train_config)

    @property
    def release(self) -> str | None:
        """Which peer's release this is (``cmnext``, ``cmx``, ``stitchfusion``), when its keys say so."""
        return detect_release(self.state_dict) if self.format == "release" else None


@dataclass
class LoadedModel:
    """What :func:`load_model` returns: the network and everything known about it.

    Attributes:
        model: The network, in eval mode, on the device asked for; ``model.meta`` is :attr:`meta`.
        format: Which source it was built from (:data:`FORMATS`).
        path: The source as given.
        model_config: The resolved model config the network was built from.
        meta: Classes, palette, modalities, ignore index and per-modality normalisation as stored (a
            checkpoint, an export) or given (a release); ``{}`` when neither.
        name: The model's name for tables: the registered variant it was trained as, else the name the
            caller gave, else the architecture.
        weights: The file the weights came from.
        train_config: The training run's experiment config (checkpoints only; eval's checks read it).
        iteration: The training iteration (checkpoints only).
        report: One line on how the weights were loaded (a release: its mapping).
    """

    model: SegModel
    format: str
    path: Path
    model_config: ModelConfig
    meta: dict[str, Any]
    name: str
    weights: Path
    train_config: dict[str, Any] | None = None
    iteration: int | None = None
    report: str = ""

    @property
    def variant(self) -> str | None:
        """The registered model name the checkpoint was trained as (``equiseg_b0`` ...), if stored."""
        return _variant(self.train_config)

    @property
    def num_classes(self) -> int:
        return self.model_config.num_classes

    @property
    def classes(self) -> list[str]:
        """The class names (the stored ones, else ``"0"``, ``"1"`` ...)."""
        return [str(c) for c in self.meta.get("classes") or range(self.num_classes)]

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modality names the network takes, in input order."""
        return tuple(self.model_config.modalities)

    @property
    def norm_stats(self) -> dict[str, Any]:
        """Per-modality normalisation as stored (``{}`` when none is)."""
        return dict(self.meta.get("norm_stats") or {})

    def describe(self) -> str:
        """One line: what was loaded from where (printed by ``equiseg eval`` as a note)."""
        if self.format == "checkpoint":
            it = "?" if self.iteration is None else self.iteration
            return f"{self.path}: equiseg checkpoint of {self.name} (iteration {it})"
        if self.format == "export":
            return f"{self.path}: equiseg export of {self.name}"
        return f"{self.report} into {self.name}"


# ------------------------------------------------------------------------------------------ reading


def read_export_config(path: str | os.PathLike) -> dict[str, Any]:
    """An export folder's ``config.json``, checked to be one this version understands.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not JSON, not an equiseg export config, or a newer format version.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (expected an `equiseg export` folder)")
    try:
        config = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(config, dict) or config.get("format") != "equiseg" or "model_config" not in config:
        raise ValueError(f"{path}: not an equiseg export config (no 'format: equiseg' / 'model_config')")
    if config.get("format_version", 0) > EXPORT_FORMAT_VERSION:
        raise ValueError(
            f"{path}: format_version {config['format_version']} is newer than this equiseg "
            f"understands ({EXPORT_FORMAT_VERSION}); upgrade equiseg"
        )
    if not isinstance(config["model_config"], dict):
        raise ValueError(
            f"{path}: model_config: expected a mapping, got {type(config['model_config']).__name__}"
        )
    return config


def _is_export_weights(path: Path) -> bool:
    """``DIR/model.safetensors`` beside an equiseg ``config.json`` (not, e.g., Hugging Face's)."""
    if path.name != WEIGHTS_NAME or not (path.parent / CONFIG_NAME).is_file():
        return False
    try:
        return json.loads((path.parent / CONFIG_NAME).read_text()).get("format") == "equiseg"
    except (OSError, ValueError, AttributeError):
        return False


def _read_export(folder: Path, given: Path) -> ModelFile:
    config = read_export_config(folder / CONFIG_NAME)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(
            f"{weights} does not exist; export the PyTorch weights with `equiseg export --format safetensors`"
        )
    meta = config.get("meta")
    return ModelFile(
        path=given,
        format="export",
        state_dict=load_safetensors(weights),
        weights=weights,
        model_config=dict(config["model_config"]),
        meta=dict(meta) if isinstance(meta, Mapping) else {},
    )


def _not_a_checkpoint(path: Path | str) -> ValueError:
    return ValueError(f"{path}: expected 'model' (a state dict) and 'model_config' (a mapping)")


def _classify(path: Path, obj: dict[str, Any]) -> ModelFile:
    """What a dict read from a file is (see the module docstring)."""
    if "model" in obj and "model_config" in obj:
        if not isinstance(obj["model"], dict) or not isinstance(obj["model_config"], dict):
            raise _not_a_checkpoint(path)
        meta, config, it = obj.get("meta"), obj.get("config"), obj.get("iter")
        return ModelFile(
            path=path,
            format="checkpoint",
            state_dict=obj["model"],
            weights=path,
            model_config=dict(obj["model_config"]),
            meta=dict(meta) if isinstance(meta, Mapping) else {},
            train_config=dict(config) if isinstance(config, Mapping) else None,
            iteration=it if isinstance(it, int) and not isinstance(it, bool) else None,
        )
    sd = obj
    for wrapper in ("state_dict", "model"):
        if isinstance(sd.get(wrapper), dict):
            sd = sd[wrapper]
    if not all(isinstance(k, str) for k in sd):
        fmt = "unknown"
    elif is_reference_state_dict(sd):
        fmt = "release"
    elif any(str(k).startswith(_FULL_MODEL_KEYS) for k in sd):
        fmt = "state_dict"
    elif is_mit_state_dict(sd):
        fmt = "mit"
    else:
        fmt = "unknown"
    return ModelFile(path, fmt, sd, path)


def read_model_file(source: str | os.PathLike) -> ModelFile:
    """Read a model source once and tell which format it is (see the module docstring).

    A folder, or a file named ``config.json``, is an export; ``DIR/model.safetensors`` beside an
    equiseg ``config.json`` is that export; any other ``.safetensors`` file is a state dict; anything
    else is read as a PyTorch file with ``weights_only=True`` (:func:`equiseg.checkpoint_io.load_checkpoint`:
    nothing in it is executed).

    Raises:
        FileNotFoundError: no such file; a folder that is no export (no ``config.json``); an export
            without ``model.safetensors`` (e.g. ONNX only).
        CheckpointError: an empty, truncated, corrupt or unsafe file (one line naming it).
        ValueError: a malformed export ``config.json`` or checkpoint.
    """
    path = Path(source)
    if path.is_dir():
        if not (path / CONFIG_NAME).is_file():
            raise FileNotFoundError(
                f"{path} is a folder, expected a checkpoint file (e.g. {path}/best.pt) or an `equiseg export` "
                f"folder (it has no {CONFIG_NAME})"
            )
        return _read_export(path, path)
    if path.name == CONFIG_NAME:
        return _read_export(path.parent, path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; expected {_SOURCES}")
    if path.suffix == ".safetensors":
        if _is_export_weights(path):
            return _read_export(path.parent, path)
        return _classify(path, load_safetensors(path))
    return _classify(path, load_checkpoint(path, map_location="cpu"))


# ------------------------------------------------------------------------------------------ building


def _stored_config(file: ModelFile) -> ModelConfig:
    where = file.weights.parent / CONFIG_NAME if file.format == "export" else file.path
    try:
        return from_dict(ModelConfig, file.model_config or {})
    except ValueError as e:
        raise ValueError(f"{where}: model_config: {e}") from None


def _check_given_config(file: ModelFile, stored: ModelConfig, given: ModelConfig) -> None:
    """A config passed with a source that stores its own must name the same network."""
    for f in dataclasses.fields(ModelConfig):
        if f.name in TRAINING_ONLY_MODEL_KEYS:
            continue
        mine, theirs = getattr(given, f.name), getattr(stored, f.name)
        if mine != theirs:
            raise ValueError(
                f"{file.path}: model.{f.name} is {to_dict(mine)!r} in the given config but {to_dict(theirs)!r} "
                f"in the {file.format}; the stored network is the one loaded: leave the config out or set "
                f"model.{f.name} to the stored value"
            )


def _needs_config_error(file: ModelFile) -> ValueError:
    what = (
        "a released state dict"
        if file.format == "release"
        else "a full-model state dict without its model config"
    )
    return ValueError(
        f"{file.path} is {what}: pass --config (config= in Python) naming its model and data set "
        "(e.g. configs/peers/cmnext_b2_deliver.yaml)"
    )


def load_model(
    source: str | os.PathLike | ModelFile,
    *,
    config: ModelConfig | None = None,
    device: str | torch.device | None = None,
    meta: Mapping[str, Any] | None = None,
    name: str | None = None,
) -> LoadedModel:
    """Build the network a saved model holds, from a training checkpoint, an export folder, a peer's
    release or a bare state dict (read once; the format is detected from the content).

    Args:
        source: the path, or a :class:`ModelFile` already read (:func:`read_model_file`).
        config: the model config of a release or a bare state dict (required for those). With a
            checkpoint or an export, which store their own, it is optional and must agree with the
            stored one in every field that shapes the eval-mode network.
        device: where to put the network (default: the CPU).
        meta: class and normalisation meta to attach instead of the stored one (a release has none).
        name: the model's name for tables when the source stores none (a release, an export).

    Returns:
        :class:`LoadedModel`, the network in eval mode.

    Raises:
        FileNotFoundError: no such file or folder, or an export without its weights.
        CheckpointError: an unreadable or unsafe file.
        ValueError: not a model (MiT encoder weights, an unknown format), a release or bare state dict
            without ``config``, a ``config`` that contradicts the stored one, a malformed stored model
            config, or weights that do not fit the model (one line each, naming the file).
    """
    from .registry import build_model

    file = source if isinstance(source, ModelFile) else read_model_file(source)
    report = ""
    if file.format in ("checkpoint", "export"):
        cfg = _stored_config(file)
        if config is not None:
            _check_given_config(file, cfg, config)
        model = build_model(cfg)
        load_state_dict_strict(model, file.state_dict, file.weights, _MISMATCH[file.format])
        meta = dict(file.meta if meta is None else meta)
    elif file.format in ("release", "state_dict"):
        if config is None:
            raise _needs_config_error(file)
        cfg = config
        model = build_model(cfg)
        if file.format == "release":
            report = load_reference_state_dict(model, file.state_dict, file.path).summary()
        else:
            load_state_dict_strict(model, file.state_dict, file.path, _MISMATCH["state_dict"])
            report = f"{file.path}: full-model state dict, {len(file.state_dict)} tensors loaded strictly"
        meta = dict(meta or {})
    elif file.format == "mit":
        raise ValueError(
            f"{file.path}: MiT encoder weights (ImageNet), not a whole model; they initialise training "
            "(model.pretrained)"
        )
    else:
        keys = sorted(map(str, file.state_dict))[:5]
        raise ValueError(
            f"{file.path}: neither an equiseg checkpoint ('model' + 'model_config') nor a released full-model "
            f"state dict ('backbone.*', 'decode_head.*'); it has keys {keys}"
        )
    model.meta = meta
    model = model.to(device if device is not None else "cpu").eval()
    return LoadedModel(
        model=model,
        format=file.format,
        path=file.path,
        model_config=cfg,
        meta=meta,
        name=file.variant or name or cfg.arch,
        weights=file.weights,
        train_config=file.train_config,
        iteration=file.iteration,
        report=report,
    )


def model_from_checkpoint(ckpt: dict[str, Any], source: str) -> SegModel:
    """The network a training checkpoint dict (already read) holds, built from its stored model config,
    weights loaded strictly, ``meta`` attached; ``source`` names the file in errors. :func:`load_model`
    of a dict in hand."""
    file = _classify(Path(source), ckpt)
    if file.format != "checkpoint":
        raise _not_a_checkpoint(source)
    return load_model(file).model
