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


def release_setup(tmp: Path, name: str = "cmnext_3mod", model: str = "cmnext_b0", **model_fields) -> tuple:
    """A released state dict (the fixture's reference weights) plus a config and a 2-sample val split of
    random images in a folder data set with the fixture's classes, so the release can be scored:
    returns ``(fixture, release_path, config_dict)``."""
    import numpy as np
    import yaml
    from PIL import Image

    fx = load_fixture(name)
    release = fx.write_release(tmp / f"{name}_release.safetensors")
    h, w = fx.config["input_shape"][2:]
    mods = list(fx.config["modalities"])
    rng = np.random.default_rng(0)
    for i in range(2):
        for m in [*mods, "label"]:
            (tmp / "data" / m / "val").mkdir(parents=True, exist_ok=True)
            shape = (h, w) if m == "label" else (h, w, 3)
            arr = rng.integers(0, fx.config["num_classes"] if m == "label" else 256, shape, dtype=np.uint8)
            Image.fromarray(arr).save(tmp / "data" / m / "val" / f"{i}.png")
    spec = {
        "classes": [f"c{k}" for k in range(fx.config["num_classes"])],
        "modalities": {m: {"path": f"{m}/{{split}}/{{key}}.png", "rgb": m == "rgb"} for m in mods},
        "label": {"path": "label/{split}/{key}.png"},
    }
    (tmp / "spec.yaml").write_text(yaml.safe_dump(spec))
    cfg = {
        "model": {
            "name": model,
            "embed_dims": fx.config["embed_dims"],
            "depths": fx.config["depths"],
            "decoder_dim": fx.config["decoder_dim"],
            **model_fields,
        },
        "data": {
            "dataset": "folder",
            "spec": str(tmp / "spec.yaml"),
            "root": str(tmp / "data"),
            "modalities": mods,
            "val_short_side": None,
            "num_workers": 0,
        },
        "eval": {"convention": "present"},
    }
    return fx, release, cfg
