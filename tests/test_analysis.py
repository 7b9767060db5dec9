"""Modality-contribution analysis (paper Tab. 3, docs/design.md §7): hand-computed cosines, every named
definition (post-LN / pre-LN / pre-CMTB × fused mean / leave-one-out × per sample / per pixel) on
hand-built features with known answers, feature norms and |f_c|/|f'| as constructed, EQUISeg's
intermediates checked against its own layers, the peers' post-LN-only rows, the output layout, the
report files and the ``equiseg analyze`` command."""

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
from equiseg.tasks.analysis import (
    HEADLINE,
    analysis_markdown,
    analysis_section,
    definition_values,
    fused_feature,
    modality_contributions,
    rms_norms,
    stage_similarities,
    write_analysis,
)

MODS = ("rgb", "depth", "event", "lidar")
TINY_KW = {k: v for k, v in TINY_MODEL.items() if k != "name"}
R5, R10 = 1 / math.sqrt(5), 1 / math.sqrt(10)


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


def _maps(vectors: list[list[float]], width: int = 2) -> torch.Tensor:
    """Per-modality channel vectors ``P×C`` -> features ``P×1×C×1×width``, the same vector at every pixel."""
    v = torch.tensor(vectors, dtype=torch.float32)  # P×C
    return v[:, None, :, None, None].expand(-1, 1, -1, 1, width).contiguous()


# f' (pre_cmtb): a = e1, b = e2, c = (e1 + e2)/2 = the mean of all three -> c is 100 % similar to "mean"
PRE_CMTB = [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]
# f_c = k_m · f'_m with k = (1, 1, 3) -> |f_c|/|f'| = k; pre_ln = (2e1, 2e2, 2(e1 + e2))
CROSS_SCALE = (1.0, 1.0, 3.0)
# post_ln: a ⟂ mean = (0, 1) -> 0 %
POST_LN = [[1.0, 0.0], [-2.0, 1.0], [1.0, 2.0]]
# known last-stage cosines of every definition (sample == pixel: every pixel holds the same vector)
EXPECTED = {
    # mean (0,1): a ⟂, b (-2,1)·(0,1)/√5, c 2/√5; others: a vs (-.5,1.5), b vs (1,1), c vs (-.5,.5)
    "post_ln/mean": (0.0, R5, 2 * R5),
    "post_ln/others": (-R10, -R10, R10),
    # pre_ln = (2e1, 2e2, 2e1+2e2): mean ∝ e1+e2; others: a vs (e1 + 2e2), b vs (2e1 + e2), c vs e1+e2
    "pre_ln/mean": (1 / math.sqrt(2), 1 / math.sqrt(2), 1.0),
    "pre_ln/others": (R5, R5, 1.0),
    # f': mean = (.5,.5) = c; others: a vs (.25,.75), b vs (.75,.25), c vs (.5,.5)
    "pre_cmtb/mean": (1 / math.sqrt(2), 1 / math.sqrt(2), 1.0),
    "pre_cmtb/others": (R10, R10, 1.0),
}
# RMS over the 2 channels × 2 pixels: e1 -> 1/√2, (.5,.5) -> .5, (-2,1) and (1,2) -> √2.5
RMS = {
    "pre_cmtb": (1 / math.sqrt(2), 1 / math.sqrt(2), 0.5),
    "pre_ln": (math.sqrt(2), math.sqrt(2), 2.0),
    "post_ln": (1 / math.sqrt(2), math.sqrt(2.5), math.sqrt(2.5)),
    "cross": (1 / math.sqrt(2), 1 / math.sqrt(2), 1.5),
}


class IntermediateStub(nn.Module):
    """Hands out the constructed features above whatever the inputs; stage s is scaled by (s + 1) and
    the k-th call by k (k = 1, 2, ...), so cosines stay put and norms follow known factors."""

    modalities = ("a", "b", "c")
    has_modality_features = True
    has_intermediate_features = True

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def encode(self, inputs, return_intermediates: bool = False):
        self.calls += 1
        k = torch.tensor(CROSS_SCALE)[:, None, None, None, None]
        out = {"pre_cmtb": [], "pre_ln": [], "cross": [], "post_ln": []}
        for s in range(4):
            scale = self.calls * (s + 1)
            f = scale * _maps(PRE_CMTB)
            out["pre_cmtb"].append(f)
            out["cross"].append(k * f)
            out["pre_ln"].append(f + k * f)
            out["post_ln"].append(scale * _maps(POST_LN))
        return out if return_intermediates else out["post_ln"]


