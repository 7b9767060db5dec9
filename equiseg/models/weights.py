"""Loading pretrained weights (docs/design.md §1.3): the original SegFormer ImageNet files ``mit_b*.pth``, the
Hugging Face ``nvidia/mit-b*`` safetensors (legacy key names, as the files hold them, and the
transformers-5 in-memory names), and full EQUISeg state dicts. No network access: paths only.

MiT weights initialise *every* modality branch (the CMNeXt release initialises only its RGB branch).
A modality with other than 3 input channels (``data.channels``) has its stem filled from the file's
3-channel ``patch_embed1`` (:func:`~equiseg.models.backbones.stem_weight_from_rgb`); those keys count as
loaded from the file.
Loading is strict about shapes (a mismatch is a ``ValueError`` naming the key and both shapes) and
reports missing and unexpected keys instead of silently ignoring them: :meth:`LoadResult.summary` is the
one-line report the trainer prints, and a file matching under :data:`MIN_COVERAGE` of the encoder's keys
is refused unless ``strict=False`` (``model.pretrained_strict: false``) -- a file with 1 of 176 keys
would otherwise train from a random encoder without a word.

Every file is read once, by the loader's reader (:func:`equiseg.models.loading.read_model_file`),
which also tells a full-model state dict (a checkpoint, an export, a bare state dict) from MiT weights.
Full-model state dicts go through :func:`load_state_dict_strict`, which every caller loading a
checkpoint's weights uses so that a mismatch is one line with counts and a few names
(:func:`describe_state_dict_mismatch`), never torch's multi-kilobyte listing of every key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import nn

from equiseg.checkpoint_io import CheckpointError

from .backbones import MixVisionTransformer

if TYPE_CHECKING:
    from .loading import ModelFile

MIN_COVERAGE = 0.9  # strict loading refuses a file matching fewer of the encoder's (or model's) keys
_SHOWN = 3  # names shown per list in one-line reports
# What a whole model's weights that do not fit the model built for them mean (load_state_dict_strict).
ANOTHER_ARCHITECTURE = "checkpoint is for another EQUISeg architecture"


class LoadResult(NamedTuple):
    """What :func:`load_mit_weights` / :func:`load_pretrained` loaded.

    Attributes:
        missing_keys: keys of the model's MiT (or, for a full model, the model) not found in the file.
        unexpected_keys: file keys the MiT has no place for.
        ignored_keys: classifier keys dropped on purpose (ImageNet ``head.*``, HF ``classifier.*`` /
            ``decode_head.*``).
        matched: the encoder's keys loaded from the file (each branch gets the same ones).
        total: the encoder's own keys (one MiT branch; the whole model's for a full state dict).
        source: the file.
        kind: ``"mit"`` (ImageNet MiT weights into every branch) or ``"full"`` (an EQUISeg state dict).
    """

    missing_keys: list[str]
    unexpected_keys: list[str]
    ignored_keys: list[str]
    matched: int = 0
    total: int = 0
    source: str = ""
    kind: str = "mit"

    @property
    def coverage(self) -> float:
        """``matched / total`` (1.0 for an empty model)."""
        return self.matched / self.total if self.total else 1.0

    def summary(self) -> str:
        """One line, e.g. ``mit weights /p/mit_b0.pth: matched 176/176 encoder keys (100.0 %), 0 missing,
        0 unexpected, 2 ignored (head.weight, head.bias)``."""
        what = "encoder" if self.kind == "mit" else "model"
        return (
            f"{self.kind} weights {self.source}: matched {self.matched}/{self.total} {what} keys "
            f"({100 * self.coverage:.1f} %), {_count_names(self.missing_keys, 'missing')}, "
            f"{_count_names(self.unexpected_keys, 'unexpected')}, {_count_names(self.ignored_keys, 'ignored')}"
        )


def _count_names(names: Sequence[str], what: str, sep: str = ", ") -> str:
    """``"2 missing (a, b)"`` / ``"5 unexpected (a, b, c, ...)"`` / ``"0 ignored"``."""
    if not names:
        return f"0 {what}"
    shown = sep.join(names[:_SHOWN]) + (f"{sep}..." if len(names) > _SHOWN else "")
    return f"{len(names)} {what} ({shown})"


def describe_state_dict_mismatch(
    model_sd: Mapping[str, torch.Tensor], file_sd: Mapping[str, torch.Tensor]
) -> str:
    """How a state dict differs from a model's, in one line; ``""`` when keys and shapes all match.

    Args:
        model_sd: the model's ``state_dict()``.
        file_sd: the state dict read from a file.

    Returns:
        Counts and at most 3 names per kind (shape entries separated by ``;``), e.g. ``"12 missing keys
        (fusions.0.a, fusions.0.b, fusions.1.a, ...), 0 unexpected keys, 1 shape mismatch
        (head.linear_pred.weight: file (19, 32, 1, 1), model (5, 32, 1, 1))"``.
    """
    missing = [k for k in model_sd if k not in file_sd]
    unexpected = [k for k in file_sd if k not in model_sd]
    return _mismatch_line(missing, unexpected, _shape_mismatches(model_sd, file_sd))


def _shape_mismatches(model_sd: Mapping[str, torch.Tensor], file_sd: Mapping[str, torch.Tensor]) -> list[str]:
    return [
        f"{k}: file {tuple(v.shape)}, model {tuple(model_sd[k].shape)}"
        for k, v in file_sd.items()
        if k in model_sd and tuple(model_sd[k].shape) != tuple(v.shape)
    ]


def _mismatch_line(missing: Sequence[str], unexpected: Sequence[str], shapes: Sequence[str]) -> str:
    if not (missing or unexpected or shapes):
        return ""
    shape_part = _count_names(shapes, "shape mismatch" if len(shapes) == 1 else "shape mismatches", "; ")
    return f"{_count_names(missing, 'missing keys')}, {_count_names(unexpected, 'unexpected keys')}, {shape_part}"


def load_state_dict_strict(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    source: str | Path,
    problem: str = "weights do not match the model",
) -> None:
    """``model.load_state_dict(state_dict)`` (strict), with a one-line ``ValueError`` on a mismatch.

    Use this wherever a checkpoint's weights are loaded into a freshly built model, instead of turning
    torch's ``RuntimeError`` (which lists every key, often kilobytes) into the message.

    Args:
        model: the module to load into.
        state_dict: the weights.
        source: the file, named first in the message.
        problem: what the mismatch means to the user, e.g. ``"checkpoint is for another EQUISeg
            architecture"`` or ``"weights do not match the model config stored with them"``.

    Raises:
        ValueError: ``f"{source}: {problem}: N missing keys (a, b, c, ...), M unexpected keys (...),
            S shape mismatches (k: file (..), model (..); ...)"``; nothing is loaded when shapes
            differ (the model is half-loaded for a key-set mismatch, as with torch's strict loading).
    """
    own = model.state_dict()
    if _shape_mismatches(own, state_dict):  # torch raises for these even with strict=False
        raise ValueError(f"{source}: {problem}: {describe_state_dict_mismatch(own, state_dict)}")
    try:
        # strict=False and our own check: torch's strict error text is the multi-KB dump; its
        # missing/unexpected lists also account for modules' own compatibility hooks (BatchNorm's
        # num_batches_tracked in old files), which a plain key comparison would not
        result = model.load_state_dict(dict(state_dict), strict=False)
    except RuntimeError as e:  # anything else torch refuses: its first line only
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{source}: {problem}: {first}") from None
    if result.missing_keys or result.unexpected_keys:
        detail = _mismatch_line(result.missing_keys, result.unexpected_keys, [])
        raise ValueError(f"{source}: {problem}: {detail}")


_HF_RULES = [  # (legacy HF suffix pattern, original suffix); i = stage index (0-based), j = block
    (r"encoder\.patch_embeddings\.(\d+)\.proj\.", lambda m: f"patch_embed{int(m[1]) + 1}.proj."),
    (r"encoder\.patch_embeddings\.(\d+)\.layer_norm\.", lambda m: f"patch_embed{int(m[1]) + 1}.norm."),
    (r"encoder\.block\.(\d+)\.(\d+)\.", lambda m: f"block{int(m[1]) + 1}.{m[2]}."),
    (r"encoder\.layer_norm\.(\d+)\.", lambda m: f"norm{int(m[1]) + 1}."),
    # transformers >= 5 in-memory names
    (r"stages\.(\d+)\.patch_embeddings\.proj\.", lambda m: f"patch_embed{int(m[1]) + 1}.proj."),
    (r"stages\.(\d+)\.patch_embeddings\.layer_norm\.", lambda m: f"patch_embed{int(m[1]) + 1}.norm."),
    (r"stages\.(\d+)\.blocks\.(\d+)\.", lambda m: f"block{int(m[1]) + 1}.{m[2]}."),
    (r"stages\.(\d+)\.layer_norm\.", lambda m: f"norm{int(m[1]) + 1}."),
]
_HF_BLOCK_RENAMES = [
    ("layer_norm_1.", "norm1."),
    ("layernorm_before.", "norm1."),
    ("layer_norm_2.", "norm2."),
    ("layernorm_after.", "norm2."),
    ("attention.self.query.", "attn.q."),
    ("attention.q_proj.", "attn.q."),
    ("attention.output.dense.", "attn.proj."),
    ("attention.o_proj.", "attn.proj."),
    ("attention.self.sr.", "attn.sr."),
    ("attention.sequence_reduction.sequence_reduction.", "attn.sr."),
    ("attention.self.layer_norm.", "attn.norm."),
    ("attention.sequence_reduction.layer_norm.", "attn.norm."),
    ("mlp.dense1.", "mlp.fc1."),
    ("mlp.dense2.", "mlp.fc2."),
]
_HF_KV = {  # k, v parts -> stacked kv (k rows first, as in the original release)
    "attention.self.key.": "k",
    "attention.self.value.": "v",
    "attention.k_proj.": "k",
    "attention.v_proj.": "v",
}


def _is_hf(sd: dict[str, torch.Tensor]) -> bool:
    return any(re.search(r"(^|\.)(encoder\.patch_embeddings|stages\.\d+\.patch_embeddings)\.", k) for k in sd)


def convert_hf_to_original(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename a Hugging Face SegFormer/MiT state dict to the original ``mit_b*.pth`` layout.

    Returns the converted dict and the keys dropped on purpose (classifier / decode head).
    """
    out: dict[str, torch.Tensor] = {}
    kv_parts: dict[str, dict[str, torch.Tensor]] = {}
    dropped, unknown = [], []
    for key, value in sd.items():
        k = re.sub(r"^(segformer\.|model\.)", "", key)
        if k.startswith(("classifier.", "decode_head.", "head.")):
            dropped.append(key)
            continue
        for pattern, repl in _HF_RULES:
            m = re.match(pattern, k)
            if m:
                k = repl(m) + k[m.end() :]
                break
        else:
            unknown.append(key)
            out[key] = value
            continue
        for old, new in _HF_BLOCK_RENAMES:
            k = k.replace(old, new)
        for part, which in _HF_KV.items():
            if part in k:
                prefix, param = k.split(part)
                kv_parts.setdefault(f"{prefix}attn.kv.{param}", {})[which] = value
                break
        else:
            out[k] = value
    for k, parts in kv_parts.items():
        if set(parts) != {"k", "v"}:
            raise ValueError(f"Hugging Face checkpoint has only the {'/'.join(parts)} part of '{k}'")
        out[k] = torch.cat([parts["k"], parts["v"]], dim=0)
    return out, dropped


def is_mit_state_dict(sd: Mapping[str, object]) -> bool:
    """Whether ``sd`` holds MiT encoder weights: the original ``patch_embed1.*`` keys (maybe under
    ``module.``/``backbone.``) or Hugging Face's (:func:`convert_hf_to_original`)."""
    return _is_hf(sd) or any(re.sub(r"^(module\.|backbone\.)", "", k).startswith("patch_embed1.") for k in sd)


def _read_weights(path: str | Path) -> ModelFile:
    """The file read once by the loader's reader, with the weights-file wording of its errors."""
    from .loading import read_model_file

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        return read_model_file(path)
    except CheckpointError as e:  # corrupt / unsafe / not a torch file: one line naming the file
        if path.suffix == ".safetensors":
            raise ValueError(str(e)) from None
        raise ValueError(f"{path}: not a readable PyTorch weights file ({e})") from None


def _tensors(file: ModelFile) -> dict[str, torch.Tensor]:
    sd = file.state_dict
    if not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{file.weights}: expected a dict of tensors (a state dict), got other values too")
    return sd


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read tensors from ``.safetensors`` or a torch file (``weights_only=True``: no code runs); a
    training checkpoint gives its ``model``, a ``state_dict``/``model`` wrapper is unwrapped."""
    return _tensors(_read_weights(path))


def _check_shapes(module: nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    own = module.state_dict()
    for k, v in sd.items():
        if k in own and own[k].shape != v.shape:
            raise ValueError(
                f"{source}: shape mismatch for '{k}': file has {tuple(v.shape)}, model expects "
                f"{tuple(own[k].shape)} (weights for another MiT variant?)"
            )


def load_mit_weights(model: nn.Module, path: str | Path, strict: bool = True) -> LoadResult:
    """Load ImageNet MiT weights (either format) into every MiT branch of ``model``.

    Args:
        model: an :class:`~equiseg.models.EQUISeg` (all branches) or a :class:`MixVisionTransformer`.
        path: ``mit_b*.pth`` (original keys) or a Hugging Face ``*.safetensors``.
        strict: refuse a file that matches fewer than :data:`MIN_COVERAGE` (90 %) of the encoder's keys
            (``model.pretrained_strict: false`` in a config turns this off); shapes are always checked.

    Returns:
        :class:`LoadResult`; ``missing_keys`` refer to the MiT's own names, ``matched``/``total`` to
        one branch (every branch receives the same tensors). Print :meth:`LoadResult.summary`.

    Raises:
        ValueError: unknown format (no MiT keys), a shape mismatch (names key and shapes), or, with
            ``strict``, too low a coverage (the summary and how to load it anyway). Nothing is loaded
            when it raises.
    """
    return load_mit_state_dict(model, read_state_dict(path), path, strict)


def load_mit_state_dict(
    model: nn.Module, sd: Mapping[str, torch.Tensor], path: str | Path, strict: bool = True
) -> LoadResult:
    """:func:`load_mit_weights` of tensors already read from ``path`` (named in messages)."""
    sd = dict(sd)
    if _is_hf(sd):
        sd, ignored = convert_hf_to_original(sd)
    else:
        sd = {re.sub(r"^(module\.|backbone\.)", "", k): v for k, v in sd.items()}
        ignored = [k for k in sd if k.startswith("head.")]
        sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
    if not any(k.startswith("patch_embed1.") for k in sd):
        raise ValueError(
            f"{path}: unknown weights format; expected SegFormer MiT keys ('patch_embed1.proj.weight', ...) "
            "or Hugging Face keys ('encoder.patch_embeddings.0.proj.weight', ...)"
        )
    if isinstance(model, MixVisionTransformer):
        encoders = [model]
    elif hasattr(model, "encoders"):
        encoders = list(model.encoders)
    else:
        raise ValueError(f"cannot load MiT weights into a {type(model).__name__}")
    # each branch gets the file fitted to its inputs: a modality with other than 3 channels has its
    # stem (or its branch's patch_embed1) filled from patch_embed1 (backbones.stem_weight_from_rgb)
    fitted = [enc.adapt_rgb_state_dict(sd) for enc in encoders]
    for enc, esd in zip(encoders, fitted, strict=True):  # all checks before any branch is touched
        _check_shapes(enc, esd, str(path))
    own = encoders[0].state_dict()
    missing = [k for k in own if k not in fitted[0]]
    unexpected = [k for k in fitted[0] if k not in own]
    result = LoadResult(missing, unexpected, ignored, len(own) - len(missing), len(own), str(path), "mit")
    if strict and result.coverage < MIN_COVERAGE:
        raise ValueError(
            f"{result.summary()}: under {100 * MIN_COVERAGE:.0f} % of the encoder's keys (wrong file?); "
            "set model.pretrained_strict: false to load it anyway"
        )
    for enc, esd in zip(encoders, fitted, strict=True):
        enc.load_state_dict(esd, strict=False)
    # Architectures whose other branches are not MiTs but start from MiT parts (e.g. CMNeXt's auxiliary
    # patch embeddings, which its release leaves random) take what they need from the same tensors.
    extra = getattr(model, "init_from_mit", None)
    if callable(extra):
        extra(sd)
    return result


def load_pretrained(model: nn.Module, path: str | Path, strict: bool = True) -> LoadResult:
    """Load a full model's weights strictly, or MiT weights into every branch (the file decides).

    Args:
        model: the model.
        path: a whole model's weights (a training checkpoint, an ``equiseg export`` folder or its
            ``model.safetensors``, a bare full-model state dict) or MiT weights (see
            :func:`load_mit_weights`); read once (:func:`equiseg.models.loading.read_model_file`).
        strict: for MiT weights, the coverage check of :func:`load_mit_weights`; a full state dict
            must always match exactly.

    Returns:
        :class:`LoadResult` (``kind="full"`` for a full state dict, then ``matched == total``).

    Raises:
        ValueError: a mismatch, in one line (:func:`load_state_dict_strict`), or as
            :func:`load_mit_weights`.
    """
    file = _read_weights(path)
    if file.format in ("checkpoint", "export", "state_dict"):
        load_state_dict_strict(model, _tensors(file), file.weights, ANOTHER_ARCHITECTURE)
        total = len(model.state_dict())
        return LoadResult([], [], [], total, total, str(file.weights), "full")
    return load_mit_state_dict(model, _tensors(file), path, strict=strict)
