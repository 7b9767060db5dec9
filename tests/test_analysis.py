"""Modality-contribution analysis (paper Tab. 3, SPEC §1.6): hand-computed cosines, the 100 % cases,
the output layout, the report files and the ``equiseg analyze`` command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from study_utils import TINY_MODEL, train_tiny
from torch import nn

import equiseg
from equiseg.cli import main
from equiseg.engine.analysis import (
    analysis_section,
    modality_contributions,
    stage_similarities,
    write_analysis,
)

MODS = ("rgb", "depth", "event", "lidar")


class FeatureStub(nn.Module):
    """``encode`` returns the inputs themselves as stage features (stage s: subsampled by 2^s), so the
    expected similarities can be computed from the inputs."""

    modalities = ("a", "b")

    def encode(self, inputs):
        x = torch.stack(list(inputs))  # P×B×3×H×W
        return [x[..., :: 2**s, :: 2**s] for s in range(4)]


def _reference(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Loop implementation of both definitions for one stage, ``P×B×C×h×w`` -> two ``P×B`` arrays."""
    P, B, C, h, w = features.shape
    fused = features.mean(0)
    sample, pixel = np.zeros((P, B)), np.zeros((P, B))
    for p in range(P):
        for b in range(B):
            u, v = features[p, b].ravel(), fused[b].ravel()
            sample[p, b] = u @ v / (np.linalg.norm(u) * np.linalg.norm(v))
            cos = []
            for i in range(h):
                for j in range(w):
                    a, c = features[p, b, :, i, j], fused[b, :, i, j]
                    cos.append(a @ c / (np.linalg.norm(a) * np.linalg.norm(c)))
            pixel[p, b] = np.mean(cos)
    return sample, pixel


def test_stage_similarities_by_hand() -> None:
    # two modalities, C=2, one row of 2 pixels; channel-major flattening: (c0p1, c0p2, c1p1, c1p2)
    f1 = torch.tensor([[[1.0, 2.0]], [[0.0, 0.0]]])  # pixels (1,0) and (2,0)
    f2 = torch.tensor([[[0.0, 2.0]], [[1.0, 0.0]]])  # pixels (0,1) and (2,0)
    feats = torch.stack([f1, f2]).unsqueeze(1)  # P=2 × B=1 × C=2 × 1 × 2
    sample, pixel = stage_similarities(feats)
    # fused = (0.5, 2, 0.5, 0): cos = 4.5 / (sqrt(5) sqrt(4.5)) = sqrt(0.9) for both modalities
    assert torch.allclose(sample, torch.full((2, 1), math.sqrt(0.9)))
    # per pixel: cos((1,0),(.5,.5)) = 1/sqrt(2) and cos((2,0),(2,0)) = 1, averaged
    assert torch.allclose(pixel, torch.full((2, 1), (1 / math.sqrt(2) + 1) / 2))


def test_stage_similarities_match_loop_reference() -> None:
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(3, 2, 5, 3, 4, generator=g)
    sample, pixel = stage_similarities(feats)
    ref_sample, ref_pixel = _reference(feats.double().numpy())
    np.testing.assert_allclose(sample.numpy(), ref_sample, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pixel.numpy(), ref_pixel, rtol=1e-5, atol=1e-6)


def test_contributions_average_per_sample_values() -> None:
    g = torch.Generator().manual_seed(2)
    samples = [
        ([torch.randn(3, 16, 16, generator=g) for _ in range(2)], torch.zeros(16, 16, dtype=torch.long))
        for _ in range(3)
    ]
    samples[1][0][1].mul_(5.0).add_(samples[1][0][0])  # varied norms and correlations
    r = modality_contributions(FeatureStub(), samples, progress=False)
    assert r["modalities"] == ["a", "b"] and r["num_samples"] == 3 and r["num_stages"] == 4
    for s in range(4):
        per_sample = [
            _reference(torch.stack(x).unsqueeze(1)[..., :: 2**s, :: 2**s].double().numpy())
            for x, _ in samples
        ]  # each (sample P×1, pixel P×1)
        for k, key in enumerate(("similarity", "pixel_similarity")):
            vals = np.stack([ps[k][:, 0] for ps in per_sample])  # samples × P
            got = r[key]["per_stage"][f"stage{s + 1}"]
            np.testing.assert_allclose([got["a"], got["b"]], 100 * vals.mean(0), rtol=1e-5)
            if s == 3:
                assert r[key]["last_stage"] == got
                np.testing.assert_allclose(
                    [r[key]["last_stage_std"][m] for m in "ab"],
                    100 * vals.std(0, ddof=1),
                    rtol=1e-4,
                    atol=1e-6,
                )
    assert modality_contributions(FeatureStub(), samples, progress=False, max_samples=1)["num_samples"] == 1


