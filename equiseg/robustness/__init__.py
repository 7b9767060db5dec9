"""Robustness benchmark under sensor failures (docs/design.md §6; Liao et al., CVPR-W 2025,
arXiv 2503.18445).

Entire-missing (EMM), random-missing (RMM) and noisy (NM) modalities on the normalised inputs, evaluated
in one pass over the split, summarised as in the paper's Tab. 1 with its robustness score::

    from equiseg.robustness import run_benchmark
    result = run_benchmark(model.eval(), val_set, out_dir="runs/robustness")
    result["summary"]["mean"]
"""

from equiseg.robustness.benchmark import TESTS, Variant, build_variants, corrupt_inputs, run_benchmark
from equiseg.robustness.corruptions import (
    EVENT_NAMES,
    NM_LEVELS,
    NoiseLevel,
    apply_emm,
    apply_nm,
    apply_rmm,
    find_event_index,
    gaussian_noise,
    missing_sets,
    random_drop,
    salt_and_pepper,
    variant_generator,
)
from equiseg.robustness.summary import (
    TABLE1_COLUMNS,
    build_summary,
    combination_stats,
    emm_weight,
    robustness_score,
    weighted_miou,
)

__all__ = [
    "EVENT_NAMES",
    "NM_LEVELS",
    "TABLE1_COLUMNS",
    "TESTS",
    "NoiseLevel",
    "Variant",
    "apply_emm",
    "apply_nm",
    "apply_rmm",
    "build_summary",
    "build_variants",
    "combination_stats",
    "corrupt_inputs",
    "emm_weight",
    "find_event_index",
    "gaussian_noise",
    "missing_sets",
    "random_drop",
    "robustness_score",
    "run_benchmark",
    "salt_and_pepper",
    "table1_markdown",
    "to_markdown",
    "variant_generator",
    "weighted_miou",
    "write_report",
]


def __getattr__(name: str):
    # the writers of a result live with the other reports (equiseg.reports.robustness), which imports
    # this package's arithmetic: resolved on first use, so neither import order is a cycle
    if name in ("table1_markdown", "to_markdown", "write_report"):
        from equiseg.reports import robustness as _reports

        return getattr(_reports, name)
    raise AttributeError(f"module 'equiseg.robustness' has no attribute {name!r}")
