"""``equiseg analyze``: the modality-contribution analysis of a checkpoint on a split (paper Tab. 3,
docs/design.md §7).

The analysis itself is :mod:`equiseg.analysis` (every definition side by side, the feature norms); its
tables, chart and files are written by :mod:`equiseg.reports.analysis`. This module loads the
checkpoint and the split, runs the one and writes with the other; the names of both stay importable
from here.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from equiseg.analysis.contributions import (
    CROSS_RATIO_DEFINITION,
    DEFINITION,
    FEATURE_KINDS,
    FEATURES,
    FUSED,
    HEADLINE,
    HEADLINE_PIXEL,
    HEADLINE_WHY,
    NORM_DEFINITION,
    NUM_STAGES,
    PEER_FEATURE,
    PIXEL_DEFINITION,
    REDUCTIONS,
    definition_values,
    fused_feature,
    modality_contributions,
    rms_norms,
    stage_similarities,
)
from equiseg.reports.analysis import (
    analysis_chart,
    analysis_markdown,
    analysis_section,
    cross_ratio_table,
    definitions_table,
    norms_table,
    similarity_table,
    write_analysis,
)
from equiseg.reports.tables import DISPLAY_NAMES, display_name

__all__ = [
    "CROSS_RATIO_DEFINITION",
    "DEFINITION",
    "DISPLAY_NAMES",
    "FEATURES",
    "FEATURE_KINDS",
    "FUSED",
    "HEADLINE",
    "HEADLINE_PIXEL",
    "HEADLINE_WHY",
    "NORM_DEFINITION",
    "NUM_STAGES",
    "PEER_FEATURE",
    "PIXEL_DEFINITION",
    "REDUCTIONS",
    "analysis_chart",
    "analysis_markdown",
    "analysis_section",
    "analyze",
    "cross_ratio_table",
    "definition_values",
    "definitions_table",
    "display_name",
    "fused_feature",
    "modality_contributions",
    "norms_table",
    "rms_norms",
    "similarity_table",
    "stage_similarities",
    "write_analysis",
]


def analyze(
    config: Any,
    checkpoint: str | Path,
    overrides: Iterable[str] = (),
    *,
    split: str | None = None,
    out_dir: str | Path | None = None,
    max_samples: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """``equiseg analyze``: the analysis of a checkpoint on a split of the config's data set.

    Args:
        config: An :class:`~equiseg.config.ExperimentConfig`, a YAML path or a dict (data and device).
        checkpoint: A training checkpoint (it carries its model config).
        overrides: Dotted ``a.b=c`` config overrides.
        split: Default ``data.val_split``.
        out_dir: If given, write ``analysis.json``/``.md``/``.png`` there.
        max_samples: Use only the first ``max_samples`` samples.
        progress: Show a progress bar.

    Returns:
        :func:`modality_contributions`' dict (run in the config's ``eval.precision``) plus ``split`` and
        ``checkpoint``.

    Raises:
        ValueError: the config asks for an inference the analysis cannot run (``eval.mode: slide``,
            several ``eval.scales``, ``eval.flip``, ``eval.align``): features are compared on one
            whole-image forward at scale 1, and a number under another name would be silently wrong.
    """
    from equiseg.config import load_experiment
    from equiseg.engine.eval_setup import load_eval_setup
    from equiseg.engine.inference import require_single_pass

    cfg = load_experiment(config, overrides)
    require_single_pass(cfg.eval, "analyze", "compares the features of one whole-image forward at scale 1")
    setup = load_eval_setup(cfg, checkpoint, split=split)
    result = modality_contributions(
        setup.model,
        setup.dataset,
        device=setup.device,
        progress=progress,
        max_samples=max_samples,
        precision=setup.cfg.eval.precision,
    )
    result["split"] = setup.split
    result["checkpoint"] = str(checkpoint)
    if out_dir is not None:
        write_analysis(
            result, out_dir, title=f"Modality contributions: {setup.name} on the {setup.split} split"
        )
    return result
