"""The result of a robustness benchmark run: every variant's scores laid out per test (EMM combinations,
RMM per rate, NM per level), with the protocol, the inference record and the summary
(:func:`assemble_result`, the layout of ``robustness.json``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from equiseg.engine.inference import inference_record
from equiseg.engine.metrics import Convention, SegMetrics

from .corruptions import NM_LEVELS, missing_sets
from .summary import build_summary, combination_stats, rate_key
from .variants import Model, Variant


def assemble_result(
    metrics: Mapping[str, SegMetrics],
    *,
    convention: Convention,
    seed: int,
    num_samples: int,
    num_classes: int,
    names: list[str],
    event_index: int | None,
    tests: tuple[str, ...],
    ps: tuple[float, ...],
    rmm_rates: tuple[float, ...],
    nm_levels: tuple[str, ...],
    model_aware_missing: bool,
    model: Model,
    model_name: str | None,
    inference: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Compute every variant's metrics and lay the result dict out (see :func:`run_benchmark`;
    ``inference``: how the predictions were made, default one whole-image forward).

    ``metrics`` maps every :attr:`Variant.key` the tests need (see :func:`build_variants`) to its
    accumulated :class:`SegMetrics`; any other loop that fills them (e.g. the reference-structure loop
    of ``benchmarks/robustness_speed.py``) gets the same result layout as :func:`run_benchmark`.
    """
    n = len(names)
    scores = {}
    for key, m in metrics.items():
        r = m.compute(convention)
        scores[key] = {"mIoU": r["mIoU"], "aAcc": r["aAcc"], "mAcc": r["mAcc"]}
        if key == "clean":
            clean = {**scores[key], "per_class": r["per_class"], "absent_classes": r["absent_classes"]}

    def section(test: str, rate: float | None = None) -> dict[str, Any]:
        rows = []
        for missing in missing_sets(n):
            key = Variant(test, missing, rate).key if missing else "clean"
            present = [names[i] for i in range(n) if i not in missing]
            rows.append(
                {
                    "name": "+".join(present),
                    "present": present,
                    "missing": [names[i] for i in missing],
                    "num_missing": len(missing),
                    **scores[key],
                }
            )
        return {"combinations": rows, **combination_stats(rows, n, ps)}

    num_params = None
    if isinstance(model, nn.Module):
        num_params = sum(p.numel() for p in model.parameters()) / 1e6
    if model_name is None:
        model_name = getattr(model, "__name__", None) or type(model).__name__
    result: dict[str, Any] = {
        "convention": convention,
        "seed": seed,
        "num_samples": num_samples,
        "num_classes": num_classes,
        "modalities": names,
        "event_index": event_index,
        "tests": list(tests),
        "inference": dict(inference) if inference is not None else inference_record(None),
        "protocol": {
            "ps": list(ps),
            "rmm_rates": list(rmm_rates),
            "nm_levels": {
                lvl: {"salt_pepper": NM_LEVELS[lvl].salt_pepper, "gaussian_std": NM_LEVELS[lvl].gaussian_std}
                for lvl in nm_levels
            },
            "missing_fill": "zeros (normalised tensor)",
        },
        "model_name": model_name,
        "num_params_m": num_params,
        "summary": {},
        "clean": clean,
    }
    if "emm" in tests:
        result["emm"] = section("emm")
    if "rmm" in tests:
        result["rmm"] = {rate_key(r): {"rate": r, **section("rmm", r)} for r in rmm_rates}
    if "nm" in tests:
        result["nm"] = {
            lvl: {
                "salt_pepper": NM_LEVELS[lvl].salt_pepper,
                "gaussian_std": NM_LEVELS[lvl].gaussian_std,
                **scores[Variant("nm", level=lvl).key],
            }
            for lvl in nm_levels
        }
    if model_aware_missing:
        result["emm_none"] = {
            "note": "model-aware evaluation, not the benchmark protocol: missing modalities are passed as "
            "None instead of zero tensors",
            **section("emm_none"),
        }
    result["summary"] = build_summary(result)
    return result