def test_fused_mean_and_leave_one_out_by_hand() -> None:
    f = _maps(PRE_CMTB)  # 3×1×2×1×2
    torch.testing.assert_close(fused_feature(f, "mean")[0], f[2])  # the mean of all is c
    others = fused_feature(f, "others")  # P×B×C×h×w: row m = mean of the other two
    torch.testing.assert_close(others[:, 0, :, 0, 0], torch.tensor([[0.25, 0.75], [0.75, 0.25], [0.5, 0.5]]))
    with pytest.raises(ValueError, match="two present"):
        fused_feature(f[:1], "others")
    with pytest.raises(ValueError, match="fused must be"):
        fused_feature(f, "median")


def test_leave_one_out_with_two_modalities_is_the_pairwise_cosine() -> None:
    # a: pixel 1 = e1, pixel 2 = e2; b: pixel 1 = e2, pixel 2 = 3·e2 (one large pixel)
    a = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # C=2 × h=1 × w=2
    b = torch.tensor([[[0.0, 0.0]], [[1.0, 3.0]]])
    sample, pixel = stage_similarities(torch.stack([a, b]).unsqueeze(1), fused="others")
    # flattened (c0p1, c0p2, c1p1, c1p2): a = (1,0,0,1), b = (0,0,1,3): 3 / (√2 √10); symmetric
    assert torch.allclose(sample, torch.full((2, 1), 3 / math.sqrt(20)))
    # per pixel: cos(e1, e2) = 0 and cos(e2, 3e2) = 1 -> 0.5 (the per-pixel scale does not count)
    assert torch.allclose(pixel, torch.full((2, 1), 0.5))


def test_orthogonal_scores_zero_and_norms_are_rms() -> None:
    f = _maps(POST_LN)
    sample, pixel = stage_similarities(f)  # mean = (0, 1) at every pixel
    for got in (sample, pixel):
        torch.testing.assert_close(got[:, 0], torch.tensor([0.0, R5, 2 * R5]))
    torch.testing.assert_close(rms_norms(f)[:, 0], torch.tensor(RMS["post_ln"]))
    torch.testing.assert_close(rms_norms(7.0 * f), 7.0 * rms_norms(f))  # norms scale with the feature
    big = torch.randn(2, 3, 4, 5, 6)
    torch.testing.assert_close(rms_norms(big), big.pow(2).mean(dim=(2, 3, 4)).sqrt())


def test_definition_values_keys() -> None:
    stub = IntermediateStub()
    vals = definition_values(stub.encode(None, return_intermediates=True))
    kinds = ("post_ln", "pre_ln", "pre_cmtb")
    assert set(vals) == {
        *(f"{k}/{f}/{r}" for k in kinds for f in ("mean", "others") for r in ("sample", "pixel")),
        *(f"norm/{k}" for k in (*kinds, "cross")),
        "cross_ratio",
    }
    assert all(v.shape == (4, 3, 1) for v in vals.values())  # S×P×B
    # one modality: no leave-one-out; f_c missing -> no cross norm or ratio
    one = definition_values({"post_ln": [_maps(PRE_CMTB)[:1]] * 4, "cross": [None] * 4})
    assert set(one) == {"post_ln/mean/sample", "post_ln/mean/pixel", "norm/post_ln"}
    torch.testing.assert_close(one["post_ln/mean/sample"], torch.ones(4, 1, 1))


