"""Reading the parity fixtures of ``tests/fixtures/reference/`` (made by its ``make_*.py`` scripts)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "reference"


@dataclass
class ReferenceFixture:
    """One fixture: the reference's configuration, state dict (fp32), inputs and logits."""

    config: dict
    metadata: dict
    state_dict: dict[str, torch.Tensor]
    inputs: list[torch.Tensor]
    logits: torch.Tensor

    def write_release(self, path: Path, extra: dict[str, torch.Tensor] | None = None) -> Path:
        """Save the reference state dict as a release file (``backbone.*``, ``decode_head.*``)."""
        sd = dict(self.state_dict)
        sd.update(extra or {})
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
        return path


def load_fixture(name: str) -> ReferenceFixture:
    path = FIXTURES / f"{name}.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata())
    tensors = load_file(str(path))
    sd = {
        k[4:]: (v.float() if v.is_floating_point() else v) for k, v in tensors.items() if k.startswith("ref.")
    }
    n = sum(1 for k in tensors if k.startswith("input."))
    inputs = [tensors[f"input.{i}"].float() for i in range(n)]
    return ReferenceFixture(json.loads(meta["config"]), meta, sd, inputs, tensors["logits"])


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())
