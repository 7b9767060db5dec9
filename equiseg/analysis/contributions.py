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

The tables, chart and files of a result are written by :mod:`equiseg.reports.analysis`; the ``equiseg
analyze`` command is :func:`equiseg.tasks.analysis.analyze`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from equiseg.engine.inference import WHOLE_IMAGE
from equiseg.engine.precision import describe_precision, inference_autocast, resolve_precision

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
