"""The samples and predictions behind the paper's Fig. 2 (:func:`equiseg.reports.figures.prediction_grid`):
one val sample per showcased case, each model's prediction on it, and the rows of the grid with the raw
modalities as stored (not the normalised network inputs)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from equiseg.engine.metrics import class_ids

__all__ = ["SHOWCASE", "pick_cases", "predict_samples", "prediction_rows"]

# The cases Fig. 2 shows first (DeLiVER's conditions and sensor failures; MUSES' are matched too).
SHOWCASE = (
    "rain",
    "night",
    "overexposure",
    "eventlowres",
    "fog",
    "sun",
    "motionblur",
    "lidarjitter",
    "underexposure",
    "snow",
)


def _indices(dataset: Any) -> tuple[Any, list[int]]:
    """The underlying data set and the indices into it of ``dataset`` (a data set or a ``Subset``)."""
    base = getattr(dataset, "dataset", None)
    if base is not None and hasattr(dataset, "indices"):
        return base, [int(i) for i in dataset.indices]
    return dataset, list(range(len(dataset)))


def pick_cases(dataset: Any, cases: Sequence[str] = SHOWCASE, max_rows: int = 6) -> list[tuple[int, str]]:
    """One sample per case -- those of ``cases`` first, in that order, then the data set's others --
    each sample used once, at most ``max_rows``: ``[(position in dataset, title), ...]``. Without case
    tags: the first samples."""
    base, idx = _indices(dataset)
    case_of = getattr(base, "case_of", None)
    picked: list[tuple[int, str]] = []
    if case_of is not None:
        tags = [tuple(case_of(i)) for i in idx]
        used: set[int] = set()
        others = [c for t in tags for c in t if c not in cases]  # then the split's other cases
        for case in dict.fromkeys([*cases, *others]):
            pos = next((p for p, t in enumerate(tags) if case in t and p not in used), None)
            if pos is not None:
                used.add(pos)
                picked.append((pos, "/".join(tags[pos])))
            if len(picked) == max_rows:
                break
    if not picked:
        picked = [(p, f"sample {idx[p]}") for p in range(min(max_rows, len(idx)))]
    return picked


@torch.inference_mode()
def predict_samples(
    model: torch.nn.Module,
    dataset: Any,
    positions: Sequence[int],
    *,
    device: torch.device | str = "cpu",
    eval_cfg: Any = None,
) -> dict[int, torch.Tensor]:
    """``{position: H×W predicted class ids}`` of ``model`` on those samples of ``dataset`` (val
    transform), at the label's size; whole-image inference unless ``eval_cfg`` says otherwise."""
    from equiseg.engine.inference import infer_logits

    was_training = model.training
    model.eval()
    out = {}
    try:
        for p in positions:
            inputs, label = dataset[p]
            xs = [None if x is None else x.unsqueeze(0).to(device) for x in inputs]
            if eval_cfg is None:
                logits = model(xs)
            else:
                logits = infer_logits(
                    model,
                    xs,
                    mode=eval_cfg.mode,
                    crop_size=eval_cfg.crop_size,
                    stride=eval_cfg.stride,
                    scales=eval_cfg.scales,
                    flip=eval_cfg.flip,
                    align=eval_cfg.align,
                    window_batch=eval_cfg.window_batch,
                )
            if logits.shape[-2:] != label.shape[-2:]:
                logits = torch.nn.functional.interpolate(
                    logits.float(), size=label.shape[-2:], mode="bilinear", align_corners=False
                )
            out[p] = class_ids(logits.float())[0].cpu()
    finally:
        model.train(was_training)
    return out


def prediction_rows(
    raw: Any,
    picks: Sequence[tuple[int, str]],
    predictions: Mapping[str, Mapping[int, torch.Tensor]],
    positions_to_raw: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """The rows of :func:`~equiseg.reports.figures.prediction_grid`.

    Args:
        raw: The split without transform (``build_dataset(cfg.data, split)``): its ``load(i)`` gives the
            modalities as stored and the label.
        picks: What :func:`pick_cases` returned.
        predictions: ``{model name: {position: prediction}}`` (:func:`predict_samples`).
        positions_to_raw: Index into ``raw`` of each position (default: the same).
    """
    rows = []
    for pos, title in picks:
        raw_inputs, raw_label = raw.load(positions_to_raw[pos] if positions_to_raw else pos)
        preds = {}
        for name, per_pos in predictions.items():
            if pos not in per_pos:
                continue
            pred = per_pos[pos]
            if pred.shape != raw_label.shape:
                pred = torch.nn.functional.interpolate(
                    pred[None, None].float(), size=raw_label.shape, mode="nearest"
                )[0, 0].long()
            preds[name] = pred
        rows.append({"title": title, "inputs": raw_inputs, "label": raw_label, "preds": preds})
    return rows
