"""``equiseg compare`` end to end on a tiny data set: two models, two seeds, reuse, given checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from study_utils import tiny_runner_config

from equiseg.cli import main
from equiseg.tasks.compare import COLUMNS, model_run_config, run_compare

TINY = {"embed_dims": [8, 16, 40, 64], "depths": [1, 1, 1, 1], "decoder_dim": 16, "drop_path_rate": 0.0}


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[dict, Path]:
    from equiseg.data.synth import generate

    tmp = tmp_path_factory.mktemp("compare")
    generate(
        tmp / "data", layout="deliver", splits={"train": 4, "val": 2}, size=(64, 64), seed=0, progress=False
    )
    cfg = tiny_runner_config(tmp / "data", lambda_sgm=1.0)
    return cfg, tmp


def test_model_run_config_keeps_shared_keys_only_for_peers(setup, tmp_path):
    cfg, _ = setup
    from equiseg.config import load_experiment

    base = load_experiment(cfg)
    e = model_run_config(base, "equiseg_b0", 5, tmp_path)
    s = model_run_config(base, "segformer_b0", 5, tmp_path)
    assert e.model["lambda_sgm"] == 1.0 and "lambda_sgm" not in s.model
    assert (
        s.model["embed_dims"] == TINY["embed_dims"]
        and s.train.seed == 5
        and s.model["name"] == "segformer_b0"
    )


def test_compare_two_models_two_seeds(setup, capsys):
    cfg, tmp = setup
    out = tmp / "out"
    r = run_compare(cfg, ["equiseg_b0", "segformer_b0"], seeds=[1, 2], out_dir=out, progress=False)
    assert list(r["models"]) == ["equiseg_b0", "segformer_b0"]
    for name, m in r["models"].items():
        assert [run["seed"] for run in m["runs"]] == [1, 2]
        for key, _ in COLUMNS:
            assert m["mean"][key] is not None and m["std"][key] is not None, (name, key)
            vals = [run["summary"][key] for run in m["runs"]]
            assert m["mean"][key] == pytest.approx(sum(vals) / 2)
        assert m["mean"]["params_m"] > 0 and m["mean"]["gflops"] > 0 and m["mean"]["img_per_s"] > 0
        assert len(m["emm"]) == 7  # 2^3 - 1 sets of present modalities
        assert (out / name / "seed1" / "result.json").is_file()
    md = (out / "compare.md").read_text()
    assert "| Method | mIoU | EMM Avg | EMM p=0.1 | RMM Avg | RMM p=0.1 | NM low | NM mid | Mean |" in md
    assert " ± " in md and "| rgb+depth+lidar |" in md
    assert json.loads((out / "compare.json").read_text())["seeds"] == [1, 2]
    assert (out / "compare.png").stat().st_size > 0
    for fig in ("compare_missing.png", "compare_noise.png", "compare_predictions.png"):
        assert f"]({fig})" in md and (out / fig).stat().st_size > 0, fig
    html = (out / "report.html").read_text()
    assert html.count('<img src="data:image/png;base64,') >= 4 and "<td>segformer_b0</td>" in html
    # finished runs are reused, not retrained
    stamp = (out / "segformer_b0" / "seed2" / "best.pt").stat().st_mtime_ns
    again = run_compare(cfg, ["equiseg_b0", "segformer_b0"], seeds=[1, 2], out_dir=out, progress=False)
    assert (out / "segformer_b0" / "seed2" / "best.pt").stat().st_mtime_ns == stamp
    assert again["models"]["segformer_b0"]["mean"] == r["models"]["segformer_b0"]["mean"]
    # a given checkpoint is scored, not trained; the CLI prints the table's headline
    ckpt = out / "equiseg_b0" / "seed1" / "best.pt"
    path = tmp / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    argv = [
        "--quiet",
        "compare",
        str(path),
        "--models",
        "segformer_b0",
        "--seeds",
        "1",
        "--out",
        str(out),
        "--checkpoints",
        f"equiseg_b0={ckpt}",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "segformer_b0" in printed and "equiseg_b0" in printed and "compare.md" in printed
    given = json.loads((out / "compare.json").read_text())["models"]["equiseg_b0"]
    assert given["runs"][0]["trained"] is False and given["std"]["clean"] is None
    assert given["mean"]["clean"] == pytest.approx(r["models"]["equiseg_b0"]["runs"][0]["summary"]["clean"])


def test_compare_errors(setup, tmp_path, capsys):
    cfg, tmp = setup
    path = tmp / "c2.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["--quiet", "compare", str(path), "--models", "nope_b0", "--out", str(tmp_path)]) == 2
    assert "unknown model 'nope_b0'" in capsys.readouterr().err
    assert (
        main(
            [
                "--quiet",
                "compare",
                str(path),
                "--models",
                "equiseg_b0",
                "--seeds",
                "x",
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "--seeds" in capsys.readouterr().err
    assert main(["--quiet", "compare", str(path), "--models", "equiseg_b0", "--checkpoints", "noequals"]) == 2
    assert "NAME=PATH" in capsys.readouterr().err


def test_compare_scores_a_release_with_reference_compat(tmp_path):
    """A release given with --checkpoints is scored with the released code's behaviour (its logits)."""
    import torch
    from reference_fixtures import release_setup

    from equiseg.tasks.compare import run_compare

    fx, release, cfg = release_setup(tmp_path, model="equiseg_b0")
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = run_compare(cfg, [], checkpoints={"cmnext_b0": release}, out_dir=tmp_path / "out", progress=False)
    assert not [w for w in caught if "reference_compat" in str(w.message)]  # built as the release was
    run = r["models"]["cmnext_b0"]["runs"][0]
    assert run["trained"] is False and run["summary"]["clean"] is not None
    # the scored network is the released one: same logits as the reference code on the fixture inputs
    from equiseg.tasks.export import load_checkpoint_model

    model = load_checkpoint_model(
        release, config={**cfg, "model": {**cfg["model"], "name": "cmnext_b0", "reference_compat": True}}
    )
    with torch.no_grad():
        assert float((model(fx.inputs) - fx.logits).norm() / fx.logits.norm()) < 1e-4


