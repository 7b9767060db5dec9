"""Modality-contribution analysis (paper Tab. 3, docs/design.md §7): how close is each modality's
feature to the fused feature, under every named definition side by side, with each modality's feature
norm.

Why several definitions. The paper's Tab. 3 reports "the cosine similarity between each modality
feature and the fused feature" without saying which feature. Its numbers cannot come from equal-norm
features (post-LayerNorm features against the mean of all four would force event's and LiDAR's
pairwise cosines to sum to about -0.8; docs/design.md §7); they fit un-normalised features whose weak
modalities have much smaller norms. So every reading is measured in the same pass and reported beside the others,
named ``"<feature>/<fused>/<reduction>"``:

- feature, per stage ``s`` and present modality ``m`` (``C×h×w`` maps, see
  :meth:`~equiseg.models.EQUISeg.encode` with ``return_intermediates=True``):
  ``post_ln`` -- the stage output after the CMTB and the stage LayerNorm (what ``encode`` returns);
  ``pre_ln`` -- the CMTB output before the stage LayerNorm, the residual stream ``f' + f_c``;
  ``pre_cmtb`` -- ``f'``, the tokens after the stage's MiT blocks, before the CMTB (without a CMTB,
  N = 1, it equals ``pre_ln``).
- fused: ``mean`` -- the mean over all present modalities of the same feature (for ``post_ln`` exactly
  the head's input, docs/design.md §1.6); ``others`` -- the mean over the other present modalities
  (leave-one-out; a modality is not compared with a mean that contains itself; needs two modalities).
- reduction: ``sample`` -- flatten the modality's and the fused map to ``C·h·w`` vectors, take their
  cosine per sample, average over the samples of the split (one number per feature map, so pixels where
  the features are large weigh more); ``pixel`` -- the cosine over the ``C`` channels at every pixel,
  averaged over the ``h·w`` pixels of a sample, then over the samples (the two agree when feature norms
  are uniform over the image).

Headline (``similarity``, ``pixel_similarity``; what ``equiseg analyze``, ``ablate``, ``compare`` and
the demo report quote): ``post_ln/mean/sample`` and its per-pixel twin -- see :data:`HEADLINE_WHY`.

Norms (``norms``): each modality's per-sample RMS norm -- the L2 norm of the flattened ``C·h·w`` map
divided by ``sqrt(C·h·w)``, i.e. the root mean square of its entries, so stages of different sizes are
comparable (post-LN features with the initial LayerNorm have RMS ≈ 1 at every pixel) -- averaged over
the samples, per feature kind and stage; ``cross`` is the norm of the CMTB's term ``f_c`` itself.
``cross_ratio`` is the per-sample ratio ``RMS(f_c) / RMS(f')`` averaged over the samples: how much the
CMTB adds to a modality's own stream.

Models without intermediates (the peers: CMNeXt, StitchFusion, MAGIC, CMX have only their per-stage
``encode`` features, ``model.has_modality_features``) get the ``post_ln`` rows only, measured on their
``encode`` output, and ``intermediates: False``; their ``cross_ratio`` is None. The SegFormer baseline
is EQUISeg without a CMTB: all three feature kinds (``pre_cmtb`` = ``pre_ln``), no ``f_c``.

Cosines are in %, in [-100, 100]; a modality identical to the fused feature (``N = 1`` with ``mean``,
or identical features in every branch) scores 100. The sample standard deviation of the per-sample
values is reported too. The features are not centred: a component all branches share (with
``share_encoder``, the stage LayerNorm's bias) counts as agreement. Everything is vectorised over
modalities and pixels and accumulated in one pass over the data set.

Precision: ``precision="bf16"`` runs the forward (``encode``) under bf16 autocast; the features are cast
to fp32 before any similarity or norm is taken, and the sums over samples are float64, so only the
network's arithmetic changes. ``equiseg analyze`` uses ``eval.precision`` (default ``auto``, see
:mod:`equiseg.engine.precision`); the result records ``precision``.
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

from equiseg.engine.inference import WHOLE_IMAGE, describe_inference
from equiseg.engine.precision import describe_precision, inference_autocast, resolve_precision
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
FEATURE_KINDS = ("post_ln", "pre_ln", "pre_cmtb")
FEATURES = {
    "post_ln": "the stage output after the CMTB and the stage LayerNorm (what encode returns)",
    "pre_ln": "the CMTB output before the stage LayerNorm, f' + f_c (f_c alone with residual=False)",
    "pre_cmtb": "f', the tokens after the stage's MiT blocks, before the CMTB",
}
PEER_FEATURE = "the model's per-modality stage features (its encode output; no intermediates exposed)"
FUSED = {
    "mean": "the mean of all present modalities (for post_ln: the head's input)",
    "others": "the mean of the other present modalities (leave-one-out)",
}
REDUCTIONS = {
    "sample": "cosine of the C×h×w maps flattened, per sample, averaged over the samples",
    "pixel": "cosine over the C channels per pixel, averaged over the pixels, then over the samples",
}
HEADLINE = "post_ln/mean/sample"
HEADLINE_PIXEL = "post_ln/mean/pixel"
HEADLINE_WHY = (
    "The paper's Tab. 3 compares 'each modality feature' with 'the fused feature'; in EQUISeg the fused "
    "feature is what the head decodes, the modality mean of the stage outputs (docs/design.md §1.6), so "
    "the headline compares each modality's stage output (post-LN, what encode returns) with that mean, "
    "one cosine per feature map averaged over the samples. The paper's numbers cannot come from "
    "equal-norm post-LN features (docs/design.md §7), so the pre-LN stream f' + f_c, f' before the CMTB, the "
    "leave-one-out fused feature and the feature norms are reported beside it."
)
NORM_DEFINITION = (
    "RMS norm: the L2 norm of a sample's flattened C×h×w map divided by sqrt(C·h·w) (the root mean "
    "square of its entries), averaged over the samples"
)
CROSS_RATIO_DEFINITION = (
    "RMS(f_c) / RMS(f') per sample, averaged over the samples: f_c is the CMTB's term (cross-attention "
    "output; f_aux without cross-attention; the whole CMTB output with residual=False), f' the tokens "
    "before the CMTB"
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


def _check_stage(feature: torch.Tensor) -> None:
    if feature.ndim != 5:
        raise ValueError(f"expected stage features P×B×C×h×w, got shape {tuple(feature.shape)}")


def fused_feature(feature: torch.Tensor, fused: str = "mean") -> torch.Tensor:
    """The feature each modality is compared with: ``1×B×C×h×w`` for ``"mean"`` (all present modalities,
    broadcast over ``P``), ``P×B×C×h×w`` for ``"others"`` (row ``m``: the mean of every modality but
    ``m``, computed from one sum as ``(Σ - f_m) / (P - 1)``)."""
    _check_stage(feature)
    if fused == "mean":
        return feature.mean(dim=0, keepdim=True)
    if fused == "others":
        P = feature.shape[0]
        if P < 2:
            raise ValueError("fused='others' needs at least two present modalities")
        return (feature.sum(dim=0, keepdim=True) - feature) / (P - 1)
    raise ValueError(f"fused must be one of {list(FUSED)}, got {fused!r}")


def stage_similarities(feature: torch.Tensor, fused: str = "mean") -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarity of each modality's feature with the fused feature, both reductions.

    Args:
        feature: One stage's features ``P×B×C×h×w`` (``P`` present modalities).
        fused: ``"mean"`` (the modality mean, the head's input for post-LN features) or ``"others"``
            (the mean of the other modalities), see :func:`fused_feature`.

    Returns:
        ``(sample, pixel)``, each ``P×B`` in [-1, 1]: the cosine of the flattened ``C·h·w`` vectors, and
        the per-pixel cosine over channels averaged over the ``h·w`` pixels.
    """
    f = feature.float()
    ref = fused_feature(f, fused).expand_as(f)  # P×B×C×h×w
    sample = F.cosine_similarity(f.flatten(2), ref.flatten(2), dim=-1)  # P×B over C·h·w
    pixel = F.cosine_similarity(f.flatten(3), ref.flatten(3), dim=2).mean(-1)  # P×B×(h·w) -> P×B
    return sample, pixel


