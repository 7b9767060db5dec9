"""Protocol arithmetic of the robustness benchmark (docs/design.md §6) against a stub model with known outputs."""

from __future__ import annotations

import json

import pytest
import torch

from equiseg.robustness import build_summary, robustness_score, run_benchmark, table1_markdown, weighted_miou

K = 3  # classes

# Two 4×4 samples; each input modality encodes the label as value label + 1 (so it is non-zero).
#   sample A: 8 px of class 0, 4 of class 1, 4 of class 2; sample B the same counts, rearranged.
#   Over the split: GT counts 16 / 8 / 8 (32 px).
LABEL_A = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1], [2, 2, 2, 2]])
LABEL_B = torch.tensor([[2, 1, 0, 0], [2, 1, 0, 0], [2, 1, 0, 0], [2, 1, 0, 0]])


def _dataset(n: int) -> list[tuple[list[torch.Tensor], torch.Tensor]]:
    return [
        ([(lab + 1).float().expand(3, 4, 4).clone() for _ in range(n)], lab) for lab in (LABEL_A, LABEL_B)
    ]


def stub_model(inputs: list[torch.Tensor | None]) -> torch.Tensor:
    """Per batch row: RGB (index 0) present -> the exact label; else depth (index 1) present -> class 0
    where the label is 0 and class 1 elsewhere; else (event only) -> class 0 everywhere. A modality is
    present when it is not None and not all zero. The label is read back from the present input."""
    ref = next(x for x in inputs if x is not None)
    b, _, h, w = ref.shape

    def present(x: torch.Tensor | None) -> torch.Tensor:
        return torch.zeros(b, dtype=torch.bool) if x is None else x.flatten(1).abs().amax(1) > 0

    def decode(x: torch.Tensor | None) -> torch.Tensor:
        if x is None:
            return torch.zeros(b, h, w, dtype=torch.long)
        return (x[:, 0].round().long() - 1).clamp(0, K - 1)

    rgb, depth = inputs[0], inputs[1] if len(inputs) > 1 else None
    pred = torch.zeros(b, h, w, dtype=torch.long)
    pred = torch.where(present(depth)[:, None, None], (decode(depth) != 0).long(), pred)
    pred = torch.where(present(rgb)[:, None, None], decode(rgb), pred)
    return torch.nn.functional.one_hot(pred, K).permute(0, 3, 1, 2).float()


# mIoU of the three stub behaviours over the split (reference convention, K = 3):
PERFECT = 100.0
# depth rule: class 0: TP 16, union 16 -> 1; class 1: TP 8, GT 8, PD 16 -> 8/16; class 2: TP 0 -> 0
DEPTH_ONLY = (1 + 0.5 + 0) / 3 * 100  # 50.0
# all class 0: class 0: TP 16, union 32 -> 0.5; classes 1, 2: 0
EVENT_ONLY = (0.5 + 0 + 0) / 3 * 100  # 16.667


def _run(n: int, **kw) -> dict:
    names = ["rgb", "depth", "event"][:n]
    return run_benchmark(stub_model, _dataset(n), modality_names=names, progress=False, num_classes=K, **kw)


def test_emm_arithmetic_two_modalities() -> None:
    res = _run(2, tests=("emm",), model_aware_missing=True)
    combos = {c["name"]: c for c in res["emm"]["combinations"]}
    # present sets: rgb+depth (k=0), depth (rgb missing, k=1), rgb (depth missing, k=1)
    assert list(combos) == ["rgb+depth", "depth", "rgb"]
    assert combos["depth"]["missing"] == ["rgb"] and combos["depth"]["num_missing"] == 1
    assert combos["rgb+depth"]["mIoU"] == pytest.approx(PERFECT)
    assert combos["rgb"]["mIoU"] == pytest.approx(PERFECT)
    assert combos["depth"]["mIoU"] == pytest.approx(DEPTH_ONLY)
    # Avg = (100 + 50 + 100) / 3 = 83.333
    assert res["summary"]["emm_avg"] == pytest.approx(250 / 3)
    # EMM(p), N = 2: w0 = (1-p)^2, w1 = p(1-p)
    #   p = 0.1: (0.81·100 + 0.09·50 + 0.09·100) / (0.81 + 0.18) = 94.5 / 0.99 = 95.4545
    #   p = 0.2: (0.64·100 + 0.16·50 + 0.16·100) / 0.96 = 88 / 0.96 = 91.6667
    #   p = 0.05: (0.9025·100 + 0.0475·150) / 0.9975 = 97.375 / 0.9975 = 97.6190
    assert res["summary"]["emm_p0.1"] == pytest.approx(94.5 / 0.99)
    assert res["summary"]["emm_p0.2"] == pytest.approx(88 / 0.96)
    assert res["summary"]["emm_p0.05"] == pytest.approx(97.375 / 0.9975)
    assert res["summary"]["clean"] == pytest.approx(PERFECT)
    # the stub treats None like zeros, so the model-aware section matches EMM, labelled separately
    assert [c["mIoU"] for c in res["emm_none"]["combinations"]] == [c["mIoU"] for c in combos.values()]
    assert "not the benchmark protocol" in res["emm_none"]["note"]
    assert "emm_none_avg" not in res["summary"]
    assert res["summary"]["mean"] is None  # RMM and NM were not run


