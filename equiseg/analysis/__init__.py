"""Modality-contribution analysis (paper Tab. 3, docs/design.md §7): how close each modality's stage
feature is to the fused feature, under every named definition, with the feature norms
(:mod:`.contributions`)::

    from equiseg.analysis import modality_contributions
    result = modality_contributions(model, val_set)
    result["similarity"]["last_stage"]

The computation only; the Markdown tables, the chart and ``analysis.json``/``.md``/``.png`` are written
by :mod:`equiseg.reports.analysis`, and ``equiseg analyze`` is :func:`equiseg.tasks.analysis.analyze`.
"""

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

__all__ = [
    "CROSS_RATIO_DEFINITION",
    "DEFINITION",
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
    "definition_values",
    "fused_feature",
    "modality_contributions",
    "rms_norms",
    "stage_similarities",
]
