"""Helpers of the analysis / robustness-CLI / ablation tests: tiny synthetic data, a tiny config, and a
checkpoint trained for one iteration by the real trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

TINY_MODEL = {
    "name": "equiseg_b0",
    "embed_dims": [8, 16, 40, 64],
    "depths": [1, 1, 1, 1],
    "decoder_dim": 16,
    "drop_path_rate": 0.0,
}


def make_synth(root: Path) -> Path:
    """8 train / 4 val synthetic DeLiVER-layout samples of 64×64."""
    from equiseg.data.synth import generate

    generate(root, layout="deliver", splits={"train": 8, "val": 4}, size=(64, 64), seed=0, progress=False)
    return root


def tiny_config_dict(root: Path, work: Path, max_iters: int = 1) -> dict[str, Any]:
    return {
        "model": dict(TINY_MODEL),
        "data": {
            "root": str(root),
            "crop_size": [64, 64],
            "val_short_side": None,
            "batch_size": 2,
            "num_workers": 0,
        },
        "train": {
            "max_iters": max_iters,
            "warmup_iters": 0,
            "lr": 1e-3,
            "val_interval": max_iters,
            "log_interval": 1,
            "seed": 0,
            "device": "cpu",
        },
        "work_dir": str(work),
    }


def write_config(data: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def train_tiny(tmp: Path) -> tuple[Path, Path]:
    """Synthetic data, a YAML config and a checkpoint trained for one iteration: ``(config, checkpoint)``."""
    import equiseg

    root = make_synth(tmp / "data")
    cfg = write_config(tiny_config_dict(root, tmp / "run"), tmp / "tiny.yaml")
    result = equiseg.train(cfg, progress=False)
    return cfg, result.work_dir / "best.pt"


def tiny_runner_config(
    data_root: Path, modalities: tuple[str, ...] = ("rgb", "depth", "lidar"), iters: int = 2, **model: Any
) -> dict[str, Any]:
    """The config ``compare`` / ``study`` tests run: the tiny EQUISeg-B0, 64² crops, ``iters``
    iterations with one validation at the end, the "present" convention."""
    return {
        "model": {**TINY_MODEL, **model},
        "data": {
            "root": str(data_root),
            "crop_size": [64, 64],
            "val_short_side": None,
            "batch_size": 2,
            "num_workers": 0,
            "modalities": list(modalities),
        },
        "train": {
            "max_iters": iters,
            "warmup_iters": 0,
            "lr": 1e-3,
            "val_interval": iters,
            "log_interval": 1,
        },
        "eval": {"convention": "present"},
    }
