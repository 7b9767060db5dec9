"""TensorBoard logging of a training run (``train.tensorboard: true``), rank 0 only.

Tags (the step is the training iteration):

* ``train/<term>`` -- every loss term the model reports (:meth:`LossOutput.as_dict`: ``loss``,
  ``loss_ce``, ``loss_sgm`` and the method's own terms), ``train/lr``, ``train/img_per_s`` (from the
  second log interval on; the first includes start-up), at every log interval;
* ``val/mIoU``, ``val/aAcc``, ``val/mAcc`` and ``val_case/mIoU/<case>`` (the cases present in the
  val split, from the per-case numbers validation computes anyway), at every validation;
* ``val/predictions`` -- a prediction panel of up to :data:`PANEL_SAMPLES` fixed val samples (one per
  case where the split has cases): each modality as stored, ground truth, prediction and errors, in the
  data set's palette. It is the panel of :func:`equiseg.data.panels.prediction_panel`.

The ``tensorboard`` package is optional: :func:`require_tensorboard` turns its absence into one
start-up error instead of a run that silently logs nothing.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from equiseg.config import EvalConfig
from equiseg.engine.metrics import class_ids

from .inference import infer_logits

PANEL_SAMPLES = 4  # rows of the validation panel: a few samples keep it cheap and legible


def require_tensorboard() -> None:
    """Raise ``ValueError`` (a user error: the config asks for it) if ``tensorboard`` is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise ValueError(
            "train.tensorboard is true but the tensorboard package is not installed: "
            "pip install tensorboard (or set train.tensorboard=false)"
        ) from None


def panel_indices(dataset: Any, n: int = PANEL_SAMPLES) -> list[int]:
    """The val samples shown in the panel: the first sample of each case (in the data set's case
    order) up to ``n``, then the first samples of the split. Fixed for the run, so panels of
    successive validations compare the same scenes."""
    cases = [dataset.case_of(i) for i in range(len(dataset))] if hasattr(dataset, "case_of") else []
    picked: list[int] = []
    for case in getattr(getattr(dataset, "spec", None), "cases", ()):
        first = next((i for i, c in enumerate(cases) if case in c and i not in picked), None)
        if first is not None:
            picked.append(first)
    picked = picked[:n]
    picked += [i for i in range(len(dataset)) if i not in picked][: n - len(picked)]
    return picked


class TensorBoardLog:
    """A :class:`~torch.utils.tensorboard.SummaryWriter` on ``folder`` with the trainer's tags.

    Args:
        folder: where the event files go (``<work_dir>/tensorboard``).
        purge_step: on resume, the checkpoint's iteration + 1: events the interrupted run wrote at
            or after this step are hidden, as ``log.jsonl`` drops its records after the checkpoint.
    """

    def __init__(self, folder: Path, *, purge_step: int | None = None) -> None:
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(folder), purge_step=purge_step)

    def log_train(self, step: int, terms: Mapping[str, float], *, lr: float, img_per_s: float | None) -> None:
        for k, v in terms.items():
            self.writer.add_scalar(f"train/{k}", float(v), step)
        self.writer.add_scalar("train/lr", lr, step)
        if img_per_s is not None:
            self.writer.add_scalar("train/img_per_s", img_per_s, step)

    def log_val(self, step: int, metrics: Mapping[str, Any]) -> None:
        """The overall metrics and the mIoU of every case in ``metrics["per_case"]`` (evaluate's result)."""
        for k in ("mIoU", "aAcc", "mAcc"):
            self.writer.add_scalar(f"val/{k}", metrics[k], step)
        for case, r in (metrics.get("per_case") or {}).items():
            self.writer.add_scalar(f"val_case/mIoU/{case}", r["mIoU"], step)

    def log_panel(
        self,
        step: int,
        model: torch.nn.Module,
        dataset: Any,
        indices: Sequence[int],
        eval_cfg: EvalConfig,
        device: torch.device,
    ) -> None:
        """Add the prediction panel of ``dataset[indices]`` as ``val/predictions`` (HWC uint8)."""
        if indices:
            self.writer.add_image(
                "val/predictions",
                panel_image(model, dataset, indices, eval_cfg, device),
                step,
                dataformats="HWC",
            )

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


@torch.inference_mode()
def panel_image(
    model: torch.nn.Module,
    dataset: Any,
    indices: Sequence[int],
    eval_cfg: EvalConfig,
    device: torch.device,
) -> np.ndarray:
    """The ``H×W×3`` uint8 prediction panel of ``dataset[indices]``.

    Predictions use the validation's inference mode (whole / slide windows) without test-time
    augmentation, in fp32: a few forwards, not a second validation. The model's train/eval mode is
    restored afterwards. Rendering is :func:`equiseg.data.panels.prediction_panel`'s (it writes a PNG, read
    back here), so the panel looks like those of ``eval --panels`` and the demo.
    """
    from equiseg.data.panels import prediction_panel

    was_training = model.training
    model.eval()
    rows = []
    try:
        for i in indices:
            inputs, _ = dataset[i]
            logits = infer_logits(
                model,
                [None if x is None else x.unsqueeze(0).to(device) for x in inputs],
                mode=eval_cfg.mode,
                crop_size=eval_cfg.crop_size,
                stride=eval_cfg.stride,
                align=eval_cfg.align,
                window_batch=eval_cfg.window_batch,
                num_classes=dataset.num_classes,
            )
            raw_inputs, raw_label = dataset.load(i)  # as stored: the panel shows the files, not tensors
            if logits.shape[-2:] != raw_label.shape:
                logits = torch.nn.functional.interpolate(
                    logits.float(), size=tuple(raw_label.shape), mode="bilinear", align_corners=False
                )
            pred = class_ids(logits.float())[0].cpu()
            rows.append(
                {
                    "inputs": raw_inputs,
                    "label": raw_label,
                    "pred": pred,
                    "title": "/".join(dataset.case_of(i)),
                }
            )
    finally:
        model.train(was_training)
    with tempfile.TemporaryDirectory(prefix="equiseg-tb-") as tmp:
        path = prediction_panel(
            rows,
            dataset.modalities,
            dataset.palette,
            Path(tmp) / "panel.png",
            ignore_index=dataset.ignore_index,
        )
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