def test_every_definition_on_constructed_features() -> None:
    data = [([torch.zeros(3, 4, 4)] * 3, None)] * 2  # the stub ignores its inputs
    r = modality_contributions(IntermediateStub(), data, progress=False)
    assert r["intermediates"] is True and r["num_samples"] == 2 and r["modalities"] == ["a", "b", "c"]
    assert r["headline"]["definition"] == HEADLINE == "post_ln/mean/sample"
    assert (
        r["headline"]["pixel_definition"] == "post_ln/mean/pixel"
        and "docs/design.md §7" in r["headline"]["why"]
    )
    assert r["similarity"] == r["definitions"]["post_ln/mean/sample"]
    assert r["pixel_similarity"] == r["definitions"]["post_ln/mean/pixel"]
    assert list(r["features"]) == ["post_ln", "pre_ln", "pre_cmtb"] and set(r["fused"]) == {"mean", "others"}
    assert len(r["definitions"]) == 12
    for name, expected in EXPECTED.items():
        for reduction in ("sample", "pixel"):
            sec = r["definitions"][f"{name}/{reduction}"]
            assert set(sec) == {"last_stage", "per_stage", "last_stage_std"}
            for row in (*sec["per_stage"].values(), sec["last_stage"]):  # scaling keeps the cosines
                np.testing.assert_allclose(
                    [row[m] for m in "abc"], 100 * np.array(expected), atol=1e-4, err_msg=name
                )
            np.testing.assert_allclose(list(sec["last_stage_std"].values()), 0.0, atol=1e-3)
    # norms: the base RMS × (s + 1), averaged over the two calls (×1, ×2) -> ×1.5; std of {1, 2}·x
    assert set(r["norms"]) == {"post_ln", "pre_ln", "pre_cmtb", "cross"}
    for kind, base in RMS.items():
        sec = r["norms"][kind]
        for s in range(4):
            got = [sec["per_stage"][f"stage{s + 1}"][m] for m in "abc"]
            np.testing.assert_allclose(got, 1.5 * (s + 1) * np.array(base), rtol=1e-5, err_msg=kind)
        np.testing.assert_allclose(
            [sec["last_stage_std"][m] for m in "abc"], 4 * math.sqrt(0.5) * np.array(base), rtol=1e-5
        )
    # |f_c| / |f'| = k at every stage and call
    for row in (*r["cross_ratio"]["per_stage"].values(), r["cross_ratio"]["last_stage"]):
        np.testing.assert_allclose([row[m] for m in "abc"], CROSS_SCALE, rtol=1e-5)


def _tiny(mods, **kw) -> nn.Module:
    model = equiseg.create_model("equiseg_b0", num_classes=5, modalities=list(mods), **TINY_KW, **kw)
    return model.eval()


def _tokens(f: torch.Tensor) -> torch.Tensor:
    """``P×B×C×h×w`` -> ``(P·B)×(h·w)×C`` tokens."""
    P, B, C, h, w = f.shape
    return f.permute(0, 1, 3, 4, 2).reshape(P * B, h * w, C)


@pytest.mark.parametrize(
    "kw", [{}, {"residual": False}, {"share_encoder": False}, {"cross_attention": False}], ids=str
)
@torch.inference_mode()
def test_equiseg_intermediates_match_its_layers(kw) -> None:
    torch.manual_seed(0)
    model = _tiny(MODS[:3], **kw)
    xs = [torch.randn(2, 3, 64, 64) for _ in range(3)]
    out = model.encode(xs, return_intermediates=True)
    plain = model.encode(xs)
    assert isinstance(plain, list) and set(out) == {"post_ln", "pre_ln", "pre_cmtb", "cross"}
    for a, b in zip(out["post_ln"], plain, strict=True):
        assert torch.equal(a, b)  # encode's own output, unchanged
    prev = torch.cat(xs)  # (P·B)×3×H×W
    for s in range(4):
        pre_cmtb, pre_ln, cross, post = (out[k][s] for k in ("pre_cmtb", "pre_ln", "cross", "post_ln"))
        P, B, C, h, w = post.shape
        assert pre_cmtb.shape == pre_ln.shape == cross.shape == (3, 2, C, h, w)
        # f' = the stage's MiT blocks on the previous stage's output, branch by branch
        encs = model.encoders
        branches = []
        for j, xj in enumerate(prev.chunk(P)):
            enc = encs[0] if len(encs) == 1 else encs[j]
            t, H, W = enc.embed(s, xj)
            branches.append(enc.run_blocks(s, t, H, W))
        torch.testing.assert_close(_tokens(pre_cmtb), torch.cat(branches))
        # the CMTB output from f'; f_c its added term (the whole output without the residual)
        cmtb = model.fusions[s](_tokens(pre_cmtb), h, w, P)
        torch.testing.assert_close(_tokens(pre_ln), cmtb)
        if kw.get("residual", True):
            torch.testing.assert_close(pre_ln, pre_cmtb + cross)
        else:
            assert torch.equal(cross, pre_ln)
        # post_ln = the stage LayerNorm of pre_ln
        normed = [
            (encs[0] if len(encs) == 1 else encs[j]).stage_norm(s, tj)
            for j, tj in enumerate(_tokens(pre_ln).chunk(P))
        ]
        torch.testing.assert_close(_tokens(post), torch.cat(normed))
        prev = post.reshape(P * B, C, h, w)


