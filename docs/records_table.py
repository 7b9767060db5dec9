"""Every run record of a study's record tree (``--records DIR``) as one Markdown table: which runs are
finished, their scores, how long each took and on which CPU -- the status of a study that is finished
over several sessions (docs/reproduction.md).

    python docs/records_table.py docs/results/study_standard > docs/results/study_standard/records.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def rows(root: Path) -> list[dict]:
    out = []
    for name in ("row.json", "result.json"):
        for path in sorted(root.rglob(name)):
            rec = json.loads(path.read_text())
            if rec.get("reused_from"):
                continue  # a pointer to another record: listed there
            cfg = rec.get("config") or {}
            summary = rec.get("summary") or {}
            secs = rec.get("seconds") or {"train": rec.get("train_seconds"), "eval": rec.get("eval_seconds")}
            out.append(
                {
                    "run": str(path.parent.relative_to(root)),
                    "seed": (cfg.get("train") or {}).get("seed"),
                    "iterations": rec.get("iterations"),
                    "mIoU": rec.get("mIoU", summary.get("clean")),
                    "emm_avg": rec.get("emm_avg", summary.get("emm_avg")),
                    "samples": rec.get("num_eval_samples", rec.get("num_samples")),
                    "train_s": secs.get("train"),
                    "eval_s": secs.get("eval"),
                    "cpu": (rec.get("machine") or {}).get("cpu", "–"),
                }
            )
    return out


def _f(v, digits: int = 2) -> str:
    return "–" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    args = ap.parse_args()
    table = rows(args.root)
    print("| Run | seed | iterations | mIoU | EMM Avg | samples | train s | eval s | CPU |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in table:
        print(
            f"| `{r['run']}` | {_f(r['seed'])} | {_f(r['iterations'])} | {_f(r['mIoU'])} | {_f(r['emm_avg'])} | "
            f"{_f(r['samples'])} | {_f(r['train_s'], 0)} | {_f(r['eval_s'], 0)} | {r['cpu']} |"
        )
    total = sum((r["train_s"] or 0) + (r["eval_s"] or 0) for r in table)
    print(f"\n{len(table)} finished runs, {total / 3600:.1f} h of training and scoring in all.")


if __name__ == "__main__":
    main()
