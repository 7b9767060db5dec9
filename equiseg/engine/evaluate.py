"""Evaluation: mIoU / aAcc / mAcc / per-class IoU over a split and per case (docs/design.md §5), whole-image
or sliding-window inference with optional multi-scale + flip, under DDP with the confusion matrices
all-reduced. Writes ``metrics.json`` and a Markdown table.

Both metric conventions (docs/design.md §5) are always computed: the headline (``mIoU`` ...) uses
``eval.convention`` (default ``reference``: classes with no union count as 0, as CMNeXt and the
robustness benchmark publish), and ``other_convention`` holds the other one.

The network's forward runs in ``eval.precision`` (:mod:`equiseg.engine.precision`: ``auto`` picks bf16
autocast where the hardware runs it fast); its logits are cast to fp32 before the resize and the argmax,
so the confusion matrices and metrics are fp32 computations either way. The result records
``precision`` (what ran) and ``precision_note`` (why).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from equiseg.config import EvalConfig
from equiseg.engine.distributed import all_gather_objects, get_rank, get_world_size, is_main_process
from equiseg.engine.inference import (
    describe_inference,
    forward_crop,
    infer_logits,
    inference_kwargs,
    inference_record,
)
from equiseg.engine.metrics import SegMetrics, class_ids
from equiseg.engine.precision import describe_precision, resolve_precision, with_precision
from equiseg.formatting import fmt

from .builders import shard_indices

OTHER = {"reference": "present", "present": "reference"}


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    dataset,
    eval_cfg: EvalConfig | None = None,
    *,
    device: torch.device | str = "cpu",
    cases: Sequence[str] | None = None,
    progress: bool = True,
    max_samples: int | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``dataset`` (yielding normalised ``(inputs, label)``, batch 1).

    Args:
        model: an EQUISeg (or any module taking the list of inputs and returning logits); put in
            eval mode here and restored afterwards.
        dataset: a data set with the val transform; its ``classes`` name the classes and its
            ``cases``/``case_of`` give each sample's cases for the per-case tables.
        cases: which cases to tabulate (default: every case the data set defines, if
            ``eval_cfg.per_case``).
        max_samples: evaluate only the first ``max_samples`` samples (quick checks); at least 1.

    Returns:
        ``{"mIoU", "aAcc", "mAcc", "per_class", "convention", "num_samples", "per_case": {case: {...}},
        "other_convention": {...}, "confusion", "precision", "precision_note"}`` (percentages;
        ``confusion``: the ``K×K`` pixel counts, rows ground truth, columns prediction; ``precision`` is
        ``"fp32"`` or ``"bf16"``, what ``eval_cfg.precision`` resolved to; ``inference``: how the
        predictions were made, :func:`~equiseg.engine.inference.inference_record`). The per-case tables
        cover ``cases``, else the data set's ``report_cases`` (``data.cases``), else all its cases.

    Raises:
        ValueError: ``max_samples < 1`` (zero samples would give ``mIoU nan``, not an error).
    """
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be >= 1, got {max_samples}")
    cfg = eval_cfg or EvalConfig()
    device = torch.device(device)
    classes = list(getattr(dataset, "classes", []))
    num_classes = len(classes) or getattr(getattr(model, "cfg", None), "num_classes", None)
    ignore = int(getattr(dataset, "ignore_index", 255))
    overall = SegMetrics(num_classes, ignore_index=ignore, class_names=classes or None, device=device)
    if cases is None and cfg.per_case and hasattr(dataset, "spec"):
        cases = list(getattr(dataset, "report_cases", None) or dataset.spec.cases)  # data.cases
    per_case = {c: SegMetrics(num_classes, ignore_index=ignore, device=device) for c in (cases or [])}
    n = len(dataset) if max_samples is None else min(len(dataset), max_samples)
    indices = shard_indices(n, get_rank(), get_world_size())
    # auto: bf16 only if this model's forward on a sample of this split is measurably faster in it
    crop = forward_crop(cfg)  # the forward runs on windows
    precision = resolve_precision(cfg.precision, device, model=model, data=dataset if n else None, crop=crop)
    if get_world_size() > 1:  # rank 0's verdict everywhere: the probe is timed per process
        precision = all_gather_objects(precision)[0]
    net = with_precision(model, precision, device)  # bf16: autocast forward, fp32 logits out

    was_training = model.training
    model.eval()
    try:
        for i in tqdm(indices, desc="eval", disable=not (progress and is_main_process()), leave=False):
            inputs, label = dataset[i]
            inputs = [None if x is None else x.unsqueeze(0).to(device) for x in inputs]
            label = label.unsqueeze(0).to(device)
            logits = infer_logits(net, inputs, num_classes=num_classes, **inference_kwargs(cfg))
            if logits.shape[-2:] != label.shape[-2:]:
                logits = torch.nn.functional.interpolate(
                    logits, size=label.shape[-2:], mode="bilinear", align_corners=False
                )
            pred = class_ids(logits.float())  # fp32 already (infer_logits); never argmax in bf16
            overall.update(pred, label)
            if per_case:
                for c in dataset.case_of(i):
                    if c in per_case:
                        per_case[c].update(pred, label)
    finally:
        model.train(was_training)

    overall.all_reduce()
    for m in per_case.values():
        m.all_reduce()
    result = overall.compute(cfg.convention)
    result["other_convention"] = {
        k: v for k, v in overall.compute(OTHER[cfg.convention]).items() if k in ("mIoU", "mAcc", "convention")
    }
    result["num_samples"] = n
    result["confusion"] = overall.matrix.cpu().tolist()  # rows: ground truth, columns: prediction (pixels)
    result["precision"] = precision
    result["precision_note"] = describe_precision(precision, cfg.precision, device)
    result["inference"] = inference_record(cfg)
    result["per_case"] = {}
    for c, m in per_case.items():
        if m.matrix.sum() == 0:
            continue  # no sample of this case in the split
        r = m.compute(cfg.convention)
        result["per_case"][c] = {"mIoU": r["mIoU"], "aAcc": r["aAcc"], "mAcc": r["mAcc"]}
    return result