@torch.inference_mode()
def test_single_modality_has_no_cross_term() -> None:
    model = _tiny(["rgb"])
    out = model.encode([torch.randn(1, 3, 64, 64)], return_intermediates=True)
    assert out["cross"] == [None] * 4
    for a, b in zip(out["pre_cmtb"], out["pre_ln"], strict=True):
        assert torch.equal(a, b)  # no CMTB: f' is the pre-LN stream
    r = modality_contributions(model, [([torch.randn(3, 64, 64)], None)], progress=False)
    assert r["cross_ratio"] is None and set(r["norms"]) == {"post_ln", "pre_ln", "pre_cmtb"}
    assert set(r["fused"]) == {"mean"} and len(r["definitions"]) == 6  # no leave-one-out with one
    for sec in r["definitions"].values():
        assert all(v == pytest.approx(100.0, abs=1e-4) for v in sec["last_stage"].values())


def test_equiseg_contributions_norms_and_ratio() -> None:
    torch.manual_seed(1)
    model = _tiny(MODS[:3])
    x = [torch.randn(3, 64, 64) for _ in range(3)]
    r = modality_contributions(model, [(x, None)], progress=False)
    with torch.inference_mode():
        out = model.encode([t.unsqueeze(0) for t in x], return_intermediates=True)
    for kind in ("post_ln", "pre_ln", "pre_cmtb", "cross"):
        want = rms_norms(out[kind][3])[:, 0].tolist()
        np.testing.assert_allclose([r["norms"][kind]["last_stage"][m] for m in MODS[:3]], want, rtol=1e-5)
    ratio = (rms_norms(out["cross"][3]) / rms_norms(out["pre_cmtb"][3]))[:, 0].tolist()
    np.testing.assert_allclose([r["cross_ratio"]["last_stage"][m] for m in MODS[:3]], ratio, rtol=1e-5)
    sample, _ = stage_similarities(out["pre_ln"][2], fused="others")
    np.testing.assert_allclose(
        [r["definitions"]["pre_ln/others/sample"]["per_stage"]["stage3"][m] for m in MODS[:3]],
        100 * sample[:, 0].numpy(),
        rtol=1e-5,
    )