def rms_norms(feature: torch.Tensor) -> torch.Tensor:
    """Per-sample RMS norm ``‖f‖₂ / sqrt(C·h·w)`` of each modality's map: ``P×B×C×h×w`` -> ``P×B``."""
    _check_stage(feature)
    f = feature.float().flatten(2)  # P×B×(C·h·w)
    return f.norm(dim=-1) / math.sqrt(f.shape[-1])


def definition_values(
    features: Mapping[str, Sequence[torch.Tensor | None]],
) -> dict[str, torch.Tensor]:
    """Every per-sample quantity of one batch, each ``S×P×B`` (stages × modalities × samples).

    Args:
        features: Per feature kind (``post_ln``, and where available ``pre_ln``, ``pre_cmtb``) a list of
            ``S`` stage tensors ``P×B×C_s×h_s×w_s``; optionally ``cross`` (``f_c``, entries None where no
            CMTB ran), used together with ``pre_cmtb``.

    Returns:
        Keys ``"<kind>/<fused>/<reduction>"`` (cosines in [-1, 1]; ``others`` only when ``P >= 2``),
        ``"norm/<kind>"`` (RMS norms, also ``"norm/cross"``) and ``"cross_ratio"`` (RMS(f_c) / RMS(f'))
        where ``f_c`` is given for every stage.
    """
    out: dict[str, torch.Tensor] = {}
    P = features["post_ln"][0].shape[0]
    for kind in FEATURE_KINDS:
        stages = features.get(kind)
        if stages is None:
            continue
        for fused in ("mean", "others") if P > 1 else ("mean",):
            vals = torch.stack([torch.stack(stage_similarities(f, fused)) for f in stages], dim=1)  # 2×S×P×B
            out[f"{kind}/{fused}/sample"], out[f"{kind}/{fused}/pixel"] = vals[0], vals[1]
        out[f"norm/{kind}"] = torch.stack([rms_norms(f) for f in stages])  # S×P×B
    cross = features.get("cross")
    if cross is not None and all(c is not None for c in cross) and "pre_cmtb" in features:
        out["norm/cross"] = torch.stack([rms_norms(c) for c in cross])  # S×P×B
        out["cross_ratio"] = out["norm/cross"] / out["norm/pre_cmtb"].clamp_min(1e-12)
    return out


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


