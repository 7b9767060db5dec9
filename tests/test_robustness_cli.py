"""``equiseg robustness`` end to end on a tiny trained checkpoint, and the robustness figures/report
helpers (charts, ``report.md``, the demo's report section)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from study_utils import train_tiny

from equiseg.cli import main
from equiseg.reports.robustness import (
    robustness_charts,
    robustness_section,
    short_names,
    write_robustness_report,
)
from equiseg.robustness import run_benchmark

MODS = ["rgb", "depth", "event", "lidar"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, Path]:
    return train_tiny(tmp_path_factory.mktemp("robustness_cli"))


def _stub(inputs):
    """Perfect (class 1 everywhere) when RGB is present and non-zero, class 0 otherwise."""
    x = inputs[0]
    good = x is not None and bool(x.abs().sum() > 0)
    logits = torch.zeros(x.shape[0] if x is not None else 1, 2, 32, 32)
    logits[:, 1 if good else 0] = 1.0
    return logits


@pytest.fixture(scope="module")
def stub_result() -> dict:
    samples = [([torch.randn(3, 32, 32) for _ in range(3)], torch.ones(32, 32, dtype=torch.long))]
    return run_benchmark(
        _stub,
        samples,
        rmm_rates=(0.5,),
        progress=False,
        modality_names=["rgb", "depth", "event"],
        convention="present",
    )


def test_robustness_command(tiny_run, tmp_path: Path, capsys) -> None:
    cfg, ckpt = tiny_run
    out = tmp_path / "rob"
    argv = [
        "--quiet",
        "robustness",
        str(cfg),
        "--checkpoint",
        str(ckpt),
        "--tests",
        "emm,nm",
        "--out",
        str(out),
        "--seed",
        "3",
        "--max-samples",
        "2",
        "--model-aware-missing",
        "--variant-batch-size",
        "4",
    ]
    assert main(argv) == 0
    assert "emm_avg" in capsys.readouterr().out
    for name in (
        "robustness.json",
        "robustness.md",
        "report.md",
        "robustness_missing.png",
        "robustness_noise.png",
        "report.html",
    ):
        assert (out / name).is_file(), name
    r = json.loads((out / "robustness.json").read_text())
    assert r["num_samples"] == 2 and r["seed"] == 3 and r["modalities"] == MODS and r["split"] == "val"
    assert r["tests"] == ["emm", "nm"] and "rmm" not in r and len(r["emm"]["combinations"]) == 15
    assert len(r["emm_none"]["combinations"]) == 15
    assert {"clean", "emm_avg", "emm_p0.1", "nm_low", "nm_mid", "nm_high", "mean"} <= set(r["summary"])
    assert r["summary"]["mean"] is None  # RMM not run: the robustness score is undefined
    report = (out / "report.md").read_text()
    assert "](robustness_missing.png)" in report and "](robustness_noise.png)" in report
    assert "### Summary" in report and "| rgb+depth+event+lidar | – |" in report
    assert Image.open(out / "robustness_missing.png").size[0] > 600  # 15 groups × 3 series
    html = (out / "report.html").read_text()
    assert html.count('<img src="data:image/png;base64,') == 2 and "<th>Present</th>" in html

    # same seed -> same numbers (the RMM/NM corruptions are seeded); the default out dir is used
    assert main(argv[:7] + argv[9:]) == 0
    again = json.loads((ckpt.parent / "robustness_val" / "robustness.json").read_text())
    assert again["nm"] == r["nm"] and again["emm"] == r["emm"]


def test_robustness_command_errors(tiny_run, capsys) -> None:
    cfg, ckpt = tiny_run
    assert main(["--quiet", "robustness", str(cfg), "--checkpoint", str(ckpt), "--tests", "emm,xyz"]) == 2
    assert "unknown robustness test" in capsys.readouterr().err
    assert main(["--quiet", "robustness", str(cfg), "--checkpoint", str(ckpt) + ".missing"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_charts_follow_the_tests_run(stub_result, tmp_path: Path) -> None:
    paths = robustness_charts(stub_result, tmp_path)
    assert set(paths) == {"missing", "noise"} and all(p.is_file() for p in paths.values())
    emm_only = {k: v for k, v in stub_result.items() if k not in ("rmm", "nm")}
    assert set(robustness_charts(emm_only, tmp_path / "e")) == {"missing"}
    nm_only = {k: v for k, v in stub_result.items() if k not in ("rmm", "emm")}
    assert set(robustness_charts(nm_only, tmp_path / "n")) == {"noise"}
    assert short_names(["rgb", "depth", "event"]) == {"rgb": "R", "depth": "D", "event": "E"}
    assert short_names(["rgb", "radar"]) == {"rgb": "rgb", "radar": "radar"}  # initials clash


def test_report_and_section(stub_result, tmp_path: Path) -> None:
    # the stub is perfect (100) exactly when RGB is present, else 0: 4 of the 7 EMM combinations
    assert stub_result["emm"]["avg"] == pytest.approx(100 * 4 / 7)
    path = write_robustness_report(stub_result, tmp_path / "r", title="Stub")
    text = path.read_text()
    assert text.startswith("# Stub") and "(robustness.json)" in text and "](robustness_missing.png)" in text
    section = robustness_section(stub_result, tmp_path / "demo")
    assert section.startswith("## Robustness under sensor failures") and section.endswith("\n")
    assert "\n### Summary" in section and "\n# " not in section  # one level below the section heading
    assert "](figures/robustness_missing.png)" in section and "](figures/robustness_noise.png)" in section
    assert (tmp_path / "demo" / "figures" / "robustness_missing.png").is_file()
    assert f"{100 * 4 / 7:.2f}" in section


def test_robustness_predicts_as_eval_does_and_analyze_refuses_what_it_cannot(tiny_run, tmp_path, capsys):
    """Sliding windows and flip: robustness's clean mIoU is eval's under the same settings, and every
    output says which inference ran; analyze (features of one whole-image forward) refuses them by
    name and writes nothing."""
    import equiseg

    cfg, ckpt = tiny_run
    slide = ["eval.mode=slide", "eval.crop_size=[32,32]", "eval.stride=[16,16]", "eval.flip=true"]
    ev = equiseg.evaluate(cfg, ckpt, slide, progress=False, max_samples=2)
    whole = equiseg.evaluate(cfg, ckpt, progress=False, max_samples=2)
    assert ev["mIoU"] != whole["mIoU"]  # the settings matter on this checkpoint
    expect = {"mode": "slide", "scales": [1.0], "flip": True, "crop_size": [32, 32], "stride": [16, 16]}
    assert ev["inference"] == expect and whole["inference"] == {
        "mode": "whole",
        "scales": [1.0],
        "flip": False,
    }
    out = tmp_path / "rob"
    argv = [
        "--quiet",
        "robustness",
        str(cfg),
        "--checkpoint",
        str(ckpt),
        "--tests",
        "emm",
        "--max-samples",
        "2",
    ]
    assert main([*argv, "--out", str(out), "--set", *slide]) == 0
    r = json.loads((out / "robustness.json").read_text())
    assert r["summary"]["clean"] == pytest.approx(ev["mIoU"]) and r["inference"] == expect
    phrase = "sliding windows 32×32, stride 16×16, scale 1, horizontal flip"
    assert phrase in (out / "robustness.md").read_text() and phrase in (out / "report.md").read_text()
    # analyze cannot run windows or flips: refused by name, before anything is written
    ana = tmp_path / "ana"
    base = [
        "--quiet",
        "analyze",
        str(cfg),
        "--checkpoint",
        str(ckpt),
        "--max-samples",
        "1",
        "--out",
        str(ana),
    ]
    assert main([*base, "--set", *slide]) == 2
    err = capsys.readouterr().err
    assert "eval.mode=slide" in err and "eval.flip=true" in err and not ana.exists()
    assert main(base) == 0
    assert json.loads((ana / "analysis.json").read_text())["inference"]["mode"] == "whole"
    assert "whole image, scale 1" in (ana / "analysis.md").read_text()
    # an empty --tests is a mistake, not "the clean pass only"
    assert main([*argv[:-4], "--tests", ""]) == 2
    assert "--tests: no robustness test given" in capsys.readouterr().err