def metrics_markdown(result: dict[str, Any], title: str = "Evaluation") -> str:
    """Markdown tables: overall metrics, per case, per class; the split scored (``result["split"]``,
    which the callers add: :func:`evaluate` only sees a data set) in the text and the table.

    The one writer below ``equiseg/reports/`` (docs/architecture.md): the trainer writes ``metrics.md``
    at every validation, and the engine cannot import the reports; numbers through the shared
    :func:`equiseg.formatting.fmt`."""
    conv = result.get("convention", "reference")
    lines = [f"## {title}", ""]
    split = f"the {result['split']} split" if result.get("split") else "the split"
    lines.append(
        f"Metrics in %, one confusion matrix over {split}; convention: **{conv}** "
        + (
            "(classes with no union count as 0, as published numbers)"
            if conv == "reference"
            else "(classes with no union excluded)"
        )
        + "."
    )
    if result.get("inference"):
        lines[-1] += f" Inference: {describe_inference(result['inference'])}."
    if result.get("precision_note"):
        lines[-1] += f" Network forward: {result['precision_note']}."
    lines += ["", "| split | mIoU | aAcc | mAcc | samples |", "|---|---|---|---|---|"]
    lines.append(
        f"| {result.get('split', '–')} | {fmt(result['mIoU'])} | {fmt(result['aAcc'])} | {fmt(result['mAcc'])} | "
        f"{result.get('num_samples', '')} |"
    )
    other = result.get("other_convention")
    if other:
        lines += [
            "",
            f"Under the {other['convention']} convention: mIoU {fmt(other['mIoU'])}, mAcc {fmt(other['mAcc'])}.",
        ]
    if result.get("per_case"):
        lines += ["", "### Per case", "", "| case | mIoU | aAcc | mAcc |", "|---|---|---|---|"]
        for c, r in result["per_case"].items():
            lines.append(f"| {c} | {fmt(r['mIoU'])} | {fmt(r['aAcc'])} | {fmt(r['mAcc'])} |")
    if result.get("per_class"):
        lines += ["", "### Per class", "", "| class | IoU | Acc |", "|---|---|---|"]
        for name, r in result["per_class"].items():
            lines.append(f"| {name} | {fmt(r['IoU'])} | {fmt(r['Acc'])} |")
    return "\n".join(lines) + "\n"


def write_metrics(result: dict[str, Any], out_dir: str | Path, title: str = "Evaluation") -> None:
    """``metrics.json`` + ``metrics.md`` in ``out_dir`` (rank 0 only)."""
    if not is_main_process():
        return
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    (out / "metrics.md").write_text(metrics_markdown(result, title))