def test_compare_starts_afresh_a_run_killed_before_its_first_checkpoint(setup, tmp_path):
    """A run folder holding only what a run killed before its first checkpoint leaves (config.yaml,
    log.jsonl) is started afresh: its files are moved aside, never deleted -- compare has no
    --resume/--overwrite to pass; the short schedules save last.pt at every validation."""
    from equiseg.tasks.ablate import SCHEDULES
    from equiseg.tasks.compare import QUICK_OVERRIDES

    cfg, _ = setup
    out = tmp_path / "out"
    work = out / "segformer_b0" / "seed1"
    work.mkdir(parents=True)
    (work / "config.yaml").write_text("written by a run killed at once\n")
    (work / "log.jsonl").write_text('{"iter": 1, "loss": 3.2}\n')
    r = run_compare(cfg, ["segformer_b0"], seeds=[1], out_dir=out, max_samples=1, progress=False)
    assert r["models"]["segformer_b0"]["runs"][0]["trained"] is True
    assert (work / "best.pt").is_file() and (work / "result.json").is_file()
    aside = list((out / "segformer_b0").glob("seed1.replaced-*"))
    assert len(aside) == 1
    assert (aside[0] / "config.yaml").read_text() == "written by a run killed at once\n"
    assert (aside[0] / "log.jsonl").read_text() == '{"iter": 1, "loss": 3.2}\n'
    for overrides in (QUICK_OVERRIDES, SCHEDULES["quick"].overrides, SCHEDULES["standard"].overrides):
        assert "train.checkpoint_interval=0" in overrides  # last.pt at every validation


def test_compare_never_mixes_runs_scored_on_other_samples_or_inference(setup, tmp_path):
    """A finished run scored otherwise than asked (--max-samples, eval.flip) is re-scored from its
    checkpoint, not retrained and not reused as it is; the old result is kept; compare.md shows the
    sample count and the inference."""
    cfg, _ = setup
    out = tmp_path / "out"
    kw = dict(seeds=[1], out_dir=out, progress=False)
    first = run_compare(cfg, ["segformer_b0"], max_samples=2, **kw)["models"]["segformer_b0"]["runs"][0]
    assert (
        first["num_samples"] == 2 and first["inference"]["mode"] == "whole" and first["precision"] == "fp32"
    )
    work = out / "segformer_b0" / "seed1"
    stamp = (work / "best.pt").stat().st_mtime_ns
    again = run_compare(cfg, ["segformer_b0"], max_samples=1, **kw)
    run = again["models"]["segformer_b0"]["runs"][0]
    assert run["num_samples"] == 1 and again["num_samples"] == 1
    assert any(b.startswith("num_samples: 2 recorded, 1 asked") for b in run["rescored"]["because"])
    assert (work / "best.pt").stat().st_mtime_ns == stamp  # re-scored, not retrained
    (kept,) = work.glob("result.replaced-*.json")
    assert json.loads(kept.read_text())["num_samples"] == 2  # the old result is not lost
    md = (out / "compare.md").read_text()
    assert "1 sample of the val split, whole image, scale 1" in md
    assert "| samples | precision |" in md and "| 1 | fp32 |" in md
    # the same request again: reused as it is, nothing re-scored
    third = run_compare(cfg, ["segformer_b0"], max_samples=1, **kw)
    assert third["models"]["segformer_b0"]["runs"][0]["summary"] == run["summary"]
    assert len(list(work.glob("result.replaced-*.json"))) == 1
    # another inference is another scoring: re-scored too, and said so
    flip = run_compare(cfg, ["segformer_b0"], ["eval.flip=true"], max_samples=1, **kw)
    run = flip["models"]["segformer_b0"]["runs"][0]
    assert run["inference"]["flip"] is True and any(
        b.startswith("inference") for b in run["rescored"]["because"]
    )
    assert (work / "best.pt").stat().st_mtime_ns == stamp
    assert "horizontal flip" in (out / "compare.md").read_text()
    # a run trained otherwise is refused before anything is done, naming the key
    with pytest.raises(ValueError, match=r"another config \(differing: train.lr\)"):
        run_compare(cfg, ["segformer_b0"], ["train.lr=0.5"], max_samples=1, **kw)


