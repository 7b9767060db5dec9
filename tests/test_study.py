"""``equiseg study`` end to end on a tiny data set: 2 seeds, 2 rows per table, the
paired statistics, and a re-run that reuses every finished run."""

from __future__ import annotations

import json
import math
import statistics

import pytest
import yaml
from study_utils import tiny_runner_config

from equiseg.cli import main
from equiseg.tasks.study import paired_difference, run_study, t_quantile


def test_paired_difference_arithmetic():
    d = paired_difference([3.0, 5.0, 4.0], [1.0, 2.0, 2.0])  # differences 2, 3, 2
    sd = statistics.stdev([2.0, 3.0, 2.0])
    assert d["mean"] == pytest.approx(7 / 3) and d["n"] == 3
    assert d["half_width"] == pytest.approx(4.303 * sd / math.sqrt(3))
    assert d["low"] == pytest.approx(7 / 3 - d["half_width"])
    one = paired_difference([3.0], [1.0])
    assert one["mean"] == 2.0 and one["half_width"] is None
    assert t_quantile(1) == 12.706 and t_quantile(100) == 1.96
    with pytest.raises(ValueError):
        paired_difference([1.0, 2.0], [1.0])


def test_study_two_seeds_two_rows_and_reuse(tmp_path, capsys):
    from equiseg.data.synth import generate

    generate(
        tmp_path / "data",
        layout="deliver",
        splits={"train": 4, "val": 2},
        size=(64, 64),
        seed=0,
        progress=False,
    )
    cfg = tiny_runner_config(tmp_path / "data")
    out = tmp_path / "study"
    kw = dict(
        seeds=[1, 2],
        inits=["scratch"],
        only=["hub_mean", "segformer_b0"],
        models=["equiseg_b0", "segformer_b0"],
        out_dir=out,
        max_samples=2,
        progress=False,
    )
    r = run_study(cfg, ["tab1", "tab2"], **kw)
    tab1, tab2 = r["sections"]
    assert list(tab1["rows"]) == ["equiseg_b0", "segformer_b0"] and tab1["full"] == "equiseg_b0"
    assert list(tab2["rows"]) == ["cmtb", "hub_mean"] and tab2["full"] == "cmtb"
    for sec in (tab1, tab2):
        for name, stats in sec["rows"].items():
            for key, s in stats.items():
                assert len(s["values"]) == 2 and s["std"] is not None
                full = sec["rows"][sec["full"]][key]["values"]
                expect = paired_difference(s["values"], full)
                assert s["vs_full"] == pytest.approx(expect)
                if name == sec["full"]:
                    assert s["vs_full"]["mean"] == 0
    md = (out / "study.md").read_text()
    assert "## tab2, init scratch (full model: `cmtb`)" in md and "(Δ " in md
    assert md.count("Scored on 2 samples of the val split, whole image, scale 1.") == 2  # per section
    assert json.loads((out / "study.json").read_text())["seeds"] == [1, 2]
    assert (out / "study_scratch_tab1.png").is_file() and "](study_scratch_tab2.png)" in md
    html = (out / "report.html").read_text()
    assert html.count('<img src="data:image/png;base64,') == 2 and "<code>hub_mean</code>" in html
    # the per-seed runs live in the runners' own folders and are reused on a re-run
    stamp = (out / "scratch" / "tab2" / "seed2" / "hub_mean" / "best.pt").stat().st_mtime_ns
    stamp1 = (out / "scratch" / "tab1" / "segformer_b0" / "seed1" / "best.pt").stat().st_mtime_ns
    again = run_study(cfg, ["tab1", "tab2"], **kw)
    assert (out / "scratch" / "tab2" / "seed2" / "hub_mean" / "best.pt").stat().st_mtime_ns == stamp
    assert (out / "scratch" / "tab1" / "segformer_b0" / "seed1" / "best.pt").stat().st_mtime_ns == stamp1
    assert again["sections"] == r["sections"]
    # the command
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    argv = [
        "--quiet",
        "study",
        str(path),
        "--rows",
        "tab2",
        "--seeds",
        "1,2",
        "--only",
        "hub_mean",
        "--out",
        str(out),
        "--max-samples",
        "2",
        "--init",
        "scratch",
    ]
    assert main(argv) == 0
    assert "tab2 (scratch): 2 rows x 2 seeds" in capsys.readouterr().out
    assert main(["--quiet", "study", str(path), "--rows", "tab9", "--out", str(out)]) == 2
    assert "unknown study table" in capsys.readouterr().err
    assert (
        main(["--quiet", "study", str(path), "--rows", "tab2", "--init", "nope.pth", "--out", str(out)]) == 2
    )
    assert "--init nope.pth" in capsys.readouterr().err


