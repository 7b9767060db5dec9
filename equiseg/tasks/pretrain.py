"""``equiseg pretrain``: an ImageNet stand-in -- a MiT encoder pretrained on the built-in scenes, written
in the original ``mit_b*.pth`` layout that ``model.pretrained`` accepts.

The paper starts from ImageNet MiT weights with lr 6e-5 and λ = 60; none can be downloaded here. To
mimic that recipe on what we can run, this trains an encoder on the synthetic scenes first, then any
model can start from it (``--set model.pretrained=mit_b0_synth.pth``) exactly as from ``mit_b0.pth``.

The task (a choice, written down): **multimodal semantic segmentation with SegFormer** -- one shared MiT
encodes every modality (RGB, depth, event, LiDAR by default), the SegFormer head reads the mean of the
per-modality features (``segformer_b*``, EQUISeg without its CMTB and SGM). Why this task: it is
supervised by the same labels as the downstream task, so the encoder learns the scenes' classes from
every modality, as ImageNet pretraining teaches RGB features; it has none of EQUISeg's cross-modal
machinery, so the stand-in does not pre-bake the thing the study measures (SGM's effect on the
branches); and it is the simplest equal-treatment baseline the toolkit already trains. Only the
encoder is kept: the head and everything else are discarded, as the ImageNet classifier is.

Kept apart from every evaluation: the scenes are generated with their own seed (:data:`DATA_SEED`,
never one of the evaluation data's) into their own folder, and trained with their own seed
(:data:`TRAIN_SEED`), so no evaluation sample or initialisation is shared with a later run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from equiseg.config import load_experiment
from equiseg.engine.checkpoint import load_checkpoint, save_checkpoint
from equiseg.models import load_mit_weights
from equiseg.utils import check_names

__all__ = [
    "DATA_SEED",
    "FULL",
    "QUICK",
    "TRAIN_SEED",
    "PretrainResult",
    "PretrainSize",
    "describe",
    "run_pretrain",
]

DATA_SEED = 918_273  # the pretraining scenes' generator seed: not 0 (the demo's) nor any evaluation's
TRAIN_SEED = 1_234
MODALITIES = ("rgb", "depth", "event", "lidar")


@dataclass(frozen=True)
class PretrainSize:
    train: int
    size: int
    max_iters: int


FULL = PretrainSize(train=400, size=128, max_iters=900)
QUICK = PretrainSize(train=96, size=96, max_iters=200)


@dataclass
class PretrainResult:
    """The written encoder file, the run it came from, and its load report."""

    path: Path
    work_dir: Path
    data_dir: Path
    iterations: int
    tensors: int
    seconds: dict[str, float]
    report: str


def run_pretrain(
    out: str | Path,
    *,
    variant: str = "b0",
    modalities: Sequence[str] | None = None,
    quick: bool = False,
    size: PretrainSize | None = None,
    overrides: Sequence[str] = (),
    progress: bool = True,
) -> PretrainResult:
    """Pretrain a MiT-``variant`` encoder on freshly generated scenes and write it to ``out``.

    Args:
        out: the ``.pth`` file to write (the original ``mit_b*.pth`` key layout). Beside it go
            ``<stem>_data/`` (the scenes) and ``<stem>_run/`` (the training run, resumable).
        variant: MiT size ``b0`` ... ``b5``.
        modalities: which modalities the encoder sees (every one it will later encode).
        quick / size: the schedule (:data:`FULL`: 400 scenes at 128², 900 iterations; :data:`QUICK`).
        overrides: ``a.b=c`` overrides of the training config (e.g. ``train.device=cuda``).

    Raises:
        ValueError: a bad variant/modality/output path (one line each).
    """
    from equiseg.data.synth import generate
    from equiseg.engine.train import train

    out = Path(out)
    if out.exists() and out.is_dir():
        raise ValueError(f"--out {out} is a folder, expected the path of the .pth file to write")
    if out.suffix not in (".pth", ".pt"):
        raise ValueError(f"--out {out}: expected a .pth file name (the mit_b*.pth layout)")
    modalities = tuple(
        MODALITIES
        if modalities is None
        else check_names(modalities, MODALITIES, what="modality", where="--modalities")
    )
    size = size or (QUICK if quick else FULL)
    data, work = out.with_name(f"{out.stem}_data"), out.with_name(f"{out.stem}_run")
    seconds: dict[str, float] = {}

    t0 = time.perf_counter()
    generate(
        data,
        layout="deliver",
        splits={"train": size.train, "val": max(4, size.train // 20)},
        size=(size.size, size.size),
        seed=DATA_SEED,
        progress=progress,
    )
    seconds["data"] = time.perf_counter() - t0
    cfg = load_experiment(
        {
            "model": {"name": f"segformer_{variant}", "drop_path_rate": 0.1},
            "data": {
                "dataset": "deliver",
                "root": str(data),
                "modalities": list(modalities),
                "crop_size": [size.size, size.size],
                "val_short_side": None,
                "batch_size": 8,
                "num_workers": 1,
            },
            "train": {
                "max_iters": size.max_iters,
                "warmup_iters": size.max_iters // 10,
                "lr": 1.5e-3,
                "seed": TRAIN_SEED,
                "log_interval": 10,
                "val_interval": size.max_iters,
            },
            "eval": {"convention": "present"},
            "work_dir": str(work),
        },
        overrides,
    )
    t0 = time.perf_counter()
    resume = (work / "last.pt").is_file()
    result = train(cfg, progress=progress, resume=resume or None)
    if result.interrupted:
        raise KeyboardInterrupt
    seconds["train"] = time.perf_counter() - t0

    ckpt = load_checkpoint(work / "last.pt", required_keys=("model",))
    encoder = {k[len("backbone.") :]: v for k, v in ckpt["model"].items() if k.startswith("backbone.")}
    save_checkpoint(out, encoder)
    # the file must load as ImageNet weights do: every encoder key matched
    from equiseg.models import create_model

    probe = create_model(f"equiseg_{variant}", num_classes=1, modalities=list(modalities)[:1])
    report = load_mit_weights(probe, out)
    if report.missing_keys or report.unexpected_keys:
        raise RuntimeError(f"{out}: the written encoder does not load cleanly: {report.summary()}")
    done = PretrainResult(out, work, data, result.iterations, len(encoder), seconds, report.summary())
    out.with_suffix(".json").write_text(json.dumps(describe(done), indent=2) + "\n")
    return done


def describe(result: PretrainResult) -> dict[str, Any]:
    """A JSON-able summary of a pretraining run (also written beside the encoder as ``<stem>.json``)."""
    return {
        "path": str(result.path),
        "work_dir": str(result.work_dir),
        "data_dir": str(result.data_dir),
        "iterations": result.iterations,
        "tensors": result.tensors,
        "seconds": {k: round(v, 1) for k, v in result.seconds.items()},
        "report": result.report,
        "data_seed": DATA_SEED,
        "train_seed": TRAIN_SEED,
    }
