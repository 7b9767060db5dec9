"""A trained model and a split of the config's data set, ready for the studies that run on them
(``equiseg analyze``, ``equiseg robustness``, the ablation runner), and the experiment-config level of
the one model loader.

Models are loaded by :func:`equiseg.models.load_model` (a training checkpoint, an export folder, a peer's
release; the file read once). What this module adds is what needs the experiment config, which the
models do not know: :func:`load_with_config` turns a config naming a release's model and data set into
the model config and the class/normalisation meta (from the data set's definition, no files read), and
:func:`load_eval_setup` adds the data split and the checks that the config asks for the network the
checkpoint holds. The network is the one stored *in the checkpoint* (so an ablation checkpoint, e.g.
``hub: mean``, loads under the base config); the experiment config supplies the data set, the device
and the metric convention. Model keys the config sets must agree with the checkpoint, and the
modalities are matched by name (:func:`match_checkpoint`). ``equiseg eval`` uses the same path.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Subset

from equiseg.config import ExperimentConfig, load_experiment, to_dict
from equiseg.data.splits import check_split
from equiseg.models import EQUISeg, LoadedModel, ModelFile, load_model, read_model_file
from equiseg.models.config import ModelConfig
from equiseg.models.loading import TRAINING_ONLY_MODEL_KEYS
from equiseg.utils import DEFAULT_CHANNELS

from .builders import build_val_dataset, config_meta
from .device import resolve_device

__all__ = [
    "EvalSetup",
    "TRAINING_ONLY_MODEL_KEYS",
    "load_eval_setup",
    "load_with_config",
    "match_checkpoint",
    "subset",
]

ConfigLike = ExperimentConfig | ModelConfig | str | os.PathLike | dict[str, Any]
Source = str | os.PathLike | ModelFile


@dataclass
class EvalSetup:
    """What :func:`load_eval_setup` returns.

    Attributes:
        cfg: The resolved experiment config.
        model: The checkpoint's network, eval mode, on ``device``; ``model.meta`` holds the class meta.
        dataset: The split with the val transform (normalised ``(inputs, label)``, batch 1).
        split: The split's name.
        device: Where to run.
        name: A label for tables (the model variant's name).
        loaded: What the loader returned (format, path, meta, the checkpoint's training config ...).
    """

    cfg: ExperimentConfig
    model: EQUISeg
    dataset: Any
    split: str
    device: torch.device
    name: str
    loaded: LoadedModel | None = None


def subset(dataset: Any, max_samples: int | None) -> Any:
    """The first ``max_samples`` samples of a map-style data set (the whole set when None).

    ``max_samples < 1`` is refused whatever the data set's size (an empty data set included).
    """
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be >= 1, got {max_samples}")
    if max_samples is None or max_samples >= len(dataset):
        return dataset
    return Subset(dataset, range(max_samples))


_NOT_ARCHITECTURE = {"name", "pretrained", "pretrained_strict"}


def match_checkpoint(cfg: ExperimentConfig, loaded: LoadedModel) -> ExperimentConfig:
    """Check that ``cfg`` asks for the network ``loaded`` holds, and order its modalities like it.

    The network is always the checkpoint's (rebuilt from its stored model config); the experiment config
    supplies data, device and metric settings. Every model key the config *sets* must agree with the
    checkpoint (except :data:`TRAINING_ONLY_MODEL_KEYS`), so ``--set model.residual=false`` cannot score
    another network than it claims; keys the config leaves out are the checkpoint's.
    ``data.modalities`` are matched by name: reordered to the checkpoint's order automatically, extra
    ones dropped, a missing one refused; ``data.channels`` becomes the checkpoint's channel counts (an
    entry that contradicts them is refused).

    Raises:
        ValueError: another variant (``checkpoint is X, config asks for Y``), a differing model key
            (named with both values), a modality the checkpoint needs that ``data.modalities`` lacks, or
            a ``data.channels`` entry other than the checkpoint's count.
    """
    model, source = loaded.model, loaded.path
    saved_name = loaded.variant
    asked = cfg.model.get("name")
    if saved_name is not None and asked != saved_name:
        raise ValueError(f"{source}: checkpoint is {saved_name}, config asks for {asked}")
    needed = list(model.modalities)
    have = list(cfg.data.modalities)
    missing = [m for m in needed if m not in have]
    if missing:
        raise ValueError(
            f"{source}: the checkpoint's model takes modalities {needed}, but data.modalities {have} lacks "
            f"{missing}"
        )
    # the data are read with the network's channel counts: a data.channels entry must agree with them
    channels = dict(zip(needed, model.input_channels, strict=True))
    for m, count in cfg.data.channels.items():
        if m in channels and channels[m] != count:
            raise ValueError(
                f"{source}: data.channels.{m} is {count} but the checkpoint's model takes {channels[m]} "
                f"channel(s) of '{m}'; remove data.channels.{m} or set it to {channels[m]}"
            )
    if have != needed:
        print(
            f"note: data.modalities {have} matched by name to the checkpoint's {needed}"
            + (f" (not used: {[m for m in have if m not in needed]})" if len(have) > len(needed) else ""),
            file=sys.stderr,
        )
    kept = {m: c for m, c in channels.items() if c != DEFAULT_CHANNELS or m in cfg.data.channels}
    if have != needed or kept != cfg.data.channels:
        data = dataclasses.replace(cfg.data, modalities=tuple(needed), channels=kept)
        cfg = dataclasses.replace(cfg, data=data)
    keys = [k for k in cfg.model if k not in _NOT_ARCHITECTURE and k not in TRAINING_ONLY_MODEL_KEYS]
    if keys:
        asked_cfg = cfg.model_config(model.cfg.num_classes)
        for key in keys:
            mine, theirs = getattr(asked_cfg, key), getattr(model.cfg, key)
            if mine != theirs:
                raise ValueError(
                    f"{source}: model.{key} is {to_dict(mine)!r} in the config but {to_dict(theirs)!r} in the "
                    "checkpoint; the checkpoint's network is the one evaluated: remove model."
                    f"{key} from the config (or --set) or set it to the checkpoint's value"
                )
    return cfg


def _resolve(file: ModelFile, config: ExperimentConfig, device: torch.device | None) -> LoadedModel:
    """The model of a source that needs its config (a release, a bare state dict) from an experiment
    config: ``model`` names the network, ``data`` the classes and normalisation (the data set's
    definition, no files read); a source that stores its own config is loaded as stored."""
    if not file.needs_config:
        return load_model(file, device=device)
    meta = config_meta(config.data)
    model_cfg = config.model_config(len(meta["classes"]))
    return load_model(file, config=model_cfg, meta=meta, device=device, name=config.model["name"])


def load_with_config(
    source: Source, config: ConfigLike | None = None, *, device: str | torch.device | None = None
) -> LoadedModel:
    """:func:`equiseg.models.load_model` with an experiment config for the sources that need one
    (``equiseg.load``; ``--config`` of ``equiseg predict`` / ``equiseg export``).

    Args:
        source: a training checkpoint, an ``equiseg export`` folder, a peer's released state dict or a
            bare full-model state dict (a path), or a :class:`~equiseg.models.ModelFile` already read.
        config: for a release or a bare state dict, what names the model: an experiment config (an
            :class:`~equiseg.config.ExperimentConfig`, a YAML path or a dict: ``model`` the network,
            ``data`` the classes and normalisation, e.g. ``configs/peers/cmnext_b2_deliver.yaml``) or a
            :class:`~equiseg.models.config.ModelConfig`. An experiment config is not read for a
            checkpoint or an export, which carry both; a ``ModelConfig`` must agree with theirs.
        device: ``auto``, ``cpu``, ``cuda`` ... (checked against this machine); None: the CPU.

    Returns:
        :class:`~equiseg.models.LoadedModel`; a note saying what a release was mapped into is printed
        to stderr.

    Raises:
        As :func:`equiseg.models.load_model`, and a config that is not valid.
    """
    dev = resolve_device(device) if device is not None else None
    file = source if isinstance(source, ModelFile) else read_model_file(source)
    if config is None or isinstance(config, ModelConfig):
        loaded = load_model(file, config=config, device=dev)
    elif not file.needs_config:
        return load_model(file, device=dev)
    else:
        loaded = _resolve(file, load_experiment(config), dev)
    if file.needs_config:
        print(f"note: {loaded.describe()}", file=sys.stderr)
    return loaded


def load_eval_setup(
    config: ExperimentConfig | str | Path | dict[str, Any],
    checkpoint: Source,
    overrides: Iterable[str] = (),
    *,
    split: str | None = None,
    max_samples: int | None = None,
    case: str | None = None,
) -> EvalSetup:
    """Load ``checkpoint``'s network and the ``split`` (optionally one ``case``) of the config's data set.

    ``checkpoint`` is anything :func:`equiseg.models.load_model` takes (a training checkpoint, an export
    folder, a release whose model ``config`` names), or a :class:`~equiseg.models.ModelFile` already
    read; the file is read once.

    Raises:
        ValueError: the config asks for another network than the checkpoint's (see
            :func:`match_checkpoint`), the class counts differ, or ``split`` (else ``data.val_split``)
            is not a split of the data set (:func:`~equiseg.data.splits.check_split`).
        FileNotFoundError: The checkpoint or the data set is missing.
        CheckpointError: The checkpoint is corrupt or unsafe.
    """
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be >= 1, got {max_samples}")
    cfg = load_experiment(config, overrides)
    # checked before the checkpoint is read: a misspelt or absent split stops here, naming its source
    if split:
        split = check_split(cfg.data, split, "split")
    else:
        split = check_split(cfg.data, cfg.data.val_split, "data.val_split")
    device = resolve_device(cfg.train.device)
    file = checkpoint if isinstance(checkpoint, ModelFile) else read_model_file(checkpoint)
    loaded = _resolve(file, cfg, device)
    if not file.needs_config:
        cfg = match_checkpoint(cfg, loaded)
    ds = build_val_dataset(cfg.data, split, case=case)
    print(f"note: {loaded.describe()}", file=sys.stderr)
    if loaded.num_classes != ds.num_classes:
        raise ValueError(
            f"{file.path}: the model predicts {loaded.num_classes} classes, the {cfg.data.dataset} data "
            f"set has {ds.num_classes}"
        )
    name = loaded.variant or cfg.model.get("name") or loaded.name
    return EvalSetup(cfg, loaded.model, subset(ds, max_samples), split, device, str(name), loaded)
