"""The helper scripts behind docs/reproduction.md read what the runners write."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _run(script: str, argv: list[str], capsys) -> str:
    old = sys.argv
    sys.argv = [script, *argv]
    try:
        runpy.run_path(str(DOCS / script), run_name="__main__")
    finally:
        sys.argv = old
    return capsys.readouterr().out


def test_learning_curve_reads_every_validation(tmp_path, capsys):
    for name, vals in (("a", [(10, 5.0), (20, 9.5)]), ("b", [(10, 4.0), (20, 8.0), (40, 12.25)])):
        run = tmp_path / name
        run.mkdir()
        lines = [{"iter": 5, "loss": 1.0}] + [{"iter": i, "val": {"mIoU": v}} for i, v in vals]
        (run / "log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = _run("learning_curve.py", [f"A={tmp_path / 'a'}", f"B={tmp_path / 'b'}", "--out", str(tmp_path / "c")],
               capsys)  # fmt: skip
    assert "| A | 9.50 | 9.50 | 10: 5.00, 20: 9.50 |" in out
    assert "| B | 12.25 | 12.25 | 10: 4.00, 20: 8.00, 40: 12.25 |" in out
    assert json.loads((tmp_path / "c.json").read_text())["B"][-1] == [40, 12.25]
    assert (tmp_path / "c.png").stat().st_size > 0


def test_records_table_lists_finished_runs_not_reuses(tmp_path, capsys):
    row = tmp_path / "scratch" / "tab3" / "seed1" / "no_sgm"
    row.mkdir(parents=True)
    (row / "row.json").write_text(json.dumps({
        "config": {"train": {"seed": 1}}, "iterations": 30, "mIoU": 41.5, "emm_avg": 20.25,
        "num_eval_samples": 100, "seconds": {"train": 600.4, "eval": 80.0}, "machine": {"cpu": "CPU X"}}))  # fmt: skip
    reused = tmp_path / "scratch" / "tab3" / "seed1" / "sgm_lambda60"
    reused.mkdir()
    (reused / "row.json").write_text(json.dumps({"reused_from": str(row), "mIoU": 1.0}))
    out = _run("records_table.py", [str(tmp_path)], capsys)
    assert "| `scratch/tab3/seed1/no_sgm` | 1 | 30 | 41.50 | 20.25 | 100 | 600 | 80 | CPU X |" in out
    assert "sgm_lambda60" not in out and "1 finished runs" in out
