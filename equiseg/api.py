"""Python API mirroring the command line: ``equiseg.train(config)``, ``equiseg.evaluate(config, ckpt)``,
``equiseg.load_model(ckpt)`` -- so notebooks and scripts need no subprocess.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from equiseg.config import ExperimentConfig, load_experiment
from equiseg.engine.checkpoint import load_checkpoint
from equiseg.engine.evaluate import evaluate as _evaluate
from equiseg.engine.evaluate import write_metrics
from equiseg.engine.train import TrainResult
from equiseg.engine.train import train as _train
from equiseg.models import EQUISeg
from equiseg.models.registry import model_from_checkpoint  # re-exported: lives with the weights loading

ConfigLike = ExperimentConfig | str | Path | dict[str, Any]


def train(
    config: ConfigLike,
    overrides: Iterable[str] = (),
    *,
    work_dir: str | Path | None = None,
    resume: str | bool | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Train from a config (an :class:`ExperimentConfig`, a YAML path or a dict) plus ``a.b=c`` overrides.

    See :func:`equiseg.engine.train.train` (``resume``, ``overwrite`` and the run-folder lock)."""
    return _train(
        load_experiment(config, overrides),
        work_dir=work_dir,
        resume=resume,
        progress=progress,
        stop_after=stop_after,
        overwrite=overwrite,
    )


def load_model(checkpoint: str | Path, device: str | torch.device = "cpu") -> EQUISeg:
    """An eval-mode EQUISeg from a training checkpoint (it carries its model config and class meta,
    available afterwards as ``model.meta``)."""
    ckpt = load_checkpoint(checkpoint, required_keys=("model", "model_config"))
    return model_from_checkpoint(ckpt, str(checkpoint)).to(device).eval()


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
    """Evaluate a checkpoint on a split (optionally one case); writes metrics.json/.md to ``out_dir``.

    The network is the checkpoint's; the config supplies data, device and metric settings, and every
    model key it sets must agree with the checkpoint (see :func:`equiseg.engine.eval_setup.match_checkpoint`).
    """
    from equiseg.engine.eval_setup import load_eval_setup

    setup = load_eval_setup(config, checkpoint, overrides, split=split, case=case)
    result = _evaluate(
        setup.model,
        setup.dataset,
        setup.cfg.eval,
        device=setup.device,
        progress=progress,
        max_samples=max_samples,
        cases=None if case is None else [case],
    )
    result["split"] = setup.split
    result["checkpoint"] = str(checkpoint)
    if out_dir is not None:
        write_metrics(
            result, out_dir, title=f"{setup.name} on {setup.cfg.data.dataset}, {result['split']} split"
        )
    return result
