"""Python API mirroring the command line: ``equiseg.train(config)``, ``equiseg.evaluate(config, ckpt)``,
``equiseg.load_model(ckpt)`` -- so notebooks and scripts need no subprocess.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from equiseg.config import ExperimentConfig, ModelConfig, from_dict, load_experiment
from equiseg.engine.checkpoint import load_checkpoint
from equiseg.engine.evaluate import evaluate as _evaluate
from equiseg.engine.evaluate import write_metrics
from equiseg.engine.train import TrainResult, resolve_device
from equiseg.engine.train import train as _train
from equiseg.models import EQUISeg, build_model

ConfigLike = ExperimentConfig | str | Path | dict[str, Any]


def train(
    config: ConfigLike,
    overrides: Iterable[str] = (),
    *,
    work_dir: str | Path | None = None,
    resume: str | bool | None = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> TrainResult:
    """Train from a config (an :class:`ExperimentConfig`, a YAML path or a dict) plus ``a.b=c`` overrides."""
    return _train(
        load_experiment(config, overrides),
        work_dir=work_dir,
        resume=resume,
        progress=progress,
        stop_after=stop_after,
    )


def load_model(checkpoint: str | Path, device: str | torch.device = "cpu") -> EQUISeg:
    """An eval-mode EQUISeg from a training checkpoint (it carries its model config and class meta,
    available afterwards as ``model.meta``)."""
    ckpt = load_checkpoint(checkpoint, required_keys=("model", "model_config"))
    cfg = from_dict(ModelConfig, ckpt["model_config"])
    model = build_model(cfg)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise ValueError(
            f"{checkpoint}: weights do not match the model config stored with them: {e}"
        ) from None
    model.meta = dict(ckpt.get("meta", {}))
    return model.to(device).eval()


def evaluate(
    config: ConfigLike,
    checkpoint: str | Path,
    overrides: Iterable[str] = (),
    *,
    split: str | None = None,
    case: str | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    max_samples: int | None = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint on a split (optionally one case); writes metrics.json/.md to ``out_dir``."""
    from equiseg.engine.builders import build_val_dataset

    cfg = load_experiment(config, overrides)
    device = resolve_device(cfg.train.device)
    ds = build_val_dataset(cfg.data, split, case=case)
    ckpt = load_checkpoint(checkpoint, required_keys=("model",))
    model = build_model(cfg.model_config(ds.num_classes))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise ValueError(
            f"{checkpoint}: checkpoint is for another architecture than the config's model "
            f"({cfg.model['name']}, {len(cfg.data.modalities)} modalities): {e}"
        ) from None
    model.to(device)
    result = _evaluate(
        model,
        ds,
        cfg.eval,
        device=device,
        progress=progress,
        max_samples=max_samples,
        cases=None if case is None else [case],
    )
    result["split"] = split or cfg.data.val_split
    result["checkpoint"] = str(checkpoint)
    if out_dir is not None:
        write_metrics(result, out_dir, title=f"{cfg.model['name']} on {cfg.data.dataset} {result['split']}")
    return result
