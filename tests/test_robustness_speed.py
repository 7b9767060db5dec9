"""The reference-structure loop of ``benchmarks/robustness_speed.py`` (one pass over the split per variant,
batch 4) gives the numbers of the single-pass :func:`run_benchmark`, and the benchmark's reuse of
identical variants and its variant batching change no number.

Where a batch size other than 1 is involved the model is wrapped to run row by row: a real network's
kernels may round differently at another batch size (logits ~1e-5 apart), which on a near-tied pixel
flips an arg-max; that is measured by the benchmark script, not asserted here. These tests check the
loops themselves: per-sample seeds from the split index, the smaller last batch, the accumulation.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from model_utils import tiny_model

from equiseg.robustness import build_variants, run_benchmark
from equiseg.robustness.benchmark import Variant, _canonical, _chunks, assemble_result

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import robustness_speed as rs  # noqa: E402

MODS = ["rgb", "depth", "event"]
K = 5
SEED = 7
RATES = (0.5,)
COMMON = dict(seed=SEED, rmm_rates=RATES, convention="reference", ps=rs.PS, nm_levels=rs.LEVELS)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return tiny_model(3, num_classes=K).eval()


@pytest.fixture(scope="module")
def samples() -> list[tuple[list[torch.Tensor], torch.Tensor]]:
    """5 samples of 32×32: with batch 4 the reference loop's last batch holds one sample."""
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(5):
        inputs = [torch.randn(3, 32, 32, generator=g) for _ in MODS]
        label = torch.randint(0, K, (32, 32), generator=g)
        label[:3] = 255
        out.append((inputs, label))
    return out


def per_row(model):
    """``model`` made batch-invariant: each batch row is its own batch-1 call."""

    def run(xs):
        return torch.cat([model([x[i : i + 1] for x in xs]) for i in range(xs[0].shape[0])])

    return run


def _reference(model, samples, batch_size: int, **kw) -> dict:
    variants = build_variants(len(MODS), ("emm", "rmm", "nm"), RATES, rs.LEVELS)
    metrics = rs.reference_loop(
        model, samples, variants, num_classes=K, seed=SEED, batch_size=batch_size, event_index=2, **kw
    )
    return assemble_result(
        metrics,
        num_samples=len(samples),
        num_classes=K,
        names=MODS,
        event_index=2,
        tests=("emm", "rmm", "nm"),
        model_aware_missing=False,
        model=model,
        model_name=None,
        **COMMON,
    )


def _ours(model, samples, **kw) -> dict:
    return run_benchmark(model, samples, modality_names=MODS, progress=False, **COMMON, **kw)


@pytest.mark.parametrize("batch_size", [1, 4])
def test_reference_loop_equals_run_benchmark(model, samples, batch_size) -> None:
    timings: dict[str, float] = {}
    ref = _reference(per_row(model), samples, batch_size, timings=timings)
    ours = _ours(model, samples)
    assert rs.numbers(ref) == rs.numbers(ours)  # every mIoU/aAcc/mAcc, exactly
    assert rs.max_abs_diff(rs.numbers(ref), rs.numbers(ours)) == 0.0
    assert ref["summary"] == ours["summary"] and ref["summary"]["mean"] is not None
    assert set(timings) == {"load", "corrupt", "forward", "metrics"} and timings["forward"] > 0
    # the corruptions do something to this untrained model: not every pass is the clean one
    assert len({c["mIoU"] for c in ours["rmm"]["0.5"]["combinations"]}) > 1


def test_variant_batching_changes_no_number(model, samples) -> None:
    plain = rs.numbers(_ours(model, samples))
    assert rs.numbers(_ours(per_row(model), samples, variant_batch_size=6)) == plain


def test_identical_variants_are_computed_once_with_the_same_numbers(model, samples) -> None:
    calls = []

    def counted(xs):
        calls.append(xs[0].shape[0])
        return model(xs)

    kw = dict(rmm_rates=(0.0, 0.5, 1.0))
    samples = samples[:2]
    reused = run_benchmark(counted, samples, modality_names=MODS, progress=False, seed=SEED, **kw)
    n_reused = len(calls)
    calls.clear()
    plain = run_benchmark(
        counted, samples, modality_names=MODS, progress=False, seed=SEED, reuse_identical=False, **kw
    )
    assert reused == plain  # the whole result, bit for bit
    # per sample: clean + 6 EMM + 6 RMM(0.5) + 3 NM, vs + 6 RMM(0) + 6 RMM(1)
    assert (n_reused, len(calls)) == (2 * 16, 2 * 28)
    assert [c["mIoU"] for c in plain["rmm"]["1"]["combinations"]] == [
        c["mIoU"] for c in plain["emm"]["combinations"]
    ]


def test_canonical_variants_and_chunks() -> None:
    assert _canonical(Variant("rmm", (0, 2), rate=0.0)) == Variant("clean")
    assert _canonical(Variant("rmm", (0, 2), rate=1.0)) == Variant("emm", (0, 2))
    v = Variant("rmm", (1,), rate=0.5)
    assert _canonical(v) is v and _canonical(Variant("nm", level="low")) == Variant("nm", level="low")
    items = build_variants(4)
    assert len(items) == 60
    for size, lengths in ((1, [1] * 60), (8, [7, 8, 7, 8, 7, 8, 7, 8]), (60, [60]), (100, [60])):
        chunks = _chunks(items, size)
        assert [len(c) for c in chunks] == lengths
        assert [v for c in chunks for v in c] == items
    assert _chunks([], 4) == []


def test_measure_reports_times_and_identity(model, samples) -> None:
    report = rs.measure(
        per_row(model),
        samples[:2],
        modalities=MODS,
        num_classes=K,
        class_names=None,
        ignore_index=255,
        convention="reference",
        device=torch.device("cpu"),
        variant_batch_sizes=(1, 8),
        rmm_rates=(0.5,),
        batch_size=4,
        repeat_full=("emm", "rmm"),
        progress=False,
    )
    ref, v1, v8 = report["runs"]
    assert "18 passes" in ref["name"]  # 1 + 6 + 6 + 3 distinct, + the EMM and RMM full passes again
    assert v1["max_diff_vs_reference"] == 0.0 and v1["summary_identical_to_reference"] is True
    assert v8["max_diff_vs_batch1"] == 0.0 and v8["speedup"] > 0
    assert report["variants"] == 16 and report["num_samples"] == 2
    table = rs.markdown(report)
    assert table.count("| run_benchmark") == 2 and "Reference loop time by phase" in table
