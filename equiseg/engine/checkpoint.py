"""Capture/restore of every random-number generator, for an exact resume; and the checkpoint file format.

The file format (atomic :func:`save_checkpoint`, ``weights_only`` :func:`load_checkpoint` and their
errors) lives in :mod:`equiseg.checkpoint_io`, below the models that read weights files with it; it is
re-exported here, so ``equiseg.engine.checkpoint.load_checkpoint`` and friends keep working.

RNG states: :func:`capture_rng_state` / :func:`restore_rng_state` cover torch (CPU and every CUDA
device), numpy's legacy global generator, python's ``random`` and any named ``torch.Generator`` (e.g.
the SGM's pairing generator), all in the plain-typed form a checkpoint holds. They capture *this
process's* generators: under DDP each rank has its own, so save them per rank if the run must be
bitwise-resumable there.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from equiseg.checkpoint_io import (
    CheckpointError,
    CorruptCheckpointError,
    DiskFullError,
    UnsafeCheckpointError,
    load_checkpoint,
    save_checkpoint,
)

__all__ = [
    "CheckpointError",
    "CorruptCheckpointError",
    "DiskFullError",
    "UnsafeCheckpointError",
    "capture_rng_state",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
]


# ------------------------------------------------------------------------------------------ RNG states


def capture_rng_state(generators: Mapping[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Snapshot every RNG of this process in a ``weights_only``-loadable form.

    Args:
        generators: Extra named ``torch.Generator`` objects (CPU or CUDA) to capture.

    Returns:
        ``{"torch": uint8 tensor, "cuda": [uint8 tensor per device], "numpy": {...}, "python": {...},
        "generators": {name: uint8 tensor}}``; ``"cuda"`` is an empty list when CUDA is unavailable.
    """
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),  # 624 uint32 words
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "python": {
            "version": int(py_version),
            "internal": torch.tensor(py_internal, dtype=torch.int64),  # 624 uint32 words + position
            "gauss_next": py_gauss,
        },
        "generators": {name: gen.get_state() for name, gen in (generators or {}).items()},
    }


def restore_rng_state(
    state: Mapping[str, Any],
    generators: Mapping[str, torch.Generator] | None = None,
    *,
    strict: bool = True,
) -> None:
    """Restore what :func:`capture_rng_state` captured.

    Args:
        state: The captured dict (possibly after a save/load round trip, on any ``map_location``).
        generators: The live named generators to restore into.
        strict: Require the captured and the live generator names to match exactly, and the CUDA
            device counts to match when both sides have CUDA states.
    """
    generators = dict(generators or {})
    saved_gens: Mapping[str, torch.Tensor] = state.get("generators", {})
    if strict and set(saved_gens) != set(generators):
        raise KeyError(
            f"RNG state has generators {sorted(saved_gens)} but {sorted(generators)} were given to restore"
        )
    torch.set_rng_state(state["torch"].cpu())
    cuda_states = [s.cpu() for s in state.get("cuda", [])]
    if cuda_states and torch.cuda.is_available():
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        elif strict:
            raise ValueError(
                f"RNG state has {len(cuda_states)} CUDA device state(s), this process sees "
                f"{torch.cuda.device_count()}"
            )
        else:
            for i, s in enumerate(cuda_states[: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(s, i)
    npst = state["numpy"]
    np.random.set_state(
        (
            npst["name"],
            npst["keys"].cpu().numpy().astype(np.uint32),
            int(npst["pos"]),
            int(npst["has_gauss"]),
            float(npst["cached_gaussian"]),
        )
    )
    pyst = state["python"]
    random.setstate((int(pyst["version"]), tuple(pyst["internal"].tolist()), pyst["gauss_next"]))
    for name, gen in generators.items():
        if name in saved_gens:
            gen.set_state(saved_gens[name].cpu())
