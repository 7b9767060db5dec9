"""A trained checkpoint and a split of the config's data set, ready for the studies that run on them
(``equiseg analyze``, ``equiseg robustness``, the ablation runner).

The network is rebuilt from the model config stored *in the checkpoint* (so an ablation checkpoint,
e.g. ``hub: mean``, loads under the base config); the experiment config supplies the data set, the
device and the metric convention. Model keys the config sets must agree with the checkpoint, and the
modalities are matched by name (:func:`match_checkpoint`). ``equiseg eval`` uses the same path.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Subset

from equiseg.config import ExperimentConfig, load_experiment, to_dict
from equiseg.data.splits import check_split
from equiseg.models import EQUISeg, build_model, load_reference_checkpoint
from equiseg.models.reference import is_reference_state_dict
from equiseg.utils import DEFAULT_CHANNELS

from .builders import build_val_dataset, dataset_meta
from .checkpoint import load_checkpoint
from .device import resolve_device


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
    """

    cfg: ExperimentConfig
    model: EQUISeg
    dataset: Any
    split: str
    device: torch.device
    name: str


def subset(dataset: Any, max_samples: int | None) -> Any:
    """The first ``max_samples`` samples of a map-style data set (the whole set when None).

    ``max_samples < 1`` is refused whatever the data set's size (an empty data set included).
    """
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be >= 1, got {max_samples}")
    if max_samples is None or max_samples >= len(dataset):
        return dataset
    return Subset(dataset, range(max_samples))


# ModelConfig fields that shape only the training losses or stochastic training layers, not the
# network evaluated in eval mode: a config may differ from the checkpoint in them (e.g. an ablation
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
_NOT_ARCHITECTURE = {"name", "pretrained", "pretrained_strict"}


def match_checkpoint(
    cfg: ExperimentConfig, ckpt: dict[str, Any], model: EQUISeg, source: str
) -> ExperimentConfig:
    """Check that ``cfg`` asks for the network ``ckpt`` holds, and order its modalities like the checkpoint.

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
    saved_name = (ckpt.get("config") or {}).get("model", {}).get("name")
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


def load_eval_setup(
    config: ExperimentConfig | str | Path | dict[str, Any],
    checkpoint: str | Path,
    overrides: Iterable[str] = (),
    *,
    split: str | None = None,
    max_samples: int | None = None,
    case: str | None = None,
) -> EvalSetup:
    """Load ``checkpoint``'s network and the ``split`` (optionally one ``case``) of the config's data set.

    Raises:
        ValueError: the config asks for another network than the checkpoint's (see
            :func:`match_checkpoint`), the class counts differ, or ``split`` (else ``data.val_split``)
            is not a split of the data set (:func:`~equiseg.data.splits.check_split`).
        FileNotFoundError: The checkpoint or the data set is missing.
        CheckpointError: The checkpoint is corrupt or unsafe.
    """
    from equiseg.models.registry import model_from_checkpoint

    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be >= 1, got {max_samples}")
    cfg = load_experiment(config, overrides)
    # checked before the checkpoint is read: a misspelt or absent split stops here, naming its source
    if split:
        split = check_split(cfg.data, split, "split")
    else:
        split = check_split(cfg.data, cfg.data.val_split, "data.val_split")
    device = resolve_device(cfg.train.device)
    ckpt = load_checkpoint(checkpoint)
    if "model" in ckpt and "model_config" in ckpt:  # written by equiseg
        model = model_from_checkpoint(ckpt, str(checkpoint)).to(device).eval()
        cfg = match_checkpoint(cfg, ckpt, model, str(checkpoint))
        ds = build_val_dataset(cfg.data, split, case=case)
        saved = (ckpt.get("config") or {}).get("model", {}).get("name", model.cfg.arch)
        print(
            f"note: {checkpoint}: equiseg checkpoint of {saved} (iteration {ckpt.get('iter', '?')})",
            file=sys.stderr,
        )
    elif is_reference_state_dict(ckpt.get("state_dict", ckpt)):  # a public release: the config names it
        ds = build_val_dataset(cfg.data, split, case=case)
        model = build_model(cfg.model_config(ds.num_classes))
        info = load_reference_checkpoint(model, checkpoint)
        model.meta = dataset_meta(ds)
        model = model.to(device).eval()
        print(f"note: {info.summary()} into {cfg.model['name']}", file=sys.stderr)
    else:
        raise ValueError(
            f"{checkpoint}: neither an equiseg checkpoint ('model' + 'model_config') nor a released full-model "
            f"state dict ('backbone.*', 'decode_head.*'); it has keys {sorted(map(str, ckpt))[:5]}"
        )
    if model.cfg.num_classes != ds.num_classes:
        raise ValueError(
            f"{checkpoint}: the model predicts {model.cfg.num_classes} classes, the {cfg.data.dataset} data "
            f"set has {ds.num_classes}"
        )
    name = str((ckpt.get("config") or {}).get("model", {}).get("name") or cfg.model.get("name", "model"))
    return EvalSetup(cfg, model, subset(ds, max_samples), split, device, name)