def test_the_full_model_shared_by_tab2_and_tab3_is_trained_once(tmp_path):
    from equiseg.data.synth import generate

    generate(tmp_path / "data", layout="deliver", splits={"train": 4, "val": 2}, size=(64, 64), seed=0,
             progress=False)  # fmt: skip
    cfg = tiny_runner_config(tmp_path / "data", modalities=("rgb", "depth"), iters=1)
    out = tmp_path / "study"
    r = run_study(cfg, ["tab2", "tab3"], seeds=[1], inits=["scratch"], only=["no_add", "no_sgm"],
                  out_dir=out, max_samples=2, progress=False)  # fmt: skip
    tab2, tab3 = r["sections"]
    first2 = out / "scratch" / "tab2" / "seed1" / "cmtb"
    first3 = out / "scratch" / "tab3" / "seed1" / "sgm_lambda60"
    assert (first2 / "best.pt").is_file() and not (first3 / "best.pt").exists()  # not trained twice
    rec = json.loads((first3 / "row.json").read_text())
    assert rec["reused_from"] == str(first2) and rec["id"] == "sgm_lambda60"
    assert tab3["rows"]["sgm_lambda60"]["mIoU"]["values"] == tab2["rows"]["cmtb"]["mIoU"]["values"]
    assert (out / "scratch" / "tab3" / "seed1" / "no_sgm" / "best.pt").is_file()


def test_pretrained_inits_get_the_papers_recipe(tmp_path):
    from equiseg.config import load_experiment
    from equiseg.tasks.study import PRETRAINED_RECIPE, _init_overrides

    base = load_experiment({"model": {"name": "equiseg_b0"}})
    weights = tmp_path / "mit.pth"
    weights.write_bytes(b"")
    assert _init_overrides("scratch", tmp_path, base, quick=True, progress=False) == []
    over = _init_overrides(str(weights), tmp_path, base, quick=True, progress=False)
    assert over == [f"model.pretrained={weights}", *PRETRAINED_RECIPE]
    assert "train.lr=6e-5" in over and "model.lambda_sgm=60" in over


def test_claims_verdicts_follow_the_interval():
    from equiseg.tasks.study import _verdict, evaluate_claims, study_markdown

    def stat(*d):
        return {
            "mean": 0.0,
            "std": 0.0,
            "values": [0.0] * len(d),
            "vs_full": paired_difference(list(d), [0.0] * len(d)),
        }

    sec = {"init": "scratch", "table": "tab2", "full": "cmtb",
           "rows": {"cmtb": {"mIoU": stat(0, 0, 0)},
                    "hub_mean": {"mIoU": stat(-3, -2, -2.5), "emm_avg": stat(1, -1, 0.5)},
                    "no_add": {"mIoU": stat(2, 3, 2.5)}}}  # fmt: skip
    got = {(c["row"], c["metric"]): c["verdict"] for c in evaluate_claims([sec])}
    # paper: every Tab. 2 row lowers both metrics; only the rows/metrics measured are judged
    assert got == {("hub_mean", "mIoU"): "reproduced", ("hub_mean", "emm_avg"): "not resolved",
                   ("no_add", "mIoU"): "reversed"}  # fmt: skip
    assert _verdict({"half_width": None, "mean": 1.0}, "-") == "one seed: no interval"
    assert _verdict({"half_width": 1.0, "low": 0.5, "high": 2.5, "mean": 1.5}, "+") == "reproduced"
    md = study_markdown({"sections": [sec], "seeds": [1, 2, 3], "recipe_for_pretrained_inits": [], "seconds": 1,
                         "config": None, "overrides": [], "quick": True})  # fmt: skip
    assert "## The paper's claims" in md and "| reversed |" in md


