"""Python API mirroring the command line: ``equiseg.train(config)``, ``equiseg.evaluate(config, ckpt)``,
``equiseg.load(source)`` / ``equiseg.load_model(ckpt)`` -- so notebooks and scripts need no subprocess.

Every model is loaded by one loader (:func:`equiseg.models.load_model`; with an experiment config,
:func:`equiseg.engine.eval_setup.load_with_config`): :func:`load` returns its typed result,
:func:`load_model` just the network.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from equiseg.config import ExperimentConfig, load_experiment
from equiseg.engine.eval_setup import load_with_config
from equiseg.engine.evaluate import evaluate as _evaluate
from equiseg.engine.evaluate import write_metrics
from equiseg.engine.train import TrainResult
from equiseg.engine.train import train as _train
from equiseg.models import EQUISeg, LoadedModel
from equiseg.models.loading import model_from_checkpoint  # noqa: F401  (re-exported: public name)

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


def load(
    source: str | Path,
    config: ConfigLike | None = None,
    *,
    device: str | torch.device | None = None,
) -> LoadedModel:
    """Load a saved model: a training checkpoint, an ``equiseg export`` folder, or a peer's released
    state dict with ``config`` naming its model and data set (e.g. ``configs/peers/cmnext_b2_deliver.yaml``).

    The file is read once and its format detected from its content. Returns a
    :class:`~equiseg.models.LoadedModel`: ``.model`` (eval mode, on ``device``: ``auto``, ``cpu``,
    ``cuda`` ...; default the CPU), ``.classes``, ``.modalities``, ``.norm_stats``, ``.meta``,
    ``.model_config``, ``.format`` (``checkpoint``, ``export``, ``release``, ``state_dict``) and, for a
    checkpoint, ``.train_config`` and ``.iteration``. See :func:`equiseg.engine.eval_setup.load_with_config`.
    """
    return load_with_config(source, config, device=device)


def load_model(checkpoint: str | Path, device: str | torch.device = "cpu") -> EQUISeg:
    """An eval-mode network from a training checkpoint (or an export folder): :func:`load`'s ``.model``;
    the stored class meta is ``model.meta``."""
    return load(checkpoint, device=device).model


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
