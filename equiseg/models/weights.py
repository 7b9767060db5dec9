"""Loading pretrained weights (SPEC §1.1): the original SegFormer ImageNet files ``mit_b*.pth``, the
Hugging Face ``nvidia/mit-b*`` safetensors (legacy key names, as the files hold them, and the
transformers-5 in-memory names), and full EQUISeg state dicts. No network access: paths only.

MiT weights initialise *every* modality branch (the CMNeXt release initialises only its RGB branch).
Loading is strict about shapes (a mismatch is a ``ValueError`` naming the key and both shapes) and
reports missing and unexpected keys instead of silently ignoring them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from .mit import MixVisionTransformer


class LoadResult(NamedTuple):
    """Keys of the model's MiT not found in the file, file keys the MiT has no place for, and
    classifier keys dropped on purpose (ImageNet ``head.*``, HF ``classifier.*`` / ``decode_head.*``)."""

    missing_keys: list[str]
    unexpected_keys: list[str]
    ignored_keys: list[str]


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


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read tensors from ``.safetensors`` or a torch file (``weights_only=True``: no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises its own error types
            raise ValueError(f"{path}: not a readable safetensors file ({e})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a readable PyTorch weights file ({type(e).__name__}: {e})") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a dict of tensors (a state dict), got {type(obj).__name__}")
    return obj


def _load_into(module: nn.Module, sd: dict[str, torch.Tensor], source: str) -> tuple[list[str], list[str]]:
    own = module.state_dict()
    for k, v in sd.items():
        if k in own and own[k].shape != v.shape:
            raise ValueError(
                f"{source}: shape mismatch for '{k}': file has {tuple(v.shape)}, model expects "
                f"{tuple(own[k].shape)} (weights for another MiT variant?)"
            )
    result = module.load_state_dict(sd, strict=False)
    return list(result.missing_keys), list(result.unexpected_keys)


def load_mit_weights(model: nn.Module, path: str | Path) -> LoadResult:
    """Load ImageNet MiT weights (either format) into every MiT branch of ``model``.

    Args:
        model: an :class:`~equiseg.models.EQUISeg` (all branches) or a :class:`MixVisionTransformer`.
        path: ``mit_b*.pth`` (original keys) or a Hugging Face ``*.safetensors``.

    Returns:
        :class:`LoadResult`; ``missing_keys`` refer to the MiT's own names.

    Raises:
        ValueError: unknown format (no MiT keys), or a shape mismatch (names key and shapes).
    """
    sd = read_state_dict(path)
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
        encoders = model.encoders
    else:
        raise ValueError(f"cannot load MiT weights into a {type(model).__name__}")
    missing: list[str] = []
    unexpected: list[str] = []
    for enc in encoders:
        missing, unexpected = _load_into(enc, sd, str(path))
    return LoadResult(missing, unexpected, ignored)


def load_pretrained(model: nn.Module, path: str | Path) -> LoadResult:
    """Load a full EQUISeg state dict strictly, or MiT weights into every branch (dispatch on keys)."""
    sd = read_state_dict(path)
    if any(k.startswith(("head.linear_pred", "fusions.")) for k in sd):
        own = model.state_dict()
        missing = sorted(set(own) - set(sd))
        unexpected = sorted(set(sd) - set(own))
        if missing or unexpected:
            raise ValueError(
                f"{path}: checkpoint is for another EQUISeg architecture: "
                f"{len(missing)} missing keys (e.g. {missing[:3]}), "
                f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})"
            )
        _load_into(model, sd, str(path))
        return LoadResult([], [], [])
    return load_mit_weights(model, path)
