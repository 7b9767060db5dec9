"""``compare``'s protocol: how each compared model's run is configured from the shared experiment, its
quick schedule, and the columns of the paper's Tab. 1. ``equiseg compare`` is
:func:`equiseg.tasks.compare.run_compare`.
"""

from __future__ import annotations

from pathlib import Path

from equiseg.config import ExperimentConfig, load_experiment

from .schedules import Schedule, short_schedule

__all__ = [
    "ARCH_FIELD_PREFIXES",
    "COLUMNS",
    "COSTS",
    "QUICK_ITERS",
    "QUICK_MAX_SAMPLES",
    "QUICK_OVERRIDES",
    "QUICK_SCHEDULE",
    "SHARED_MODEL_KEYS",
    "model_run_config",
]

# Keys of the config's model section that apply to every compared model (the rest is EQUISeg's own).
SHARED_MODEL_KEYS = frozenset(
    {
        "embed_dims",
        "depths",
        "num_heads",
        "sr_ratios",
        "mlp_ratio",
        "qkv_bias",
        "drop_rate",
        "attn_drop_rate",
        "drop_path_rate",
        "ln_eps",
        "decoder_dim",
        "head_dropout",
        "pretrained",
        "pretrained_strict",
    }
)
# A peer's own fields in the config's model section (e.g. `--set model.stitch_fusion=sum`) apply to it.
ARCH_FIELD_PREFIXES = {"stitchfusion": "stitch_", "magic": "magic_", "magicpp": "magic_"}
# --quick: the demo setting on a CPU (one short schedule per model, a val subset)
QUICK_ITERS = 60
QUICK_MAX_SAMPLES = 12
QUICK_OVERRIDES: tuple[str, ...] = short_schedule(QUICK_ITERS)
QUICK_SCHEDULE = Schedule("quick", QUICK_OVERRIDES, QUICK_MAX_SAMPLES)
# The Tab. 1 columns: (key in the robustness summary, header)
COLUMNS: tuple[tuple[str, str], ...] = (
    ("clean", "mIoU"),
    ("emm_avg", "EMM Avg"),
    ("emm_p0.1", "EMM p=0.1"),
    ("rmm_avg[0.5]", "RMM Avg"),
    ("rmm_p0.1[0.5]", "RMM p=0.1"),
    ("nm_low", "NM low"),
    ("nm_mid", "NM mid"),
    ("mean", "Mean"),
)
COSTS: tuple[tuple[str, str], ...] = (
    ("params_m", "#Params (M)"),
    ("gflops", "GFLOPs"),
    ("img_per_s", "img/s"),
)


def model_run_config(base: ExperimentConfig, name: str, seed: int | None, work_dir: Path) -> ExperimentConfig:
    """``base`` for model ``name`` and ``seed`` (see the module docstring for which model keys carry over)."""
    from equiseg.models import model_config

    arch = model_config(name).arch  # validates the name
    data = base.to_dict()
    own = {k: v for k, v in data["model"].items() if k != "name"}
    prefix = ARCH_FIELD_PREFIXES.get(arch)
    keep = (
        own
        if arch == "equiseg"
        else {k: v for k, v in own.items() if k in SHARED_MODEL_KEYS or (prefix and k.startswith(prefix))}
    )
    data["model"] = {"name": name, **keep}
    if arch == "cmx":
        if len(data["data"]["modalities"]) < 2:
            raise ValueError(
                f"{name}: CMX needs two modalities, data.modalities has {data['data']['modalities']}"
            )
        data["data"]["modalities"] = list(data["data"]["modalities"][:2])
        kept = data["data"]["modalities"]
        data["data"]["channels"] = {m: c for m, c in data["data"]["channels"].items() if m in kept}
    if seed is not None:
        data["train"]["seed"] = int(seed)
    data["work_dir"] = str(work_dir)
    return load_experiment(data)