def test_a_run_saved_before_a_schema_key_existed_is_still_reused():
    from equiseg.config import load_experiment
    from equiseg.engine.rundir import config_matches

    cfg = load_experiment({"model": {"name": "equiseg_b0"}, "train": {"max_iters": 5}})
    saved = cfg.to_dict()
    del saved["eval"]["precision"]  # written by a version without eval.precision (default "auto")
    assert config_matches(saved, cfg)
    saved["train"]["max_iters"] = 6
    assert not config_matches(saved, cfg)
    assert config_matches({**cfg.to_dict(), "work_dir": "elsewhere"}, cfg, ignore=("work_dir",))
    assert not config_matches(None, cfg) and not config_matches({"model": {"name": "nope"}}, cfg)


def test_records_let_a_study_continue_in_a_fresh_folder_without_training(tmp_path, monkeypatch):
    """--records: every finished run leaves a small record (no checkpoint) at its relative path; the
    same study in an empty --out (a later session) takes every run from the records and trains none,
    and a run whose config changed is trained."""
    from equiseg.data.synth import generate
    from equiseg.engine import train as train_mod

    generate(tmp_path / "data", layout="deliver", splits={"train": 4, "val": 2}, size=(64, 64), seed=0,
             progress=False)  # fmt: skip
    cfg = tiny_runner_config(tmp_path / "data", modalities=("rgb", "depth"), iters=1)
    records = tmp_path / "records"
    kw = dict(seeds=[1], inits=["scratch"], only=["no_add", "segformer_b0"], models=["equiseg_b0", "segformer_b0"],
              max_samples=2, records=records, progress=False)  # fmt: skip
    first = run_study(cfg, ["tab1", "tab2"], out_dir=tmp_path / "s1", **kw)
    rec_dir = records / "scratch" / "tab2" / "seed1" / "no_add"
    row = json.loads((rec_dir / "row.json").read_text())
    assert row["machine"]["cpu"] and row["seconds"]["train"] > 0 and "reused_from" not in row
    assert (rec_dir / "config.yaml").is_file() and (rec_dir / "log.jsonl").is_file()
    assert list((rec_dir / "robustness").glob("*.json")) and list((rec_dir / "analysis").glob("*.json"))
    assert (records / "scratch" / "tab1" / "segformer_b0" / "seed1" / "result.json").is_file()
    assert not list(records.rglob("*.pt")) and not list(records.rglob("*.pth"))

    calls = []
    real = train_mod.train
    monkeypatch.setattr(train_mod, "train", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = run_study(cfg, ["tab1", "tab2"], out_dir=tmp_path / "s2", **kw)
    assert calls == []  # nothing trained: every run came from the records
    assert again["sections"] == first["sections"]
    reused = json.loads((tmp_path / "s2" / "scratch" / "tab2" / "seed1" / "no_add" / "row.json").read_text())
    assert reused["reused_from"] == str(rec_dir)
    # the records themselves are untouched by the reuse (never replaced by a pointer to themselves)
    assert "reused_from" not in json.loads((rec_dir / "row.json").read_text())
    # another schedule is another run: trained, not taken from the records
    cfg2 = {**cfg, "train": {**cfg["train"], "lr": 2e-3}}
    run_study(cfg2, ["tab2"], out_dir=tmp_path / "s3", **{**kw, "only": ["no_add"]})
    assert len(calls) == 2  # the full model and no_add


def test_schedules_resolve_and_refuse_a_contradiction():
    from equiseg.tasks.ablate import SCHEDULES, STANDARD_ITERS, resolve_schedule

    assert resolve_schedule(None, False) is None
    assert resolve_schedule(None, True) is SCHEDULES["quick"] == resolve_schedule("quick", False)
    std = resolve_schedule("standard", False)
    assert f"train.max_iters={STANDARD_ITERS}" in std.overrides and std.max_samples is None
    assert f"train.val_interval={STANDARD_ITERS // 3}" in std.overrides
    with pytest.raises(ValueError, match="--quick and --schedule standard disagree"):
        resolve_schedule("standard", True)
    with pytest.raises(ValueError, match="expected one of quick, standard"):
        resolve_schedule("long", False)


def test_every_list_is_checked_the_same_way_and_data_cases_does_what_it_says(tmp_path, capsys):
    """study refuses an unknown row and an empty --models as ablate and compare do, before any work;
    data.cases is checked against the data set's cases and chooses the per-case tables."""
    from model_utils import tiny_model

    from equiseg.config import load_experiment
    from equiseg.data.synth import generate
    from equiseg.engine.builders import build_val_dataset
    from equiseg.engine.evaluate import evaluate

    generate(tmp_path / "data", layout="deliver", splits={"train": 4, "val": 4}, size=(64, 64), seed=0,
             progress=False)  # fmt: skip
    cfg = tiny_runner_config(tmp_path / "data")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "study"
    study = ["--quiet", "study", str(path), "--rows", "tab1,tab2", "--init", "scratch", "--out", str(out)]
    refused = [
        (["--only", "nosuch_row"], "--only: unknown row or model of tab1, tab2 'nosuch_row'; choose from"),
        (["--models", ""], "--models: no model given; choose from"),
        (["--models", "equiseg_b0,nosuch_b0"], "--models: unknown model 'nosuch_b0'"),
        (["--seeds", ""], "--seeds: no seed given"),
        (["--init", ""], "--init: no init given"),
        (["--rows", ""], "--rows: no study table given"),
        (["--rows", "tab1,tab9"], "--rows: unknown study table 'tab9'"),
    ]
    for extra, message in refused:
        assert main([*study, *extra]) == 2, extra
        assert message in capsys.readouterr().err, extra
    assert not out.exists()  # refused before any work
    # the same mistakes, the same words, in ablate and compare
    assert (
        main(["--quiet", "ablate", str(path), "--rows", "tab2", "--only", "nosuch_row", "--out", str(out)])
        == 2
    )
    assert "--only: unknown tab2 row 'nosuch_row'; choose from" in capsys.readouterr().err
    assert main(["--quiet", "compare", str(path), "--models", "", "--out", str(out)]) == 2
    assert "--models: no model given; choose from" in capsys.readouterr().err
    assert not out.exists()

    # data.cases: an unknown case is refused naming the key, also by train before it writes anything
    work = tmp_path / "run"
    bad = ["--quiet", "train", str(path), "--work-dir", str(work), "--set", "data.cases=[night,bogus_case]"]
    assert main(bad) == 2
    err = capsys.readouterr().err
    assert "data.cases: unknown DeLiVER case 'bogus_case'; choose from cloud, fog, night" in err
    assert not work.exists()
    # a valid list chooses the per-case tables (in its order); every sample still counts overall
    data = load_experiment(cfg, ["data.cases=[night,FOG]"]).data
    val = build_val_dataset(data)
    model = tiny_model(3, num_classes=val.num_classes)
    r = evaluate(model, val, progress=False)
    assert list(r["per_case"]) == ["night", "fog"] and r["num_samples"] == 4
    everything = evaluate(model, build_val_dataset(load_experiment(cfg).data), progress=False)
    assert list(everything["per_case"]) == ["cloud", "fog", "night", "rain"]
    assert everything["mIoU"] == r["mIoU"]
