"""``study``'s protocol: the models of Tab. 1, the metrics per table, the recipe of a pretrained init,
and the paper's claims as directions of paired differences, with their verdicts. ``equiseg study`` is
:func:`equiseg.tasks.study.run_study`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "CLAIMS",
    "LABELS",
    "METRICS",
    "PRETRAINED_RECIPE",
    "TAB1_MODELS",
    "evaluate_claims",
    "verdict",
]

TAB1_MODELS = (
    "equiseg_b0",
    "segformer_b0",
    "cmnext_b0",
    "cmx_b0",
    "stitchfusion_b0",
    "magic_b0",
    "magicpp_b0",
)
# The paper's recipe from ImageNet weights (docs/design.md §3): lr 6e-5 and λ = 60 (Tab. 2/3 rows force
# λ = 60 anyway).
PRETRAINED_RECIPE = ("train.lr=6e-5", "model.lambda_sgm=60")
METRICS = {
    "tab1": ("clean", "emm_avg", "mean"),
    "tab2": ("mIoU", "emm_avg"),
    "tab3": ("mIoU", "emm_avg"),
    "sgm_convention": ("mIoU", "emm_avg"),
    "sgm_features": ("mIoU", "emm_avg"),
    "modality_dropout": ("mIoU", "emm_avg"),
}
LABELS = {"clean": "mIoU", "mIoU": "mIoU", "emm_avg": "EMM Avg", "mean": "Mean"}


# The paper's claims as directions of paired differences (row − full model, seed by seed): ``(table,
# row, metric, sign, claim)``; sign "-" = the paper has the row below the full model, "+" above. Tab. 1's
# full model is EQUISeg and its rows the peers, so "EQUISeg scores highest" is "every peer − EQUISeg < 0".
CLAIMS: tuple[tuple[str, str, str, str, str], ...] = (
    *(
        ("tab1", peer, metric, "-", f"EQUISeg's {what} is above {peer}'s (Tab. 1)")
        for metric, what in (("mean", "robustness score"), ("emm_avg", "EMM (Avg)"))
        for peer in TAB1_MODELS[1:]
    ),
    (
        "tab1",
        "stitchfusion_b0",
        "clean",
        "+",
        "StitchFusion's clean mIoU is (slightly) above EQUISeg's (Tab. 1)",
    ),
    *(
        ("tab2", row, metric, "-", f"{what} lowers {label} (Tab. 2)")
        for row, what in (
            ("hub_mean", "the mean instead of the Self-Query Hub"),
            ("no_cross_attention", "dropping cross-attention"),
            ("no_add", "dropping the residual add"),
        )
        for metric, label in (("mIoU", "mIoU"), ("emm_avg", "EMM (Avg)"))
    ),
    ("tab3", "no_sgm", "emm_avg", "-", "without SGM, EMM (Avg) drops (Tab. 3)"),
    (
        "tab3",
        "no_sgm",
        "sim_event",
        "-",
        "without SGM, event's similarity to the fused feature drops (Tab. 3)",
    ),
    (
        "tab3",
        "no_sgm",
        "sim_lidar",
        "-",
        "without SGM, LiDAR's similarity to the fused feature drops (Tab. 3)",
    ),
    ("tab3", "no_prototype", "emm_avg", "-", "without prototypes, EMM (Avg) drops (Tab. 3)"),
    ("tab3", "no_prototype", "sim_event", "-", "without prototypes, event's similarity drops (Tab. 3)"),
    ("tab3", "no_prototype", "sim_lidar", "-", "without prototypes, LiDAR's similarity drops (Tab. 3)"),
    ("tab3", "cosine_pairing", "emm_avg", "-", "cosine instead of random pairing lowers EMM (Avg) (Tab. 3)"),
    ("tab3", "lambda1", "emm_avg", "-", "λ = 1 gives a lower EMM (Avg) than λ = 60 (Tab. 3)"),
    ("tab3", "lambda40", "emm_avg", "-", "λ = 40 gives a lower EMM (Avg) than λ = 60 (Tab. 3)"),
    ("tab3", "lambda80", "emm_avg", "-", "λ = 80 gives a lower EMM (Avg) than λ = 60 (Tab. 3)"),
    ("tab3", "lambda1", "sim_event", "-", "λ = 1 lowers event's similarity (under-regularised) (Tab. 3)"),
    ("tab3", "lambda80", "sim_event", "+", "λ = 80 raises event's similarity (Tab. 3)"),
    ("tab3", "lambda80", "sim_rgb", "-", "λ = 80 lowers RGB's similarity (Tab. 3)"),
)


def verdict(diff: Mapping[str, Any], sign: str) -> str:
    """``reproduced`` when the 95 % interval of the paired difference lies on the paper's side of 0,
    ``reversed`` when it lies on the other side, ``not resolved`` when it contains 0."""
    if diff.get("half_width") is None:
        return "one seed: no interval"
    low, high = diff["low"], diff["high"]
    if (sign == "-" and high < 0) or (sign == "+" and low > 0):
        return "reproduced"
    if (sign == "-" and low > 0) or (sign == "+" and high < 0):
        return "reversed"
    return "not resolved"


def evaluate_claims(sections: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each of :data:`CLAIMS` that the study's sections measured, per init: the paired difference
    (mean, 95 % interval) and the verdict of :func:`verdict`."""
    out = []
    for sec in sections:
        for table, row, metric, sign, claim in CLAIMS:
            stat = sec["rows"].get(row, {}).get(metric) if sec["table"] == table else None
            if stat is None:
                continue
            d = stat["vs_full"]
            out.append({"init": sec["init"], "table": table, "row": row, "metric": metric, "sign": sign,
                        "claim": claim, "diff": d, "verdict": verdict(d, sign)})  # fmt: skip
    return out
