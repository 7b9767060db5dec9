"""benchmarks/compare_references.py: the plumbing only (a tiny cell in a fresh process, the JSON it writes,
the target arithmetic); never its timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import compare_references as cr  # noqa: E402

CELL_KEYS = {
    "impl", "model", "n", "params_m", "gflops", "gflops_own", "fwd_s", "step_s", "peak_rss_mb",
    "fwd_gflops_s", "step_gflops_s", "matmul_gflops_s", "fwd_pct_mm", "step_pct_mm", "threads", "torch",
    "allocator",
}  # fmt: skip


def test_tiny_run_writes_the_report(tmp_path):
    out = tmp_path / "report.json"
    argv = (
        "--skip-public --models segformer_b0 --size 64 --batch 1 --repeats 1 --threads 1 --matmul-size 128 "
        "--process-repeats 2"
    )
    r = subprocess.run(
        [sys.executable, str(BENCH / "compare_references.py"), *argv.split(), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    assert set(report) >= {"date", "command", "setting", "machine", "cells", "targets"}
    (cell,) = report["cells"]
    assert CELL_KEYS <= set(cell)
    assert (cell["impl"], cell["model"], cell["n"], cell["threads"]) == ("ours", "segformer_b0", 4, 1)
    assert cell["allocator"] == ("retain" if allocator_available() else "system")
    assert cell["gflops"] == cell["gflops_own"] > 0 and cell["fwd_s"] > 0 and cell["peak_rss_mb"] > 0
    # two fresh processes; the one with the fastest train step is the row
    assert len(cell["process_runs"]) == 2 and report["process_repeats"] == 2
    assert cell["step_s"] == min(r["step_s"] for r in cell["process_runs"])
    assert "of 2 fresh process(es), the one with the fastest train step" in r.stdout
    assert set(report["machine"]["flags"]) == set(cr.CPU_FLAGS)
    assert [t["result"] for t in report["targets"]] == ["n/a"] * len(cr.TARGETS)
    assert f"| ours | segformer_b0 | {cell['allocator']} | 4 |" in r.stdout and "## Targets" in r.stdout
    assert cr.render(report) in r.stdout  # --render reprints exactly this


def allocator_available() -> bool:
    from equiseg.engine.allocator import _glibc

    return _glibc() is not None


def _cell(impl, model, fwd_s, step_s, step_pct_mm=0.0, **kw):
    return dict(impl=impl, model=model, fwd_s=fwd_s, step_s=step_s, step_pct_mm=step_pct_mm, **kw)


def test_targets_are_ratios_of_the_right_cells():
    cells = [
        _cell("ours", "equiseg_b0", 1.0, 2.0, step_pct_mm=45.0),
        _cell("ours", "stitchfusion_b0", 0.1, 0.1),  # ours of a peer: not a target's denominator
        _cell("public", "stitchfusion_b0", 2.0, 4.0),  # fwd 0.5×, step 0.5×
        _cell("public", "cmnext_b0", 1.0, 2.5),  # step 0.8× > 0.75×
    ]
    setting = dict(cr.TARGET_SETTING, repeats=3, device="cpu")
    got = cr.check_targets(cells, setting)
    assert [round(t["value"], 3) for t in got] == [0.5, 0.8, 0.5, 45.0]
    assert [t["result"] for t in got] == ["pass", "fail", "pass", "pass"]
    assert not any(t["indicative"] for t in got)
    assert all(t["indicative"] for t in cr.check_targets(cells, dict(setting, size=64)))


def test_targets_against_each_public_allocator():
    # ours runs under retain (its system twin is not a numerator); the public code under both
    cells = [
        _cell("ours", "equiseg_b0", 1.0, 2.0, step_pct_mm=30.0, allocator="system"),
        _cell("ours", "equiseg_b0", 0.5, 1.0, step_pct_mm=45.0, allocator="retain"),
        _cell("public", "stitchfusion_b0", 2.0, 4.0, allocator="system"),
        _cell("public", "stitchfusion_b0", 1.0, 1.25, allocator="retain"),
        _cell("public", "cmnext_b0", 1.0, 2.0, allocator="system"),
    ]
    got = cr.check_targets(cells, dict(cr.TARGET_SETTING, repeats=3, device="cpu"))
    rows = [
        (t["target"].split(":")[0], t.get("public_allocator"), round(t["value"], 3), t["result"]) for t in got
    ]
    assert rows == [
        ("train step", "system", 0.25, "pass"),
        ("train step", "retain", 0.8, "fail"),
        ("train step", "system", 0.5, "pass"),  # CMNeXt: run under system only
        ("forward", "system", 0.25, "pass"),
        ("forward", "retain", 0.5, "pass"),
        ("train step", None, 45.0, "pass"),
    ]
    assert {t["allocator"] for t in got} == {"retain"}
    text = cr.render(
        dict(
            setting=dict(cr.TARGET_SETTING, repeats=3, device="cpu"),
            machine=dict(cpu="x", cores=2, flags={}, torch="t", torch_cpu_capability="c", threads=2),
            cells=[],
            targets=got,
            date="d",
            command="c",
        )
    )
    assert (
        "| train step: EQUISeg-B0 (ours) / StitchFusion-B0 (public) | retain | 0.80× | ≤ 0.6× | fail |"
        in text
    )


def test_allocator_lists_are_checked():
    with pytest.raises(SystemExit):
        cr.parse_args(["--public-allocators", "system,jemalloc"])
    cells = cr.plan(
        cr.parse_args(["--models", "segformer_b0", "--skip-public", "--ours-allocators", "retain,system"])
    )
    assert [c.allocator for c in cells] == ["retain", "system"]


def test_public_model_needs_its_checkout_or_skip_public():
    with pytest.raises(SystemExit, match="--cmnext-root"):
        cr.plan(cr.parse_args(["--models", "cmnext_b0"]))
    cells = cr.plan(cr.parse_args(["--models", "cmnext_b0,cmx_b0", "--skip-public"]))
    assert [(c.impl, c.model, len(c.modalities)) for c in cells] == [
        ("ours", "cmnext_b0", 4),
        ("ours", "cmx_b0", 2),
    ]