def test_peers_get_post_ln_rows_only() -> None:
    x = [torch.randn(3, 64, 64) for _ in range(2)]
    peer = equiseg.create_model("cmnext_b0", num_classes=5, modalities=["rgb", "depth"], **TINY_KW).eval()
    assert peer.has_modality_features and not getattr(peer, "has_intermediate_features", False)
    r = modality_contributions(peer, [(x, None)], progress=False)
    assert r["intermediates"] is False and r["cross_ratio"] is None
    assert list(r["definitions"]) == [
        "post_ln/mean/sample",
        "post_ln/mean/pixel",
        "post_ln/others/sample",
        "post_ln/others/pixel",
    ]
    assert list(r["features"]) == ["post_ln"] and "encode output" in r["features"]["post_ln"]
    assert set(r["norms"]) == {"post_ln"} and r["similarity"] == r["definitions"][HEADLINE]
    with torch.inference_mode():
        feats = peer.encode([t.unsqueeze(0) for t in x])
    sample, _ = stage_similarities(feats[3], fused="others")  # P = 2: the pairwise cosine, symmetric
    got = r["definitions"]["post_ln/others/sample"]["last_stage"]
    np.testing.assert_allclose([got["rgb"], got["depth"]], 100 * sample[:, 0].numpy(), rtol=1e-5)
    assert got["rgb"] == pytest.approx(got["depth"], abs=1e-4)
    md = analysis_markdown(r)
    assert "only those rows are reported" in md and "pre_ln" not in md and "RMS(f_c)" not in md

    # the SegFormer baseline is EQUISeg without a CMTB: every feature kind, f' = pre-LN, no f_c
    seg = equiseg.create_model("segformer_b0", num_classes=5, modalities=["rgb", "depth"], **TINY_KW)
    r = modality_contributions(seg, [(x, None)], progress=False)
    assert r["intermediates"] is True and r["cross_ratio"] is None and "cross" not in r["norms"]
    assert r["definitions"]["pre_ln/mean/sample"] == r["definitions"]["pre_cmtb/mean/sample"]


def test_reports(tmp_path: Path) -> None:
    data = [([torch.randn(3, 16, 16) for _ in range(2)], torch.zeros(16, 16, dtype=torch.long))]
    r = modality_contributions(FeatureStub(), data, progress=False)
    paths = write_analysis(r, tmp_path / "a")
    assert json.loads(paths["json"].read_text())["similarity"] == r["similarity"]
    md = paths["markdown"].read_text()
    assert "| Stage | a | b |" in md and "| **Last stage (Tab. 3)** |" in md and "analysis.png" in md
    assert md.count("| Stage 1 |") == 2  # the headline and its per-pixel variant
    assert "| **post_ln/mean/sample** (headline) |" in md and "| post_ln/others/pixel |" in md
    assert "| post_ln | stage 1 |" in md and "pre_cmtb" not in md.split("## Every definition")[1]
    assert paths["chart"].stat().st_size > 0
    section = analysis_section(r, tmp_path / "report")
    assert section.startswith("## Modality contributions") and "](figures/modality_similarity.png)" in section
    assert (tmp_path / "report" / "figures" / "modality_similarity.png").is_file()
    assert "`post_ln/mean/sample`" in section

    # every definition, norms and |f_c|/|f'| from the constructed features
    r = modality_contributions(IntermediateStub(), [([torch.zeros(3, 4, 4)] * 3, None)], progress=False)
    paths = write_analysis(r, tmp_path / "b")
    back = json.loads(paths["json"].read_text())
    assert back["definitions"] == r["definitions"] and back["cross_ratio"] == r["cross_ratio"]
    md = paths["markdown"].read_text()
    # the definitions table: a's orthogonal post-LN row (0 %) and c's 100 % pre-CMTB row
    assert "| **post_ln/mean/sample** (headline) | post_ln | mean | sample | **0.00** |" in md
    assert "| pre_cmtb/mean/sample | pre_cmtb | mean | sample | 70.71 | 70.71 | 100.00 |" in md
    assert "| f_c (cross) | stage 4 | 2.828 | 2.828 | 6 |" in md  # RMS (1/√2, 1/√2, 1.5) × 4
    assert "| stage 1 | 1 | 1 | 3 |" in md  # |f_c|/|f'| = k


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
    printed = capsys.readouterr().out
    assert "Event" in printed and "definition: post_ln/mean/sample" in printed
    assert set(r["definitions"]) >= {"pre_ln/others/pixel", "pre_cmtb/mean/sample"} and r["cross_ratio"]
    assert (out / "analysis.md").is_file() and (out / "analysis.png").is_file()
    # the checkpoint's modalities must match the config's
    rc = main(
        ["--quiet", "analyze", str(cfg), "--checkpoint", str(ckpt), "--set", "data.modalities=[rgb,depth]"]
    )
    assert rc == 2 and "modalities" in capsys.readouterr().err
