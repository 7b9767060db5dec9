"""A trained checkpoint and a split of the config's data set, ready for the studies that run on them
(``equiseg analyze``, ``equiseg robustness``, the ablation runner).

The network is rebuilt from the model config stored *in the checkpoint* (so an ablation checkpoint,
e.g. ``hub: mean``, loads under the base config); the experiment config supplies the data set, the
device and the metric convention. Both must agree on the modalities.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Subset

from equiseg.config import ExperimentConfig, load_experiment
from equiseg.models import EQUISeg

from .builders import build_val_dataset
from .train import resolve_device


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
    """The first ``max_samples`` samples of a map-style data set (the whole set when None)."""
    if max_samples is None or max_samples >= len(dataset):
        return dataset
    if max_samples < 1:
        raise ValueError(f"max_samples must be >= 1, got {max_samples}")
    return Subset(dataset, range(max_samples))


def load_eval_setup(
    config: ExperimentConfig | str | Path | dict[str, Any],
    checkpoint: str | Path,
    overrides: Iterable[str] = (),
    *,
    split: str | None = None,
    max_samples: int | None = None,
) -> EvalSetup:
    """Load ``checkpoint`` and the ``split`` of the config's data set.

    Raises:
        ValueError: The checkpoint's modalities differ from ``data.modalities`` (in order).
        FileNotFoundError: The checkpoint or the data set is missing.
    """
    from equiseg.api import load_model

    cfg = load_experiment(config, overrides)
    device = resolve_device(cfg.train.device)
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    model = load_model(checkpoint, device=device)
    if tuple(model.modalities) != tuple(cfg.data.modalities):
        raise ValueError(
            f"{checkpoint}: the model was trained on modalities {list(model.modalities)} but the config's "
            f"data.modalities are {list(cfg.data.modalities)}; set data.modalities to match (same order)"
        )
    split = split or cfg.data.val_split
    ds = build_val_dataset(cfg.data, split)
    if model.cfg.num_classes != ds.num_classes:
        raise ValueError(
            f"{checkpoint}: the model predicts {model.cfg.num_classes} classes, the {cfg.data.dataset} data "
            f"set has {ds.num_classes}"
        )
    return EvalSetup(cfg, model, subset(ds, max_samples), split, device, str(cfg.model.get("name", "model")))
