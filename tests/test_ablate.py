"""Ablation runner (paper Tab. 2 / Tab. 3): row configs from the packaged override files, a 2-row run
end to end on tiny synthetic data, resume, and the table layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from study_utils import make_synth, tiny_config_dict, write_config

from equiseg.cli import main
from equiseg.config import load_experiment
from equiseg.tasks.ablate import (
    FULL_MODEL,
    TABLES,
    ablation_dir,
    ablation_markdown,
    row_config,
    row_model_overrides,
    run_ablation,
    table_rows,
)

MODS = ["rgb", "depth", "event", "lidar"]


@pytest.fixture(scope="module")
def setting(tmp_path_factory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("ablate")
    root = make_synth(tmp / "data")
    cfg = tiny_config_dict(root, tmp / "unused", max_iters=2)
    cfg["model"]["lambda_sgm"] = 5.0  # the rows must reset it to the paper's 60
    return tmp, cfg


def test_every_row_changes_only_its_switch() -> None:
    base = load_experiment({"model": {"name": "equiseg_b0", "hub": "mean", "sgm": False}})
    ref = base.model_config(3).to_dict()
    assert {f.name for f in ablation_dir().glob("*.yaml")} == {
        r.override for _, rows in TABLES.values() for r in rows if r.override
    }
    for table in TABLES:
        rows = table_rows(table)
        full = row_config(base, rows[0], "w").model_config(3).to_dict()
        assert {k: full[k] for k in FULL_MODEL} == FULL_MODEL  # the config's hub/sgm are overridden
        assert {k: v for k, v in full.items() if k not in FULL_MODEL} == {
            k: v for k, v in ref.items() if k not in FULL_MODEL
        }
        for row in rows[1:]:
            changed = row_model_overrides(row)
            mc = row_config(base, row, "w").model_config(3).to_dict()
            # a row may restate the full model's value (sgm_spec when the config's convention is spec)
            assert {k for k in mc if mc[k] != full[k]} == {k for k, v in changed.items() if full[k] != v}, (
                row.id
            )
            assert set(changed) <= set(mc)
    assert row_model_overrides(table_rows("tab2", ["no_add"])[0]) == {"residual": False}
    assert [r.id for r in table_rows("tab3", ["lambda80", "no_sgm"])] == ["no_sgm", "lambda80"]  # table order
    with pytest.raises(ValueError, match="choose from cmtb, hub_mean"):
        table_rows("tab2", ["nope"])
    with pytest.raises(ValueError, match="unknown ablation table"):
        table_rows("tab4")


def test_two_row_ablation_end_to_end(setting, capsys) -> None:
    tmp, cfg = setting
    out = tmp / "tab2"
    r = run_ablation(cfg, "tab2", ["train.seed=1"], out_dir=out, rows=["cmtb", "hub_mean"], progress=False)
    assert [row["id"] for row in r["rows"]] == ["cmtb", "hub_mean"]
    assert r["num_eval_samples"] == 4 and r["modalities"] == MODS and r["overrides"] == ["train.seed=1"]
    for row in r["rows"]:
        assert row["iterations"] == 2 and 0.0 <= row["mIoU"] <= 100.0 and 0.0 <= row["emm_avg"] <= 100.0
        assert row["mIoU"] == pytest.approx(row["best_val_mIoU"])  # benchmark clean pass == evaluate()
        assert list(row["similarity"]) == MODS and all(-100 <= v <= 100 for v in row["similarity"].values())
        work = Path(row["work_dir"])
        assert work == out / row["id"] and (work / "best.pt").is_file() and (work / "row.json").is_file()
        assert (work / "robustness" / "robustness.json").is_file() and (
            work / "analysis" / "analysis.json"
        ).is_file()
        trained = load_experiment(str(work / "config.yaml"))
        assert trained.train.seed == 1 and trained.model["lambda_sgm"] == 60.0
    assert r["rows"][0]["delta_mIoU"] == 0.0
    assert r["rows"][1]["delta_emm_avg"] == pytest.approx(r["rows"][1]["emm_avg"] - r["rows"][0]["emm_avg"])
    assert r["rows"][1]["model_overrides"] == {"hub": "mean"} and r["rows"][1]["paper"]["emm_avg"] == 42.83
    emm = json.loads((out / "hub_mean" / "robustness" / "robustness.json").read_text())
    assert emm["summary"]["emm_avg"] == r["rows"][1]["emm_avg"] and len(emm["emm"]["combinations"]) == 15

    saved = json.loads((out / "ablation_tab2.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(r["rows"])) and (out / "ablation_tab2.png").is_file()
    md = (out / "ablation_tab2.md").read_text()
    lines = md.splitlines()
    head = lines.index("| Structure | mIoU(%) | EMM(Avg) |")
    assert lines[head + 2].startswith("| CMTB | ") and "(" not in lines[head + 2]  # no delta on the first row
    assert (
        lines[head + 3].startswith("| with Mean instead Self-Query Hub | ")
        and lines[head + 3].count("(") == 2
    )
    assert "| `hub_mean` |" in md and "| 62.57 (-0.69) | 42.83 (-1.94) |" in md  # the paper's numbers

    # resume: finished rows are reused, not retrained
    mtime = (out / "cmtb" / "best.pt").stat().st_mtime_ns
    again = run_ablation(
        cfg, "tab2", ["train.seed=1"], out_dir=out, rows=["cmtb", "hub_mean"], progress=False, resume=True
    )
    assert (out / "cmtb" / "best.pt").stat().st_mtime_ns == mtime and again["rows"] == r["rows"]
    with pytest.raises(ValueError, match="another config"):
        run_ablation(cfg, "tab2", ["train.seed=2"], out_dir=out, rows=["cmtb"], progress=False, resume=True)

    # the command: one tab3 row, configs from a YAML file
    yaml_cfg = write_config(cfg, tmp / "tiny.yaml")
    argv = [
        "--quiet",
        "ablate",
        str(yaml_cfg),
        "--rows",
        "tab3",
        "--only",
        "no_sgm",
        "--out",
        str(tmp / "t3"),
        "--max-samples",
        "2",
        "--set",
        "train.max_iters=1",
    ]
    assert main(argv) == 0
    assert "no_sgm" in capsys.readouterr().out
    t3 = json.loads((tmp / "t3" / "ablation_tab3.json").read_text())
    assert t3["num_eval_samples"] == 2 and t3["rows"][0]["iterations"] == 1
    assert (
        "| Structure | RGB | Depth | Event | Lidar | EMM(Avg) |"
        in (tmp / "t3" / "ablation_tab3.md").read_text()
    )


def test_tab3_markdown_layout() -> None:
    def row(i: str, label: str, emm: float, sims: list[float], d: float) -> dict:
        return {
            "id": i,
            "label": label,
            "mIoU": 50.0,
            "emm_avg": emm,
            "similarity": dict(zip(MODS, sims, strict=True)),
            "best_val_mIoU": 50.0,
            "iterations": 3,
            "seconds": {"train": 1.0, "eval": 1.0},
            "delta_mIoU": 0.0,
            "delta_emm_avg": d,
        }

    result = {
        "table": "tab3",
        "title": "T3",
        "config": "c.yaml",
        "overrides": [],
        "quick": True,
        "split": "val",
        "num_eval_samples": 2,
        "convention": "reference",
        "modalities": MODS,
        "rows": [
            row("sgm_lambda60", "EQUISeg + SGM (λ=60)", 40.0, [80, 90, 30, 31.5], 0.0),
            row("no_sgm", "without SGM", 37.5, [88, 93, 8, 11], -2.5),
        ],
    }
    md = ablation_markdown(result)
    assert "| EQUISeg + SGM (λ=60) | 80.00 | 90.00 | 30.00 | 31.50 | 40.00 |" in md
    assert "| without SGM | 88.00 | 93.00 | 8.00 | 11.00 | 37.50 (-2.50) |" in md
    assert "**quick mode**" in md and "15 sets of present modalities" in md
    assert "| without SGM | 88.14 | 93.45 | 8.25 | 11.35 | 41.54 (-3.23) |" in md  # paper row, paper delta


def test_resumed_rows_are_rescored_or_restarted_never_mixed(setting) -> None:
    """--resume: a finished row scored on another number of samples is re-scored from its checkpoint
    (not retrained, old row.json kept); a row folder left by a run killed before its first checkpoint
    is started afresh, its files moved aside."""
    tmp, cfg = setting
    out = tmp / "rescore"
    kw = dict(out_dir=out, rows=["cmtb", "hub_mean"], progress=False, resume=True)
    first = run_ablation(cfg, "tab2", ["train.seed=1"], max_samples=2, rows=["cmtb"], out_dir=out,
                         progress=False)  # fmt: skip
    assert first["rows"][0]["num_eval_samples"] == 2 and first["rows"][0]["inference"]["mode"] == "whole"
    stamp = (out / "cmtb" / "best.pt").stat().st_mtime_ns
    (out / "hub_mean").mkdir()
    (out / "hub_mean" / "config.yaml").write_text("killed before the first checkpoint\n")
    again = run_ablation(cfg, "tab2", ["train.seed=1"], max_samples=1, **kw)
    cmtb, hub = again["rows"]
    assert cmtb["num_eval_samples"] == hub["num_eval_samples"] == again["num_eval_samples"] == 1
    assert "num_samples: 2 recorded, 1 asked" in cmtb["rescored"]["because"][0]
    assert (out / "cmtb" / "best.pt").stat().st_mtime_ns == stamp  # not retrained
    (kept,) = (out / "cmtb").glob("row.replaced-*.json")
    assert json.loads(kept.read_text())["num_eval_samples"] == 2
    (aside,) = tmp.glob("rescore/hub_mean.replaced-*")
    assert (aside / "config.yaml").read_text() == "killed before the first checkpoint\n"
    assert (out / "hub_mean" / "best.pt").is_file() and "rescored" not in hub
    assert (
        "1 sample of the val split, batch 1, whole image, scale 1" in (out / "ablation_tab2.md").read_text()
    )
