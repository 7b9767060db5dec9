"""The split a scoring command scores: ``--split`` on ``eval``, ``robustness`` and ``analyze`` (default
``data.val_split``), checked against the data set's splits (one line naming the flag or key), and named
in every JSON, Markdown table and HTML report they write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from study_utils import train_tiny

import equiseg
from equiseg.cli import main
from equiseg.config import DataConfig
from equiseg.data.splits import check_split, splits_on_disk


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, Path]:
    """A checkpoint trained for one iteration on synthetic train/val data, and a 2-sample test split."""
    from equiseg.data.synth import generate

    tmp = tmp_path_factory.mktemp("split")
    cfg, ckpt = train_tiny(tmp)
    generate(tmp / "data", layout="deliver", splits={"test": 2}, size=(64, 64), seed=1, progress=False)
    return cfg, ckpt


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if not ln.startswith("note: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"equiseg {command}: error: "), err
    return lines[0]


def _run(capsys, *argv: str) -> str:
    assert main(["--quiet", *argv]) == 0
    return capsys.readouterr().out


def test_eval_names_the_split(tiny_run, capsys) -> None:
    cfg, ckpt = tiny_run
    out = _run(capsys, "eval", str(cfg), "--checkpoint", str(ckpt), "--split", "test")
    folder = ckpt.parent / "eval_test"  # the default output folder names the split too
    assert "test split, 2 samples" in out and str(folder) in out
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["num_samples"] == 2
    md = (folder / "metrics.md").read_text()
    assert md.startswith("## equiseg_b0 on deliver, test split")
    assert "one confusion matrix over the test split" in md
    assert "| split | mIoU | aAcc | mAcc | samples |" in md and "\n| test | " in md


def test_eval_default_split_is_the_configs(tiny_run, tmp_path, capsys) -> None:
    cfg, ckpt = tiny_run
    out = tmp_path / "ev"
    args = ["eval", str(cfg), "--checkpoint", str(ckpt), "--out", str(out), "--max-samples", "1"]
    _run(capsys, *args, "--set", "data.val_split=test")
    assert json.loads((out / "metrics.json").read_text())["split"] == "test"
    _run(capsys, *args)
    assert json.loads((out / "metrics.json").read_text())["split"] == "val"
    assert "\n| val | " in (out / "metrics.md").read_text()


def test_robustness_names_the_split(tiny_run, tmp_path, capsys) -> None:
    cfg, ckpt = tiny_run
    out = tmp_path / "rob"
    argv = ["robustness", str(cfg), "--checkpoint", str(ckpt), "--tests", "emm", "--max-samples", "1"]
    printed = _run(capsys, *argv, "--split", "test", "--out", str(out))
    assert "1 samples of the test split" in printed
    assert json.loads((out / "robustness.json").read_text())["split"] == "test"
    for name in ("robustness.md", "report.md", "report.html"):
        assert "on 1 samples of the test split" in (out / name).read_text(), name
    assert "<h1>Robustness of equiseg_b0 on deliver, test split</h1>" in (out / "report.html").read_text()


def test_analyze_names_the_split(tiny_run, tmp_path, capsys) -> None:
    cfg, ckpt = tiny_run
    out = tmp_path / "ana"
    argv = ["analyze", str(cfg), "--checkpoint", str(ckpt), "--max-samples", "1", "--split", "test"]
    printed = _run(capsys, *argv, "--out", str(out))
    assert "1 samples of the test split" in printed
    assert json.loads((out / "analysis.json").read_text())["split"] == "test"
    md = (out / "analysis.md").read_text()
    assert md.startswith("# Modality contributions: equiseg_b0 on the test split")
    assert "(1 samples of the test split)" in md


@pytest.mark.parametrize("command", ["eval", "robustness", "analyze"])
def test_an_unknown_split_is_one_line_naming_the_flag(tiny_run, tmp_path, capsys, command) -> None:
    cfg, ckpt = tiny_run
    base = [command, str(cfg), "--checkpoint", str(ckpt), "--out", str(tmp_path / "out")]
    assert main(["--quiet", *base, "--split", "tset"]) == 2
    err = _one_line_error(capsys, command)
    assert err.endswith("--split: unknown DeLiVER split 'tset'; choose from train, val, test"), err
    assert main(["--quiet", *base, "--set", "data.val_split=vall"]) == 2
    assert "error: data.val_split: unknown DeLiVER split 'vall'" in _one_line_error(capsys, command)
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_a_split_not_on_disk_names_the_splits_there(tiny_run, tmp_path, capsys) -> None:
    cfg, ckpt = tiny_run
    data = tmp_path / "data"
    for split in ("train", "val"):  # DeLiVER's split level: img/<condition>/<split>/
        (data / "img" / "cloud" / split).mkdir(parents=True)
    args = ["eval", str(cfg), "--checkpoint", str(ckpt), "--set", f"data.root={data}", "--split", "test"]
    assert main(["--quiet", *args]) == 2
    err = _one_line_error(capsys, "eval")
    assert err.endswith(f"--split: no 'test' split in DeLiVER under {data}; splits found: train, val"), err


def test_python_api_checks_and_records_the_split(tiny_run) -> None:
    cfg, ckpt = tiny_run
    with pytest.raises(ValueError, match=r"^split: unknown DeLiVER split 'tset'"):
        equiseg.evaluate(cfg, ckpt, split="tset", progress=False)
    r = equiseg.evaluate(cfg, ckpt, split="test", progress=False, max_samples=1)
    assert r["split"] == "test"


def test_check_split_muses_and_folder_data_sets(tmp_path) -> None:
    muses = tmp_path / "muses"
    (muses / "frame_camera" / "train" / "clear" / "day").mkdir(parents=True)
    data = DataConfig(dataset="muses", root=str(muses), modalities=("frame_camera",))
    assert check_split(data, "train", "--split") == "train"
    with pytest.raises(ValueError, match=r"^--split: no 'val' split in MUSES under .*; splits found: train$"):
        check_split(data, "val", "--split")
    with pytest.raises(ValueError, match=r"^--split: unknown MUSES split 'dev'"):
        check_split(data, "dev", "--split")

    root = tmp_path / "toy"
    for split in ("fold1", "fold2"):
        (root / "rgb" / split / "day").mkdir(parents=True)
    spec = root / "toy.yaml"
    spec.write_text('classes: [a, b]\nmodalities:\n  rgb:\n    path: "rgb/{split}/{time}/{key}.png"\n')
    data = DataConfig(dataset="folder", root=str(root), spec=str(spec), modalities=("rgb",))
    assert check_split(data, "fold2") == "fold2"  # a folder data set's splits are its folders
    with pytest.raises(
        ValueError, match=r"^split: no 'val' split in folder data set 'folder' .* fold1, fold2$"
    ):
        check_split(data, "val")

    spec.write_text('classes: [a]\nsplit: all\nmodalities:\n  rgb:\n    path: "rgb/{key}.png"\n')
    assert splits_on_disk(equiseg.data.DatasetSpec.load(spec), root) is None
    assert check_split(data, "all") == "all"
    with pytest.raises(ValueError, match=r"^split: folder data set 'folder' has one split, 'all'"):
        check_split(data, "val")
