"""Single-pass evaluation of the robustness benchmark (docs/design.md §6; Liao et al., CVPR-W 2025).

Every sample is loaded once; all corruption *variants* (clean, the EMM combinations, the RMM
combinations at every rate, the NM levels, optionally the model-aware EMM) are built from it and
evaluated before the next sample is read, each into its own :class:`~equiseg.engine.SegMetrics`. The
result is the same as looping over the split once per variant (a test checks it), at one load of the
split instead of ~60 for N = 4.

Variants whose inputs are bit-identical by construction are evaluated once: "no modality missing" is
the clean pass for EMM, RMM and the model-aware EMM alike, and (with ``reuse_identical``) RMM at rate 0
is the clean pass and RMM at rate 1 the EMM pass of the same missing set. With
``variant_batch_size > 1`` the variants of a sample are stacked into few forward calls.

The variants themselves are :mod:`equiseg.robustness.variants`, the result's layout
:mod:`equiseg.robustness.result` (both importable from here).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from equiseg.engine.inference import EvalInference, inference_record
from equiseg.engine.metrics import CONVENTIONS, Convention, SegMetrics, class_ids

from .corruptions import NM_LEVELS, find_event_index
from .result import assemble_result
from .variants import (
    TESTS,
    Inputs,
    Model,
    Variant,
    _canonical,
    _check_tests,
    _chunks,
    build_variants,
    corrupt_inputs,
)

__all__ = [
    "TESTS",
    "Inputs",
    "Model",
    "Variant",
    "assemble_result",
    "build_variants",
    "corrupt_inputs",
    "run_benchmark",
]


def run_benchmark(
    model: Model,
    dataset: Iterable[Any],
    tests: Sequence[str] = TESTS,
    rmm_rates: Sequence[float] = (0.25, 0.5, 0.75),
    nm_levels: Sequence[str] = ("low", "mid", "high"),
    ps: Sequence[float] = (0.2, 0.1, 0.05),
    seed: int = 0,
    convention: Convention = "reference",
    device: torch.device | str | None = None,
    progress: bool = True,
    num_classes: int | None = None,
    modality_names: Sequence[str] | None = None,
    event_index: int | None = None,
    model_aware_missing: bool = False,
    out_dir: str | Path | None = None,
    *,
    class_names: Sequence[str] | None = None,
    ignore_index: int | None = 255,
    variant_batch_size: int = 1,
    model_name: str | None = None,
    reuse_identical: bool = True,
    eval_cfg: Any = None,
    split: str | None = None,
) -> dict[str, Any]:
    """Run the robustness benchmark (EMM, RMM, NM; docs/design.md §6) on a split in one pass.

    The model is called under :func:`torch.inference_mode`. An ``nn.Module`` is used in the mode the
    caller set: pass an eval-mode model (``model.eval()``); a warning is issued if it is training. The
    model must not modify its input tensors in place (clean tensors are shared between variants).

    Args:
        model: Any callable taking a list of ``N`` normalised tensors ``B×C_i×H×W`` (or ``None`` for a
            missing modality, only with ``model_aware_missing``) and returning logits ``B×K×h×w``;
            logits of another size than the label are resized bilinearly (``align_corners=False``).
        dataset: Iterable of ``(inputs, label)`` already transformed for evaluation: ``inputs`` a list of
            ``N`` float tensors ``C_i×H×W`` (or ``1×C_i×H×W``), ``label`` int ``H×W`` (or ``1×H×W``) with
            ``ignore_index`` for unlabelled pixels. A map-style data set (``__len__`` + ``__getitem__``)
            or a ``DataLoader`` with batch size 1 (unshuffled: the sample's position seeds its noise).
        tests: Subset of ``("emm", "rmm", "nm")``. The clean pass always runs.
        rmm_rates: RMM drop rates ``r``; the robustness score needs 0.5.
        nm_levels: Subset of ``("low", "mid", "high")``; the robustness score needs low and mid.
        ps: Failure probabilities of the weighted EMM/RMM scores; the robustness score needs 0.1.
        seed: Seed of every random corruption (per sample and variant, see
            :func:`~equiseg.robustness.corruptions.variant_generator`).
        convention: mIoU convention of :meth:`SegMetrics.compute`; ``"reference"`` for published numbers.
        device: Where inputs go; default the device of the module's first parameter, else CPU.
        progress: Show a tqdm bar over ``samples × variants`` forward passes.
        num_classes: ``K``; default the logits' channel count.
        modality_names: Names of the ``N`` modalities (combination names, event detection); default the
            model's or data set's ``modalities`` attribute, else ``m0 … m{N-1}``.
        event_index: Index of the event modality (no Gaussian noise in NM); default found by name
            (``event``/``event_camera``), else none.
        model_aware_missing: Also evaluate EMM with missing modalities passed as ``None``; reported in
            the separate ``emm_none`` section, not in the summary (not the protocol).
        out_dir: If given, write ``robustness.json`` and ``robustness.md`` there.
        class_names: Names for the clean pass's per-class IoU.
        ignore_index: Label value to skip.
        variant_batch_size: At most this many variants of one sample stacked into one forward call
            (all but the model-aware ones have every modality present, so they can share a batch); the
            variants are split into ``ceil(V / variant_batch_size)`` calls of near-equal size. 1
            (default) calls the model per variant, the same computation as a batch-1 loop. Larger values
            are faster (modestly on a CPU for small images, see the README's Performance section; more
            on a GPU) but kernels may round differently at another batch size: logits can change in
            the last bits, which on rare near-tied pixels flips an arg-max. Measured on CPU
            (``benchmarks/robustness_speed.py``, EQUISeg-B0, 128 px): calls of 4 or more rows give
            every row bit for bit the logits of a batch-4 loop over the samples, calls of 1-3 rows
            differ; 4 reproduces the batch shape of such a loop exactly.
        model_name: Label of the Markdown table row.
        reuse_identical: Evaluate variants whose inputs are bit-identical by construction once: RMM
            at rate 0 reads the clean pass, RMM at rate 1 the EMM pass of the same missing set (every
            element dropped is exactly the zero fill). The numbers are those of evaluating them
            separately (at ``variant_batch_size=1`` bit for bit).
        eval_cfg: An :class:`~equiseg.config.EvalConfig`: every variant is predicted the way ``equiseg
            eval`` predicts under it (whole image or sliding windows, its scales and flip; see
            :class:`~equiseg.engine.inference.EvalInference`), so the clean pass is ``eval``'s number.
            None: one call of ``model`` per batch of variants, at the input size.
        split: The name of the split ``dataset`` holds, recorded as ``split`` in the result and named by
            its tables (the data set itself does not say); None: not recorded.

    Returns:
        A dict (also the content of ``robustness.json``) with the metadata ``convention``, ``seed``,
        ``num_samples``, ``num_classes``, ``modalities``, ``event_index``, ``tests``, ``inference``
        (:func:`~equiseg.engine.inference.inference_record` of ``eval_cfg``), ``protocol``
        (``ps``, ``rmm_rates``, ``nm_levels``), ``model_name``, ``num_params_m``; the flat ``summary``
        (``clean``, ``emm_avg``, ``emm_p0.2`` …, ``rmm_avg[0.5]``, ``rmm_p0.1[0.5]`` … per rate,
        ``nm_low`` …, ``mean`` = the paper's robustness score or ``None`` if an input was not run);
        ``clean`` (``mIoU``, ``aAcc``, ``mAcc``, ``per_class``, ``absent_classes``); and per test:
        ``emm`` = ``{"combinations": [...], "avg", "p0.2", ...}`` where each combination is
        ``{"name": "rgb+depth", "present", "missing", "num_missing", "mIoU", "aAcc", "mAcc"}`` (all
        ``2^N - 1``, none-missing first); ``rmm`` = ``{"0.5": {"rate", "combinations", "avg", ...}}``;
        ``nm`` = ``{"low": {"salt_pepper", "gaussian_std", "mIoU", "aAcc", "mAcc"}}``; ``emm_none``
        (with ``model_aware_missing``) like ``emm`` plus a ``note``.
    """
    tests = _check_tests(tests)
    rmm_rates = tuple(dict.fromkeys(float(r) for r in rmm_rates))  # de-duplicated, order kept
    if any(not 0.0 <= r <= 1.0 for r in rmm_rates):
        raise ValueError(f"RMM rates must be in [0, 1], got {rmm_rates}")
    nm_levels = tuple(dict.fromkeys(nm_levels))
    unknown = [lvl for lvl in nm_levels if lvl not in NM_LEVELS]
    if unknown:
        raise ValueError(f"unknown noise level(s) {unknown}; choose from {tuple(NM_LEVELS)}")
    ps = tuple(dict.fromkeys(float(p) for p in ps))
    if any(not 0.0 <= p < 1.0 for p in ps):
        raise ValueError(f"failure probabilities p must be in [0, 1), got {ps}")
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown metric convention {convention!r}; choose from {CONVENTIONS}")
    if variant_batch_size < 1:
        raise ValueError(f"variant_batch_size must be >= 1, got {variant_batch_size}")
    if isinstance(model, nn.Module) and model.training:
        warnings.warn(
            "run_benchmark: the model is in training mode (dropout, BatchNorm batch statistics); "
            "pass model.eval() for benchmark numbers",
            stacklevel=2,
        )
    device = torch.device(device) if device is not None else _module_device(model)
    num_samples = _len_or_none(dataset)
    predict = model if eval_cfg is None else EvalInference(model, eval_cfg, num_classes)

    variants: list[Variant] | None = None
    chunks: list[list[Variant]] = []
    canonical: dict[str, Variant] = {}  # variant key -> the computation it reads
    computed: dict[Variant, SegMetrics] = {}  # one confusion matrix per distinct computation
    names: list[str] = []
    n_mod = 0
    count = 0
    bar = tqdm(total=None, disable=not progress, unit="pass", dynamic_ncols=True)
    try:
        with torch.inference_mode():
            for sample_index, item in enumerate(_iterate(dataset)):
                inputs, label = _unpack(item, device, sample_index)
                if variants is None:  # first sample: N is known now
                    n_mod = len(inputs)
                    names = _modality_names(modality_names, model, dataset, n_mod)
                    event_index = _event_index(event_index, names)
                    variants = build_variants(n_mod, tests, rmm_rates, nm_levels, model_aware_missing)
                    canonical = {v.key: (_canonical(v) if reuse_identical else v) for v in variants}
                    todo = list(dict.fromkeys(canonical.values()))  # distinct computations, in order
                    chunks = _chunks([v for v in todo if not v.model_aware], variant_batch_size)
                    chunks += [[v] for v in todo if v.model_aware]
                    total = num_samples * len(todo) if num_samples is not None else None
                    bar.reset(total=total)
                    bar.set_description(f"robustness: {len(todo)} passes/sample")
                elif len(inputs) != n_mod:
                    raise ValueError(f"sample {sample_index} has {len(inputs)} modalities, expected {n_mod}")
                for chunk in chunks:
                    variant_inputs = [
                        corrupt_inputs(
                            v, inputs, seed=seed, sample_index=sample_index, event_index=event_index
                        )
                        for v in chunk
                    ]
                    logits = _forward(predict, variant_inputs, label)
                    if num_classes is None:
                        num_classes = int(logits.shape[1])
                    elif logits.shape[1] != num_classes:
                        raise ValueError(f"model returned {logits.shape[1]} classes, expected {num_classes}")
                    pred = class_ids(logits)  # V×H×W
                    for j, v in enumerate(chunk):
                        if v not in computed:
                            computed[v] = SegMetrics(num_classes, ignore_index, class_names, device=device)
                        computed[v].update(pred[j : j + 1], label)
                    bar.update(len(chunk))
                count += 1
    finally:
        bar.close()
    if variants is None:
        raise ValueError("run_benchmark: the data set yielded no samples")
    metrics = {v.key: computed[canonical[v.key]] for v in variants}

    result = assemble_result(
        metrics,
        convention=convention,
        seed=seed,
        num_samples=count,
        num_classes=int(num_classes),  # set by the first forward
        names=names,
        event_index=event_index,
        tests=tests,
        ps=ps,
        rmm_rates=rmm_rates,
        nm_levels=nm_levels,
        model_aware_missing=model_aware_missing,
        model=model,
        model_name=model_name,
        inference=inference_record(eval_cfg),
    )
    if split is not None:
        result["split"] = split
    if out_dir is not None:
        from equiseg.reports.robustness import write_report  # the writers live with the reports

        write_report(result, out_dir, model_name)
    return result


# ---------------------------------------------------------------------------------------------------
# helpers


def _module_device(model: Model) -> torch.device:
    if isinstance(model, nn.Module):
        for t in model.parameters():
            return t.device
        for t in model.buffers():
            return t.device
    return torch.device("cpu")


def _len_or_none(dataset: Any) -> int | None:
    try:
        return len(dataset)
    except TypeError:
        return None


def _iterate(dataset: Any) -> Iterator[Any]:
    """Iterate a DataLoader / iterable, or index a map-style data set (which may have no ``__iter__``)."""
    if hasattr(dataset, "__iter__"):
        return iter(dataset)
    if hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
        return (dataset[i] for i in range(len(dataset)))
    raise TypeError(f"dataset must be iterable or indexable, got {type(dataset).__name__}")


def _unpack(item: Any, device: torch.device, index: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """``(inputs, label)`` -> N tensors ``1×C_i×H×W`` and a ``1×H×W`` int64 label, on ``device``."""
    if not isinstance(item, (list, tuple)) or len(item) != 2:
        raise TypeError(f"sample {index}: expected an (inputs, label) pair, got {type(item).__name__}")
    raw_inputs, label = item
    if isinstance(raw_inputs, torch.Tensor) or not isinstance(raw_inputs, (list, tuple)) or not raw_inputs:
        raise TypeError(f"sample {index}: inputs must be a non-empty list of per-modality tensors")
    inputs = []
    for i, x in enumerate(raw_inputs):
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"sample {index}: input {i} must be a normalised float tensor")
        if x.ndim == 3:
            x = x.unsqueeze(0)  # C×H×W -> 1×C×H×W
        if x.ndim != 4 or x.shape[0] != 1:
            raise ValueError(
                f"sample {index}: input {i} has shape {tuple(x.shape)}; the benchmark runs with batch 1 "
                "(C×H×W or 1×C×H×W)"
            )
        inputs.append(x.to(device, non_blocking=True))
    if not isinstance(label, torch.Tensor) or label.is_floating_point():
        raise TypeError(f"sample {index}: label must be an integer tensor")
    if label.ndim == 2:
        label = label.unsqueeze(0)  # H×W -> 1×H×W
    if label.ndim != 3 or label.shape[0] != 1:
        raise ValueError(f"sample {index}: label has shape {tuple(label.shape)}; expected H×W or 1×H×W")
    return inputs, label.to(device=device, dtype=torch.int64, non_blocking=True)


def _forward(model: Model, variant_inputs: list[Inputs], label: torch.Tensor) -> torch.Tensor:
    """Logits ``V×K×H×W`` of ``V`` variants, stacked along the batch when ``V > 1``."""
    if len(variant_inputs) == 1:
        batch = variant_inputs[0]
    else:  # every tensor present (model-aware variants are never batched)
        batch = [torch.cat(ms) for ms in zip(*variant_inputs, strict=True)]  # per modality V×C_i×H×W
    logits = model(batch)
    if not isinstance(logits, torch.Tensor) or logits.ndim != 4 or logits.shape[0] != len(variant_inputs):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"model must return logits B×K×H×W with B={len(variant_inputs)}, got {shape}")
    if logits.shape[-2:] != label.shape[-2:]:
        logits = F.interpolate(logits.float(), size=label.shape[-2:], mode="bilinear", align_corners=False)
    return logits


def _modality_names(explicit: Sequence[str] | None, model: Any, dataset: Any, n: int) -> list[str]:
    if explicit is not None:
        if len(explicit) != n:
            raise ValueError(f"got {len(explicit)} modality names for {n} inputs: {list(explicit)}")
        return [str(s) for s in explicit]
    for owner in (model, dataset, getattr(dataset, "dataset", None)):
        found = getattr(owner, "modalities", None)
        if isinstance(found, (list, tuple)) and len(found) == n and all(isinstance(s, str) for s in found):
            return list(found)
    return [f"m{i}" for i in range(n)]


def _event_index(explicit: int | None, names: Sequence[str]) -> int | None:
    if explicit is None:
        return find_event_index(names)
    if not 0 <= explicit < len(names):
        raise ValueError(f"event_index {explicit} out of range for {len(names)} modalities")
    return int(explicit)