def test_emm_arithmetic_three_modalities() -> None:
    res = _run(3, tests=("emm",))
    got = {c["name"]: c["mIoU"] for c in res["emm"]["combinations"]}
    expected = {
        "rgb+depth+event": PERFECT,  # k = 0
        "depth+event": DEPTH_ONLY,  # rgb missing
        "rgb+event": PERFECT,  # depth missing
        "rgb+depth": PERFECT,  # event missing
        "event": EVENT_ONLY,  # rgb, depth missing
        "depth": DEPTH_ONLY,  # rgb, event missing
        "rgb": PERFECT,  # depth, event missing
    }
    assert list(got) == list(expected)
    assert got == pytest.approx(expected)
    # Avg = (4·100 + 2·50 + 16.667) / 7 = 73.8095
    assert res["summary"]["emm_avg"] == pytest.approx((400 + 100 + 50 / 3) / 7)
    # p = 0.1, N = 3: w0 = 0.729, w1 = 0.081, w2 = 0.009; Σw = 0.729 + 3·0.081 + 3·0.009 = 0.999
    #   Σ w·mIoU = 72.9 + 0.081·(50 + 100 + 100) + 0.009·(16.667 + 50 + 100) = 72.9 + 20.25 + 1.5 = 94.65
    assert res["summary"]["emm_p0.1"] == pytest.approx(94.65 / 0.999)
    assert weighted_miou(list(got.values()), [0, 1, 1, 1, 2, 2, 2], 3, 0.1) == pytest.approx(94.65 / 0.999)


def test_rmm_limits_and_variant_batching() -> None:
    # r = 0 leaves every modality intact (all passes = clean); r = 1 zeroes the "missing" ones entirely,
    # which is exactly EMM.
    res = _run(3, tests=("emm", "rmm"), rmm_rates=(0.0, 1.0))
    assert all(c["mIoU"] == pytest.approx(PERFECT) for c in res["rmm"]["0"]["combinations"])
    emm = [c["mIoU"] for c in res["emm"]["combinations"]]
    assert [c["mIoU"] for c in res["rmm"]["1"]["combinations"]] == pytest.approx(emm)
    assert res["summary"]["rmm_avg[1]"] == pytest.approx(res["summary"]["emm_avg"])
    assert res["summary"]["rmm_p0.1[0]"] == pytest.approx(PERFECT)
    # stacking several variants of a sample into one forward call changes nothing
    full = _run(3, rmm_rates=(0.5,), seed=3)
    batched = _run(3, rmm_rates=(0.5,), seed=3, variant_batch_size=5)
    assert batched["summary"] == full["summary"]


def test_same_seed_identical_other_seed_different() -> None:
    a, b, c = (_run(3, rmm_rates=(0.5,), seed=s) for s in (0, 0, 1))
    assert a == b
    assert a["summary"]["rmm_avg[0.5]"] != c["summary"]["rmm_avg[0.5]"]
    assert a["summary"]["nm_mid"] != c["summary"]["nm_mid"]
    # a test's numbers do not depend on which other tests run (per-variant generators)
    only = _run(3, tests=("rmm",), rmm_rates=(0.5,), seed=0)
    assert only["rmm"] == a["rmm"]


def test_robustness_score_matches_paper() -> None:
    deliver = robustness_score(67.90, 48.22, 65.75, 50.96, 64.64, 34.87, 19.13)
    muses = robustness_score(50.26, 35.63, 45.06, 38.61, 47.63, 20.47, 12.62)
    assert round(deliver, 2) == 50.21
    assert round(muses, 2) == 35.75


def test_summary_mean_uses_the_papers_seven_numbers() -> None:
    # paper's DeLiVER row; the decoy numbers at other p, r and the high noise level must not be used
    result = {
        "protocol": {"ps": [0.2, 0.1, 0.05]},
        "clean": {"mIoU": 67.90},
        "emm": {"avg": 48.22, "p0.2": 1.0, "p0.1": 65.75, "p0.05": 2.0},
        "rmm": {
            "0.25": {"avg": 3.0, "p0.2": 4.0, "p0.1": 5.0, "p0.05": 6.0},
            "0.5": {"avg": 50.96, "p0.2": 7.0, "p0.1": 64.64, "p0.05": 8.0},
        },
        "nm": {"low": {"mIoU": 34.87}, "mid": {"mIoU": 19.13}, "high": {"mIoU": 9.0}},
    }
    s = build_summary(result)
    assert round(s["mean"], 2) == 50.21
    assert s["rmm_avg[0.25]"] == 3.0 and s["rmm_p0.05[0.5]"] == 8.0 and s["nm_high"] == 9.0
    # and on a real run the mean is the score of the summary's own entries
    res = _run(2)
    sm = res["summary"]
    keys = ["clean", "emm_avg", "emm_p0.1", "rmm_avg[0.5]", "rmm_p0.1[0.5]", "nm_low", "nm_mid"]
    assert sm["mean"] == pytest.approx(robustness_score(*(sm[k] for k in keys)))
    for key in ("emm_p0.2", "emm_p0.05", "rmm_avg[0.25]", "rmm_p0.2[0.75]", "nm_high"):
        assert key in sm


def test_reports_written(tmp_path) -> None:
    res = _run(3, out_dir=tmp_path, model_name="Stub", model_aware_missing=True)
    data = json.loads((tmp_path / "robustness.json").read_text())
    assert data["summary"] == pytest.approx(res["summary"])
    assert data["convention"] == "reference" and data["modalities"] == ["rgb", "depth", "event"]
    md = (tmp_path / "robustness.md").read_text()
    header = (
        "| Model (#Params(M)) | mIoU | EMM (Avg) | EMM (p=0.1) | RMM (Avg) | RMM (p=0.1) "
        "| NM (low) | NM (mid) | Mean |"
    )
    assert header in md
    assert f"| Stub | {res['summary']['clean']:.2f} |" in md
    assert "| depth+event | rgb |" in md and "model-aware" in md and "convention **reference**" in md
    table = table1_markdown({"A": {"DeLiVER": res["summary"], "MUSES": {}}})
    assert "DeLiVER: mIoU" in table and "MUSES: mIoU" in table and table.count("–") == 8
