"""The ablation tables (paper Tab. 2 and Tab. 3, and the tables this project adds): their rows, the
paper's numbers, and each row's config.

Every row starts from the user's config, sets the switches of the paper's full model
(:data:`FULL_MODEL`: self-query hub, cross-attention, residual add, SGM with prototypes, random
pairing, λ = 60 -- the first rows of Tab. 2 and Tab. 3 are that same model, EMM 44.77 in both), then
applies the ``model`` (and ``train``) section of the row's override file in
``equiseg/configs/ablations/`` (``tab2_hub_mean.yaml`` …; their ``_base_`` and ``work_dir`` are not
used). So a row differs from the first only by its ablated switch. ``equiseg ablate`` is
:func:`equiseg.tasks.ablate.run_ablation`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from equiseg.config import ExperimentConfig, load_experiment, load_yaml
from equiseg.utils import check_names

__all__ = [
    "FULL_MODEL",
    "TABLES",
    "AblationRow",
    "ablation_dir",
    "paper_rows",
    "row_config",
    "row_model_overrides",
    "row_train_overrides",
    "table_rows",
]

# The switches of the paper's full model (first row of both tables); rows change one of them.
FULL_MODEL: dict[str, Any] = {
    "hub": "selfquery",
    "cross_attention": True,
    "residual": True,
    "sgm": True,
    "prototype": True,
    "pairing": "random",
    "lambda_sgm": 60.0,
}


@dataclass(frozen=True)
class AblationRow:
    """One row of an ablation table.

    Attributes:
        id: Short identifier; also the row's work-dir name.
        label: The paper's wording of the row.
        override: File name of the row's override in ``equiseg/configs/ablations/`` (None: the full model).
        paper: The paper's numbers for the row (MiT-B0, DeLiVER): ``mIoU``/``emm_avg`` and/or
            ``similarity`` per modality.
    """

    id: str
    label: str
    override: str | None
    paper: Mapping[str, Any] = field(default_factory=dict)


def _sims(rgb: float, depth: float, event: float, lidar: float) -> dict[str, float]:
    return {"rgb": rgb, "depth": depth, "event": event, "lidar": lidar}


TABLES: dict[str, tuple[str, tuple[AblationRow, ...]]] = {
    "tab2": (
        "Ablation of the CMTB (paper Tab. 2)",
        (
            AblationRow("cmtb", "CMTB", None, {"mIoU": 63.26, "emm_avg": 44.77}),
            AblationRow(
                "hub_mean",
                "with Mean instead Self-Query Hub",
                "tab2_hub_mean.yaml",
                {"mIoU": 62.57, "emm_avg": 42.83},
            ),
            AblationRow(
                "no_cross_attention",
                "without Cross Attention",
                "tab2_no_cross_attention.yaml",
                {"mIoU": 61.92, "emm_avg": 39.36},
            ),
            AblationRow(
                "no_add", "without Add operation", "tab2_no_add.yaml", {"mIoU": 58.69, "emm_avg": 38.61}
            ),
        ),
    ),
    "tab3": (
        "Ablation of the SGM (paper Tab. 3)",
        (
            AblationRow(
                "sgm_lambda60",
                "EQUISeg + SGM (λ=60)",
                None,
                {"similarity": _sims(81.71, 89.72, 29.82, 32.24), "emm_avg": 44.77},
            ),
            AblationRow(
                "no_sgm",
                "without SGM",
                "tab3_no_sgm.yaml",
                {"similarity": _sims(88.14, 93.45, 8.25, 11.35), "emm_avg": 41.54},
            ),
            AblationRow(
                "no_prototype",
                "without Prototype Operation",
                "tab3_no_prototype.yaml",
                {"similarity": _sims(72.22, 80.36, 1.53, 2.16), "emm_avg": 39.84},
            ),
            AblationRow(
                "cosine_pairing",
                "with Cosine Similarity instead Randomly Paired",
                "tab3_cosine_pairing.yaml",
                {"similarity": _sims(82.03, 91.56, 22.66, 24.91), "emm_avg": 43.11},
            ),
            AblationRow(
                "lambda1",
                "EQUISeg + SGM (λ=1)",
                "tab3_lambda1.yaml",
                {"similarity": _sims(85.22, 91.64, 22.47, 26.75), "emm_avg": 43.46},
            ),
            AblationRow(
                "lambda40",
                "EQUISeg + SGM (λ=40)",
                "tab3_lambda40.yaml",
                {"similarity": _sims(83.02, 90.54, 28.11, 30.46), "emm_avg": 44.39},
            ),
            AblationRow(
                "lambda80",
                "EQUISeg + SGM (λ=80)",
                "tab3_lambda80.yaml",
                {"similarity": _sims(78.56, 87.41, 31.21, 32.43), "emm_avg": 44.53},
            ),
        ),
    ),
    # Not a table of the paper: the SGM's two conventions (ModelConfig.sgm_convention) and separate
    # encoders (share_encoder: false), each against the full model as configured.
    "sgm_convention": (
        "SGM conventions and separate encoders (not in the paper)",
        (
            AblationRow("sgm_config", "EQUISeg + SGM (λ=60), the config's convention", None),
            AblationRow("sgm_spec", "SGM, the literal reading (spec)", "sgm_convention_spec.yaml"),
            AblationRow(
                "sgm_reference", "SGM, RobustSeg's arithmetic (reference)", "sgm_convention_reference.yaml"
            ),
            AblationRow("separate_encoders", "one encoder per modality", "separate_encoders.yaml"),
        ),
    ),
    # Not a table of the paper: training on random modality subsets (train.modality_dropout, as the
    # robust peers do), zero-filled as the benchmark's missing modalities, against the full model as is.
    "modality_dropout": (
        "Modality dropout in training (not in the paper)",
        (
            AblationRow("no_dropout", "EQUISeg + SGM (λ=60), every modality in every step", None),
            AblationRow(
                "subset", "random non-empty subset per sample (size uniform)", "modality_dropout_subset.yaml"
            ),
            AblationRow(
                "independent",
                "each modality dropped with p = 0.5 (never all)",
                "modality_dropout_independent.yaml",
            ),
        ),
    ),
    # Not a table of the paper: the three readings of "stage feature" the SGM's prototypes can be
    # taken from (ModelConfig.sgm_features); each is reported, since the paper does not say which it means.
    "sgm_features": (
        "SGM prototypes from which feature (not in the paper)",
        (
            AblationRow("sgm_post_ln", "SGM on the post-LN stage output (default)", None),
            AblationRow(
                "sgm_pre_ln", "SGM on f' + f_c before the stage LayerNorm", "sgm_features_pre_ln.yaml"
            ),
            AblationRow("sgm_pre_cmtb", "SGM on f' before the CMTB", "sgm_features_pre_cmtb.yaml"),
        ),
    ),
}


def ablation_dir() -> Path:
    """The packaged ablation override files (``equiseg/configs/ablations``)."""
    return Path(str(resources.files("equiseg") / "configs" / "ablations"))


def table_rows(table: str, rows: Sequence[str] | None = None) -> tuple[AblationRow, ...]:
    """The rows of ``table`` (a key of :data:`TABLES`), optionally only those with the given ids (in
    table order)."""
    if table not in TABLES:
        raise ValueError(f"unknown ablation table {table!r}; choose from {', '.join(TABLES)}")
    all_rows = TABLES[table][1]
    if rows is None:
        return all_rows
    chosen = check_names(rows, [r.id for r in all_rows], what=f"{table} row", where="--only")
    return tuple(r for r in all_rows if r.id in chosen)


def _row_sections(row: AblationRow) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``model`` and ``train`` sections of the row's override file (either may be empty, not both)."""
    if row.override is None:
        return {}, {}
    path = ablation_dir() / row.override
    data = load_yaml(path)
    model, train = data.get("model") or {}, data.get("train") or {}
    if not isinstance(model, dict) or not isinstance(train, dict) or not (model or train):
        raise ValueError(f"{path}: expected a non-empty 'model' or 'train' section")
    return dict(model), dict(train)


