"""The public reference implementations, built from a checkout the user points at, for benchmarks that
time them beside equiseg's models in the same run (ours must not be slower than the public code for
the same architecture). Nothing of theirs is in this repository: the checkout is imported as
it is, with the stand-ins of ``tests/fixtures/reference/_stubs.py`` for the few timm/mmcv/fvcore names
their model files import, exactly as the parity-fixture scripts there do.

Each reference registers a top-level package named ``semseg``, so two of them cannot live in one
process: :func:`build_reference` is meant to run in a fresh process per reference (``_cells.run_fresh``
does so, for ``model_speed.py`` and ``compare_references.py``).

    kind        checkout of                        model
    cmnext      jamycheung/DELIVER                 CMNeXt-B0..B5 (B0/B1/B3 added to its settings at run time)
    stitchfusion LiBingyu01/StitchFusion           stitchfusion-B0..B5 (the repository's model file)
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "reference"
MIT = {
    "B0": [[32, 64, 160, 256], [2, 2, 2, 2]],
    "B1": [[64, 128, 320, 512], [2, 2, 2, 2]],
    "B2": [[64, 128, 320, 512], [3, 4, 6, 3]],
    "B3": [[64, 128, 320, 512], [3, 4, 18, 3]],
    "B4": [[64, 128, 320, 512], [3, 8, 27, 3]],
    "B5": [[64, 128, 320, 512], [3, 6, 40, 3]],
}
REFERENCE_MODALS = ["img", "depth", "event", "lidar", "m5", "m6", "m7", "m8"]
KINDS = ("cmnext", "stitchfusion")


def build_reference(kind: str, root: str | Path, size: str, num_classes: int, n: int) -> torch.nn.Module:
    """The reference's full model (backbone + head + upsampling) for ``n`` modalities, random init."""
    if str(FIXTURES) not in sys.path:
        sys.path.insert(0, str(FIXTURES))
    size = size.upper()
    modals = REFERENCE_MODALS[:n]
    if kind == "cmnext":
        from make_cmnext import import_reference

        backbone_mod, _, model_mod = import_reference(Path(root))
        backbone_mod.cmnext_settings.setdefault(size, MIT[size])  # the release comments B0/B1/B3 out
        return model_mod.CMNeXt(f"CMNeXt-{size}", num_classes, modals)
    if kind == "stitchfusion":
        from make_stitchfusion import import_reference

        backbone_mod, base_mod, _, model_mod, _ = import_reference(Path(root))
        base_mod.stitchfusion = backbone_mod.stitchfusion  # BaseModel builds eval("stitchfusion")
        return model_mod.stitchfusion(f"stitchfusion-{size}", num_classes, modals)
    raise ValueError(f"unknown reference {kind!r}; choose from {', '.join(KINDS)}")