def _stage_features(model: nn.Module, xs: list[torch.Tensor], intermediates: bool) -> dict[str, list]:
    """One forward pass: ``{"post_ln": [...]}`` or, with intermediates, every kind and ``cross``."""
    if intermediates:
        feats = dict(model.encode(xs, return_intermediates=True))
    else:
        feats = {"post_ln": list(model.encode(xs))}
    post = feats["post_ln"]
    if len(post) != NUM_STAGES or post[0].shape[0] != len(xs):
        raise ValueError(
            f"encode returned {len(post)} stages with {post[0].shape[0]} modalities; expected "
            f"{NUM_STAGES} stages of all {len(xs)} inputs (pass every modality, none missing)"
        )
    return feats


@torch.inference_mode()
def modality_contributions(
    model: nn.Module,
    dataset: Any,
    *,
    device: torch.device | str | None = "cpu",
    progress: bool = True,
    max_samples: int | None = None,
    modality_names: Sequence[str] | None = None,
    precision: str = "fp32",
) -> dict[str, Any]:
    """Per-modality similarity with the fused feature under every definition, feature norms and
    ``|f_c| / |f'|``, per stage and for the last stage.

    See the module docstring for the exact definitions. The model is run in eval mode (restored
    afterwards), one sample at a time, one forward pass per sample: ``encode(inputs,
    return_intermediates=True)`` where ``model.has_intermediate_features`` (EQUISeg, SegFormer), else
    ``encode(inputs)`` (post-stage features only).

    Args:
        model: Anything with ``encode(inputs)`` returning per stage ``P×B×C×h×w`` features of the
            present modalities (:class:`~equiseg.models.EQUISeg`, the peers with
            ``has_modality_features``).
        dataset: Yields ``(inputs, label)`` transformed for evaluation: ``inputs`` a list of ``N`` float
            tensors ``C_i×H×W`` (or ``B×C_i×H×W``); the label is not used. A map-style data set, a
            ``DataLoader`` or any iterable.
        device: Where the forward passes run; ``None``: the model's device. The model is moved there.
        progress: Show a progress bar.
        max_samples: Use only the first ``max_samples`` samples.
        modality_names: Names of the ``N`` inputs; default ``model.modalities``, else ``m0 …``.
        precision: ``"fp32"`` (default), ``"bf16"`` (the forward under bf16 autocast; the statistics
            stay fp32) or ``"auto"`` (bf16 where it is fast, :func:`~equiseg.engine.precision.resolve_precision`).

    Returns:
        A dict; each *section* is ``{"last_stage": {mod: v}, "per_stage": {"stage1": {mod: v}, …},
        "last_stage_std": {mod: v}}`` (std over samples, ddof 1).

        - ``definition``, ``pixel_definition``, ``modalities``, ``num_samples``, ``num_stages``;
        - ``similarity`` / ``pixel_similarity``: the headline sections (= ``definitions[HEADLINE]`` /
          ``definitions[HEADLINE_PIXEL]``, in %); ``similarity.last_stage`` is the Tab. 3 quantity;
        - ``headline``: ``{"definition", "pixel_definition", "why"}`` naming them;
        - ``intermediates``: whether pre-LN / pre-CMTB features were available (False for the peers);
        - ``features``: ``{kind: description}`` of the feature kinds measured; ``fused``, ``reductions``:
          the descriptions of the fused variants and reductions;
        - ``definitions``: ``{"<kind>/<fused>/<reduction>": section in %}``, every definition measured;
        - ``norms``: ``{kind: section}`` of RMS norms (also ``cross``: ``f_c``), ``norm_definition``;
        - ``cross_ratio``: section of RMS(f_c) / RMS(f') (None where no CMTB ran or no intermediates),
          ``cross_ratio_definition``;
        - ``inference``: always one whole-image forward at scale 1 (the features of the input as it
          is; ``eval.mode`` and test-time augmentation do not apply);
        - ``precision`` (``"fp32"`` / ``"bf16"``, what ran) and ``precision_note`` (why).
    """
    if not callable(getattr(model, "encode", None)):
        raise TypeError(f"{type(model).__name__} has no encode(inputs) method returning per-stage features")
    intermediates = bool(getattr(model, "has_intermediate_features", False))
    device = _device_of(model) if device is None else torch.device(device)
    requested = precision
    model.to(device)
    # auto: bf16 only where this model's forward on a sample of the data gains from it
    precision = resolve_precision(precision, device, key="precision", model=model, data=dataset)
    was_training = model.training
    model.eval()
    samples, total = _iter_samples(dataset, max_samples)
    sums: dict[str, torch.Tensor] = {}  # key -> S×P, float64
    sq_sums: dict[str, torch.Tensor] = {}
    count = 0
    try:
        for inputs, _label in tqdm(samples, total=total, desc="analysis", disable=not progress, leave=False):
            xs = [x if x.ndim == 4 else x.unsqueeze(0) for x in inputs]  # C×H×W -> 1×C×H×W
            with inference_autocast(precision, device):
                feats = _stage_features(model, [x.to(device, non_blocking=True) for x in xs], intermediates)
            feats = {
                k: v if v is None else [f if f is None else f.float() for f in v] for k, v in feats.items()
            }
            values = definition_values(feats)  # key -> S×P×B, computed in fp32 outside autocast
            if sums and set(values) != set(sums):
                raise ValueError("the measured quantities changed between samples (modalities present?)")
            for key, v in values.items():
                v = v.double()
                if key not in sums:
                    sums[key] = torch.zeros(v.shape[:2], dtype=torch.float64, device=v.device)
                    sq_sums[key] = torch.zeros_like(sums[key])
                sums[key] += v.sum(-1)
                sq_sums[key] += (v * v).sum(-1)
            count += values[HEADLINE].shape[-1]
    finally:
        model.train(was_training)
    if count == 0 or not sums:
        raise ValueError("modality_contributions: the data set yielded no samples")

    n_mod = sums[HEADLINE].shape[1]
    names = _names(modality_names, model, n_mod)

    def section(key: str, scale: float) -> dict[str, Any]:
        mean = sums[key].cpu() / count
        var = (sq_sums[key].cpu() / count - mean**2).clamp_min(0.0)
        std = (var * count / (count - 1)).sqrt() if count > 1 else torch.zeros_like(var)
        mean, std = mean * scale, std * scale
        row = lambda t: {m: float(v) for m, v in zip(names, t.tolist(), strict=True)}  # noqa: E731
        return {
            "last_stage": row(mean[-1]),
            "per_stage": {f"stage{s + 1}": row(mean[s]) for s in range(mean.shape[0])},
            "last_stage_std": row(std[-1]),
        }

    definitions = {k: section(k, 100.0) for k in sums if k.count("/") == 2}
    kinds = [k for k in FEATURE_KINDS if f"norm/{k}" in sums]
    return {
        "definition": DEFINITION,
        "pixel_definition": PIXEL_DEFINITION,
        "modalities": names,
        "num_samples": count,
        "num_stages": int(sums[HEADLINE].shape[0]),
        "similarity": definitions[HEADLINE],
        "pixel_similarity": definitions[HEADLINE_PIXEL],
        "headline": {"definition": HEADLINE, "pixel_definition": HEADLINE_PIXEL, "why": HEADLINE_WHY},
        "intermediates": intermediates,
        "features": {k: FEATURES[k] if intermediates else PEER_FEATURE for k in kinds},
        "fused": {k: v for k, v in FUSED.items() if any(d.split("/")[1] == k for d in definitions)},
        "reductions": dict(REDUCTIONS),
        "definitions": definitions,
        "norms": {k: section(f"norm/{k}", 1.0) for k in [*kinds, "cross"] if f"norm/{k}" in sums},
        "norm_definition": NORM_DEFINITION,
        "cross_ratio": section("cross_ratio", 1.0) if "cross_ratio" in sums else None,
        "cross_ratio_definition": CROSS_RATIO_DEFINITION,
        "inference": dict(WHOLE_IMAGE),
        "precision": precision,
        "precision_note": describe_precision(precision, requested, device),
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


def _fmt_norm(v: float | None) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"


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


def definitions_table(result: Mapping[str, Any]) -> str:
    """Markdown table: every definition's last-stage similarity (%) per modality; the headline in bold."""
    mods = result["modalities"]
    headline = result["headline"]["definition"]
    lines = [
        "| Definition | Feature | Fused with | Cosine | " + " | ".join(display_name(m) for m in mods) + " |",
        "|---|---|---|---|" + "---:|" * len(mods),
    ]
    for key, sec in result["definitions"].items():
        kind, fused, reduction = key.split("/")
        cells = [_fmt(sec["last_stage"][m]) for m in mods]
        if key == headline:
            cells = [f"**{c}**" for c in cells]
            key = f"**{key}** (headline)"
        lines.append(f"| {key} | {kind} | {fused} | {reduction} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def norms_table(result: Mapping[str, Any]) -> str:
    """Markdown table: each modality's mean RMS feature norm, per feature kind (rows) and stage."""
    mods = result["modalities"]
    lines = [
        "| Feature | Stage | " + " | ".join(display_name(m) for m in mods) + " |",
        "|---|---|" + "---:|" * len(mods),
    ]
    for kind, sec in result["norms"].items():
        label = "f_c (cross)" if kind == "cross" else kind
        for stage, row in sec["per_stage"].items():
            lines.append(
                f"| {label} | {stage.replace('stage', 'stage ')} | "
                + " | ".join(_fmt_norm(row[m]) for m in mods)
                + " |"
            )
    return "\n".join(lines)


def cross_ratio_table(result: Mapping[str, Any]) -> str:
    """Markdown table of RMS(f_c) / RMS(f') per stage and modality (empty string where undefined)."""
    sec = result.get("cross_ratio")
    if not sec:
        return ""
    mods = result["modalities"]
    lines = [
        "| RMS(f_c) / RMS(f') | " + " | ".join(display_name(m) for m in mods) + " |",
        "|---|" + "---:|" * len(mods),
    ]
    for stage, row in sec["per_stage"].items():
        lines.append(
            f"| {stage.replace('stage', 'stage ')} | " + " | ".join(_fmt_norm(row[m]) for m in mods) + " |"
        )
    lines.append(
        "| ± std over samples (last) | "
        + " | ".join(_fmt_norm(sec["last_stage_std"][m]) for m in mods)
        + " |"
    )
    return "\n".join(lines)


def _of_split(result: Mapping[str, Any]) -> str:
    """``" of the val split"`` where the result records its split (:func:`analyze` and the study
    runners add it; :func:`modality_contributions` only sees a data set), else nothing."""
    return f" of the {result['split']} split" if result.get("split") else ""


def analysis_markdown(result: Mapping[str, Any], title: str = "Modality-contribution analysis") -> str:
    """The analysis as Markdown: the headline table and its per-pixel variant, then every definition's
    last-stage similarity side by side, the feature norms and ``|f_c| / |f'|`` per stage."""
    mods = result["modalities"]
    lines = [
        f"# {title}",
        "",
        f"Cosine similarity between each modality's feature and the fused feature, in % "
        f"({result['num_samples']} samples{_of_split(result)}). Definition: {result['definition']}. "
        "The paper's Tab. 3 uses the last stage; higher = the modality contributes more to the fused "
        "feature. Features of one forward per sample: "
        f"{describe_inference(result.get('inference'))}."
        + (f" Network forward: {result['precision_note']}." if result.get("precision_note") else ""),
        "",
        similarity_table(result["similarity"], mods),
        "",
        f"Per-pixel variant ({result['pixel_definition']}):",
        "",
        similarity_table(result["pixel_similarity"], mods, last_label="Last stage"),
        "",
    ]
    if "definitions" not in result:  # a result written before the definitions were measured
        return "\n".join(lines)
    head = result["headline"]
    lines += [
        "## Every definition, last stage",
        "",
        f"The tables above are `{head['definition']}` and `{head['pixel_definition']}`. {head['why']}",
        "",
        *(f"- feature `{k}`: {v}" for k, v in result["features"].items()),
        *(f"- fused `{k}`: {v}" for k, v in result["fused"].items()),
        *(f"- cosine `{k}`: {v}" for k, v in result["reductions"].items()),
        "",
    ]
    if not result["intermediates"]:
        lines += [
            "This model exposes only its per-modality stage features (its `encode` output), not the "
            "pre-LN stream or the features before a fusion block, so only those rows are reported.",
            "",
        ]
    lines += [
        definitions_table(result),
        "",
        "## Feature norms",
        "",
        f"{result['norm_definition'][0].upper()}{result['norm_definition'][1:]}."
        + (
            " Post-LN features have about equal norms by construction; the paper's numbers need "
            "un-normalised weak modalities with much smaller norms (docs/design.md §7)."
            if result["intermediates"]
            else ""
        ),
        "",
        norms_table(result),
        "",
    ]
    ratio = cross_ratio_table(result)
    if ratio:
        lines += [
            f"How much the CMTB adds to each modality's stream: {result['cross_ratio_definition']}.",
            "",
            ratio,
            "",
        ]
    return "\n".join(lines)


def analysis_chart(result: Mapping[str, Any], path: str | Path) -> Path:
    """Bar chart PNG: one group per modality, one bar per stage (the last one is Tab. 3's number)."""
    from equiseg.reports.figures import similarity_chart

    mods = result["modalities"]
    return similarity_chart(
        result["similarity"]["per_stage"],
        mods,
        path,
        labels={m: display_name(m) for m in mods},
        title=f"Cosine similarity of each modality's feature with the fused feature ({result['num_samples']} "
        f"samples{_of_split(result)})",
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
            f"over {result['num_samples']} samples{_of_split(result)} ({result['definition']}). The paper's "
            "Tab. 3 reports "
            "the last stage; the SGM is meant to raise the weak modalities. Here the lowest is "
            f"{display_name(weakest)} ({_fmt(last[weakest])} %). Definition `"
            f"{result.get('headline', {}).get('definition', HEADLINE)}`: each modality's stage output "
            "against the head's input; every other definition measured and the feature norms are in the "
            "analysis's own `analysis.md`.",
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