def row_model_overrides(row: AblationRow) -> dict[str, Any]:
    """The row's changes to the full model: the ``model`` section of its override file."""
    return _row_sections(row)[0]


def row_train_overrides(row: AblationRow) -> dict[str, Any]:
    """The row's changes to the training recipe (e.g. ``modality_dropout``): the ``train`` section."""
    return _row_sections(row)[1]


def _merged(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``top``'s keys on top, nested mappings merged key by key."""
    out = dict(base)
    for k, v in top.items():
        out[k] = _merged(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def row_config(base: ExperimentConfig, row: AblationRow, work_dir: str | Path) -> ExperimentConfig:
    """``base`` with the full model's switches, then the row's override, training into ``work_dir``."""
    data = base.to_dict()
    data["model"] = {**data["model"], **FULL_MODEL, **row_model_overrides(row)}
    data["train"] = _merged(data["train"], row_train_overrides(row))
    data["work_dir"] = str(work_dir)
    return load_experiment(data)


def paper_rows(table: str, ids: Sequence[str]) -> list[dict[str, Any]]:
    """The paper's numbers of the rows ``ids``, with its deltas against its own first row."""
    ref = TABLES[table][1][0]
    out = []
    for row in TABLES[table][1]:
        if row.id not in ids or not row.paper:
            continue
        r: dict[str, Any] = {
            "label": row.label,
            "reference": row.id == ref.id,
            "similarity": row.paper.get("similarity", {}),
        }
        for key in ("mIoU", "emm_avg"):
            v, v0 = row.paper.get(key), ref.paper.get(key)
            r[key] = v
            r[f"delta_{key}"] = None if v is None or v0 is None else v - v0
        out.append(r)
    return out