def test_single_modality_is_fully_similar() -> None:
    model = equiseg.create_model(
        "equiseg_b0",
        num_classes=5,
        modalities=["rgb"],
        **{k: v for k, v in TINY_MODEL.items() if k != "name"},
    )
    data = [([torch.randn(3, 64, 64)], torch.zeros(64, 64, dtype=torch.long)) for _ in range(2)]
    r = modality_contributions(model, data, progress=False)
    for key in ("similarity", "pixel_similarity"):
        for row in r[key]["per_stage"].values():
            assert row["rgb"] == pytest.approx(100.0, abs=1e-4)


def test_identical_branches_are_fully_similar_and_layout() -> None:
    # shared weights + mean hub: identical inputs give identical features in every branch -> 100 %
    kw = {k: v for k, v in TINY_MODEL.items() if k != "name"}
    model = equiseg.create_model("equiseg_b0", num_classes=5, modalities=MODS, hub="mean", **kw)
    model.train()
    x = torch.randn(3, 64, 64)
    r = modality_contributions(model, [([x] * 4, torch.zeros(64, 64, dtype=torch.long))], progress=False)
    assert model.training  # restored
    assert r["modalities"] == list(MODS)
    assert set(r) >= {
        "definition",
        "pixel_definition",
        "modalities",
        "num_samples",
        "num_stages",
        "similarity",
        "pixel_similarity",
    }
    for key in ("similarity", "pixel_similarity"):
        sec = r[key]
        assert set(sec) == {"last_stage", "per_stage", "last_stage_std"}
        assert list(sec["per_stage"]) == ["stage1", "stage2", "stage3", "stage4"]
        for row in [*sec["per_stage"].values(), sec["last_stage"]]:
            assert list(row) == list(MODS)
            assert all(v == pytest.approx(100.0, abs=1e-3) for v in row.values())

    # different inputs (default self-query hub): bounded, not all 100
    model = equiseg.create_model("equiseg_b0", num_classes=5, modalities=MODS, **kw)
    data = [([torch.randn(3, 64, 64) for _ in MODS], torch.zeros(64, 64, dtype=torch.long)) for _ in range(2)]
    r = modality_contributions(model, data, progress=False)
    vals = [
        v
        for key in ("similarity", "pixel_similarity")
        for row in r[key]["per_stage"].values()
        for v in row.values()
    ]
    assert all(-100.0 <= v <= 100.0 for v in vals) and min(vals) < 99.0


def test_reports(tmp_path: Path) -> None:
    data = [([torch.randn(3, 16, 16) for _ in range(2)], torch.zeros(16, 16, dtype=torch.long))]
    r = modality_contributions(FeatureStub(), data, progress=False)
    paths = write_analysis(r, tmp_path / "a")
    assert json.loads(paths["json"].read_text())["similarity"] == r["similarity"]
    md = paths["markdown"].read_text()
    assert "| Stage | a | b |" in md and "| **Last stage (Tab. 3)** |" in md and "analysis.png" in md
    assert md.count("| Stage 1 |") == 2  # both definitions
    assert paths["chart"].stat().st_size > 0
    section = analysis_section(r, tmp_path / "report")
    assert section.startswith("## Modality contributions") and "](figures/modality_similarity.png)" in section
    assert (tmp_path / "report" / "figures" / "modality_similarity.png").is_file()


def test_analyze_command(tmp_path: Path, capsys) -> None:
    cfg, ckpt = train_tiny(tmp_path)
    out = tmp_path / "analysis"
    assert (
        main(
            [
                "--quiet",
                "analyze",
                str(cfg),
                "--checkpoint",
                str(ckpt),
                "--out",
                str(out),
                "--max-samples",
                "2",
            ]
        )
        == 0
    )
    r = json.loads((out / "analysis.json").read_text())
    assert r["num_samples"] == 2 and r["split"] == "val" and r["modalities"] == list(MODS)
    assert "Event" in capsys.readouterr().out
    assert (out / "analysis.md").is_file() and (out / "analysis.png").is_file()
    # the checkpoint's modalities must match the config's
    rc = main(
        ["--quiet", "analyze", str(cfg), "--checkpoint", str(ckpt), "--set", "data.modalities=[rgb,depth]"]
    )
    assert rc == 2 and "modalities" in capsys.readouterr().err