def test_compare_checks_every_name_and_file_before_training(setup, tmp_path, capsys):
    """A misspelt model or a missing --checkpoints file stops compare before the first model trains;
    ablate checks its rows and folders the same way."""
    cfg, tmp = setup
    path = tmp / "names.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    base = ["--quiet", "compare", str(path), "--out", str(out), "--max-samples", "1"]
    assert main([*base, "--models", "equiseg_b0,nosuch_b0"]) == 2
    err = capsys.readouterr().err
    assert "--models: unknown model 'nosuch_b0'; choose from" in err and "equiseg_b0" in err
    missing = tmp_path / "nope.pt"
    assert main([*base, "--models", "equiseg_b0", "--checkpoints", f"segformer_b0={missing}"]) == 2
    assert f"--checkpoints segformer_b0={missing}: no such file" in capsys.readouterr().err
    assert main([*base, "--models", "equiseg_b0", "--seeds", ""]) == 2
    assert "--seeds: no seed given" in capsys.readouterr().err
    # a file that is no model to score (here a state dict of unknown keys) is refused before training too
    import torch

    stray = tmp_path / "stray.pt"
    torch.save({"weight": torch.zeros(2)}, stray)
    assert main([*base, "--models", "equiseg_b0", "--checkpoints", f"segformer_b0={stray}"]) == 2
    err = capsys.readouterr().err
    assert f"--checkpoints segformer_b0={stray}: not a model to score (unknown)" in err
    assert not (out / "equiseg_b0").exists()  # nothing trained
    # an unfinished run (last.pt) that a resume could not continue is found before the others train
    from equiseg.config import load_experiment, save_yaml

    unfinished = out / "equiseg_b0" / "seed1"
    unfinished.mkdir(parents=True)
    other = model_run_config(load_experiment(cfg, ["train.lr=0.5"]), "equiseg_b0", 1, unfinished)
    save_yaml(other, unfinished / "config.yaml")
    (unfinished / "last.pt").write_bytes(b"an unfinished run's checkpoint")
    assert main([*base, "--models", "segformer_b0,equiseg_b0", "--seeds", "1"]) == 2
    err = capsys.readouterr().err
    assert f"{unfinished} holds an unfinished run (last.pt) trained with another config" in err
    assert "train.lr" in err and not (out / "segformer_b0").exists()
    # ablate: an unknown row, and a row folder holding a checkpoint without --resume
    ab = tmp_path / "ablate"
    abl = ["--quiet", "ablate", str(path), "--rows", "tab2", "--out", str(ab), "--max-samples", "1"]
    assert main([*abl, "--only", "cmtb,nosuch_row"]) == 2
    assert "--only: unknown tab2 row 'nosuch_row'; choose from cmtb, hub_mean" in capsys.readouterr().err
    (ab / "hub_mean").mkdir(parents=True)
    (ab / "hub_mean" / "last.pt").write_bytes(b"a checkpoint of an earlier run")
    assert main([*abl, "--only", "cmtb,hub_mean"]) == 2
    err = capsys.readouterr().err
    assert str(ab / "hub_mean") in err and "--resume" in err
    assert not (ab / "cmtb").exists()  # the first row did not train
    assert (ab / "hub_mean" / "last.pt").read_bytes() == b"a checkpoint of an earlier run"
