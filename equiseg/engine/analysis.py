"""Modality-contribution analysis (paper Tab. 3, SPEC §1.6): how close is each modality's feature to
the fused feature the head decodes?

Definition used for the headline numbers (``similarity``). For every sample ``b``, stage ``s`` and
present modality ``m``, take the stage output ``f_m`` (``C×h×w``, after the CMTB and the stage
LayerNorm: exactly what :meth:`~equiseg.models.EQUISeg.encode` returns) and the fused feature
``F = mean_m f_m`` (the modality mean the head consumes, SPEC §1.4), flatten both to vectors of
``C·h·w`` values and take their cosine similarity; report the mean over the samples of the split, in %.
The paper's Tab. 3 reports the last stage. Why this reading: the paper speaks of "the cosine similarity
between each modality feature and the fused feature" -- one number per feature map -- and SPEC §1.6 of
an average over the data set, i.e. a per-sample value averaged over samples. It treats a feature map as
one vector, so pixels where the features are large weigh more.

A second, per-pixel reading is reported beside it (``pixel_similarity``): the cosine over the ``C``
channels at every pixel, averaged over the ``h·w`` pixels of a sample, then over the samples. The two
agree when feature norms are uniform over the image and differ where a modality's features are large
only in some regions. Both are computed in the same pass, vectorised over modalities and pixels.

Values lie in [-100, 100]; a modality identical to the fused feature (``N = 1``, or identical features
in every branch) scores 100. The sample standard deviation of the per-sample values is reported too.
The features are not centred: a component all branches share (with ``share_encoder``, the stage
LayerNorm's bias) counts as agreement.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from equiseg.utils import to_jsonable

NUM_STAGES = 4
DEFINITION = (
    "per-sample cosine similarity (in %) between a modality's stage feature and the fused feature "
    "(mean over modalities), each flattened over C×h×w, averaged over the samples"
)
PIXEL_DEFINITION = (
    "per-pixel cosine similarity (in %) over the C channels between a modality's stage feature and the "
    "fused feature, averaged over the pixels of a sample, then over the samples"
)
# Display names of the paper's modalities; others are shown as they are named.
DISPLAY_NAMES = {
    "rgb": "RGB",
    "depth": "Depth",
    "event": "Event",
    "lidar": "Lidar",
    "frame_camera": "Camera",
    "event_camera": "Event",
    "radar": "Radar",
}


def display_name(modality: str) -> str:
    """``"rgb" -> "RGB"``, ``"lidar" -> "Lidar"`` (the paper's spelling); unknown names unchanged."""
    return DISPLAY_NAMES.get(modality, modality)


def stage_similarities(feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarity of each modality's feature with the modality mean, both definitions.

    Args:
        feature: One stage's features ``P×B×C×h×w`` (``P`` present modalities).

    Returns:
        ``(sample, pixel)``, each ``P×B`` in [-1, 1]: the cosine of the flattened ``C·h·w`` vectors, and
        the per-pixel cosine over channels averaged over the ``h·w`` pixels.
    """
    if feature.ndim != 5:
        raise ValueError(f"expected stage features P×B×C×h×w, got shape {tuple(feature.shape)}")
    f = feature.float()
    fused = f.mean(dim=0, keepdim=True)  # 1×B×C×h×w, the head's input
    sample = F.cosine_similarity(f.flatten(2), fused.flatten(2), dim=-1)  # P×B over C·h·w
    pixel = F.cosine_similarity(f.flatten(3), fused.flatten(3), dim=2).mean(-1)  # P×B×(h·w) -> P×B
    return sample, pixel


def _device_of(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    return torch.device("cpu")


def _iter_samples(dataset: Any, max_samples: int | None) -> tuple[Iterable[Any], int | None]:
    try:
        n = len(dataset)
    except TypeError:
        n = None
    if max_samples is not None:
        if max_samples < 1:
            raise ValueError(f"max_samples must be >= 1, got {max_samples}")
        n = max_samples if n is None else min(n, max_samples)
    if hasattr(dataset, "__getitem__") and n is not None:
        return (dataset[i] for i in range(n)), n
    it = iter(dataset)
    return (item for _, item in zip(range(n), it, strict=False)) if n is not None else it, n


@torch.inference_mode()
def modality_contributions(
    model: nn.Module,
    dataset: Any,
    *,
    device: torch.device | str | None = "cpu",
    progress: bool = True,
    max_samples: int | None = None,
    modality_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Per-modality cosine similarity with the fused feature, per stage and for the last stage.

    See the module docstring for the exact definitions. The model is run in eval mode (restored
    afterwards) through its ``encode`` method, one sample at a time.

    Args:
        model: An :class:`~equiseg.models.EQUISeg` (anything with ``encode(inputs)`` returning per stage
            ``P×B×C×h×w`` features of the present modalities).
        dataset: Yields ``(inputs, label)`` transformed for evaluation: ``inputs`` a list of ``N`` float
            tensors ``3×H×W`` (or ``B×3×H×W``); the label is not used. A map-style data set, a
            ``DataLoader`` or any iterable.
        device: Where the forward passes run; ``None``: the model's device. The model is moved there.
        progress: Show a progress bar.
        max_samples: Use only the first ``max_samples`` samples.
        modality_names: Names of the ``N`` inputs; default ``model.modalities``, else ``m0 …``.

    Returns:
        ``{"definition", "pixel_definition", "modalities", "num_samples", "num_stages",
        "similarity": {"last_stage": {mod: %}, "per_stage": {"stage1": {mod: %}, …},
        "last_stage_std": {mod: %}}, "pixel_similarity": {same keys}}`` -- ``similarity.last_stage`` is
        the paper's Tab. 3 quantity.
    """
    if not callable(getattr(model, "encode", None)):
        raise TypeError(f"{type(model).__name__} has no encode(inputs) method returning per-stage features")
    device = _device_of(model) if device is None else torch.device(device)
    was_training = model.training
    model.to(device).eval()
    samples, total = _iter_samples(dataset, max_samples)
    sums = sq_sums = None  # 2 definitions × stages × P, float64
    count = 0
    try:
        for inputs, _label in tqdm(samples, total=total, desc="analysis", disable=not progress, leave=False):
            xs = [x if x.ndim == 4 else x.unsqueeze(0) for x in inputs]  # 3×H×W -> 1×3×H×W
            feats = model.encode([x.to(device, non_blocking=True) for x in xs])
            if len(feats) != NUM_STAGES or feats[0].shape[0] != len(xs):
                raise ValueError(
                    f"encode returned {len(feats)} stages with {feats[0].shape[0]} modalities; expected "
                    f"{NUM_STAGES} stages of all {len(xs)} inputs (pass every modality, none missing)"
                )
            per_stage = [torch.stack(stage_similarities(f)) for f in feats]  # each 2×P×B
            vals = torch.stack(per_stage, dim=1).double()  # 2×S×P×B
            if sums is None:
                sums = torch.zeros(vals.shape[:3], dtype=torch.float64, device=vals.device)
                sq_sums = torch.zeros_like(sums)
            sums += vals.sum(-1)
            sq_sums += (vals * vals).sum(-1)
            count += vals.shape[-1]
    finally:
        model.train(was_training)
    if count == 0 or sums is None:
        raise ValueError("modality_contributions: the data set yielded no samples")

    n_mod = sums.shape[2]
    names = _names(modality_names, model, n_mod)
    mean = (sums / count * 100.0).cpu()
    var = (sq_sums.cpu() * 1e4 / count - mean**2).clamp_min(0.0)
    std = (var * count / (count - 1)).sqrt() if count > 1 else torch.zeros_like(var)

    def section(k: int) -> dict[str, Any]:
        row = lambda t: {m: float(v) for m, v in zip(names, t.tolist(), strict=True)}  # noqa: E731
        return {
            "last_stage": row(mean[k, -1]),
            "per_stage": {f"stage{s + 1}": row(mean[k, s]) for s in range(mean.shape[1])},
            "last_stage_std": row(std[k, -1]),
        }

    return {
        "definition": DEFINITION,
        "pixel_definition": PIXEL_DEFINITION,
        "modalities": names,
        "num_samples": count,
        "num_stages": int(mean.shape[1]),
        "similarity": section(0),
        "pixel_similarity": section(1),
    }


def _names(explicit: Sequence[str] | None, model: Any, n: int) -> list[str]:
    if explicit is not None:
        if len(explicit) != n:
            raise ValueError(f"got {len(explicit)} modality names for {n} modalities: {list(explicit)}")
        return [str(m) for m in explicit]
    found = getattr(model, "modalities", None)
    if isinstance(found, (list, tuple)) and len(found) == n:
        return [str(m) for m in found]
    return [f"m{i}" for i in range(n)]


# ---------------------------------------------------------------------------------------------------
# reports


def _fmt(v: float | None) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def similarity_table(
    section: Mapping[str, Any], modalities: Sequence[str], last_label: str = "Last stage (Tab. 3)"
) -> str:
    """Markdown table: one row per stage, a bold last-stage row (the paper's Tab. 3), modality columns."""
    lines = [
        "| Stage | " + " | ".join(display_name(m) for m in modalities) + " |",
        "|---|" + "---:|" * len(modalities),
    ]
    for stage, row in section["per_stage"].items():
        lines.append(
            f"| {stage.replace('stage', 'Stage ')} | " + " | ".join(_fmt(row[m]) for m in modalities) + " |"
        )
    last, sd = section["last_stage"], section["last_stage_std"]
    lines.append(f"| **{last_label}** | " + " | ".join(f"**{_fmt(last[m])}**" for m in modalities) + " |")
    lines.append("| ± std over samples | " + " | ".join(_fmt(sd[m]) for m in modalities) + " |")
    return "\n".join(lines)


def analysis_markdown(result: Mapping[str, Any], title: str = "Modality-contribution analysis") -> str:
    """The analysis as Markdown: the headline table and the per-pixel variant."""
    mods = result["modalities"]
    return "\n".join(
        [
            f"# {title}",
            "",
            f"Cosine similarity between each modality's feature and the fused feature, in % "
            f"({result['num_samples']} samples). Definition: {result['definition']}. "
            "The paper's Tab. 3 uses the last stage; higher = the modality contributes more to the fused "
            "feature.",
            "",
            similarity_table(result["similarity"], mods),
            "",
            f"Per-pixel variant ({result['pixel_definition']}):",
            "",
            similarity_table(result["pixel_similarity"], mods, last_label="Last stage"),
            "",
        ]
    )


def analysis_chart(result: Mapping[str, Any], path: str | Path) -> Path:
    """Bar chart PNG: one group per modality, one bar per stage (the last one is Tab. 3's number)."""
    from equiseg.viz import bar_chart

    mods = result["modalities"]
    per_stage = result["similarity"]["per_stage"]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return bar_chart(
        [display_name(m) for m in mods],
        {
            stage.replace("stage", "stage ") + (" (Tab. 3)" if i == len(per_stage) - 1 else ""): [
                row[m] for m in mods
            ]
            for i, (stage, row) in enumerate(per_stage.items())
        },
        path,
        title="cosine similarity with the fused feature (%), per stage; negative values drawn as 0",
        ylabel="%",
        ymax=100.0,
    )


def write_analysis(
    result: Mapping[str, Any], out_dir: str | Path, title: str = "Modality-contribution analysis"
) -> dict[str, Path]:
    """Write ``analysis.json``, ``analysis.md`` and the bar chart ``analysis.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "analysis.json", "markdown": out / "analysis.md", "chart": out / "analysis.png"}
    paths["json"].write_text(json.dumps(to_jsonable(result), indent=2, allow_nan=False) + "\n")
    chart = analysis_chart(result, paths["chart"])
    md = analysis_markdown(result, title) + f"\n![similarity per stage]({chart.name})\n"
    paths["markdown"].write_text(md)
    return paths


def analysis_section(result: Mapping[str, Any], out_dir: str | Path, *, heading: str = "##") -> str:
    """A report section (Markdown) for the demo: the Tab. 3-style table and a bar chart.

    Args:
        result: What :func:`modality_contributions` returned.
        out_dir: Directory of the report that embeds the section; the chart is written to
            ``out_dir/figures/modality_similarity.png`` and linked relative to ``out_dir``.
        heading: Markdown heading level of the section.

    Returns:
        The section's Markdown, ending with a newline.
    """
    out = Path(out_dir)
    chart = analysis_chart(result, out / "figures" / "modality_similarity.png")
    mods = result["modalities"]
    last = result["similarity"]["last_stage"]
    weakest = min(mods, key=lambda m: last[m])
    return "\n".join(
        [
            f"{heading} Modality contributions (paper Tab. 3)",
            "",
            f"Cosine similarity between each modality's feature and the fused (modality-mean) feature, in %, "
            f"over {result['num_samples']} val samples ({result['definition']}). The paper's Tab. 3 reports "
            "the last stage; the SGM is meant to raise the weak modalities. Here the lowest is "
            f"{display_name(weakest)} ({_fmt(last[weakest])} %).",
            "",
            similarity_table(result["similarity"], mods),
            "",
            f"![modality similarity per stage]({chart.relative_to(out).as_posix()})",
            "",
        ]
    )


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
        :func:`modality_contributions`' dict plus ``split`` and ``checkpoint``.
    """
    from .eval_setup import load_eval_setup

    setup = load_eval_setup(config, checkpoint, overrides, split=split)
    result = modality_contributions(
        setup.model, setup.dataset, device=setup.device, progress=progress, max_samples=max_samples
    )
    result["split"] = setup.split
    result["checkpoint"] = str(checkpoint)
    if out_dir is not None:
        write_analysis(result, out_dir, title=f"Modality contributions: {setup.name} on {setup.split}")
    return result
