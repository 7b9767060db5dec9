"""The learning curves behind ``--schedule standard`` (docs/reproduction.md): validation mIoU against
iteration for training runs of different lengths, read from each run's ``log.jsonl``.

    python docs/learning_curve.py S900=runs/curve/ref_900 S1800=runs/curve/ref_1800 \\
        --out docs/results/learning_curve

Writes ``OUT.png`` (one line per run), ``OUT.md`` (every validation of every run, and each run's last
and best value) and ``OUT.json`` (the same numbers).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from equiseg.reports.figures import line_chart


def read_curve(run: Path) -> list[tuple[int, float]]:
    """``(iteration, val mIoU)`` of every validation in ``run/log.jsonl``."""
    out = []
    for line in (run / "log.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "val" in rec:
            out.append((int(rec["iter"]), float(rec["val"]["mIoU"])))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", metavar="NAME=RUN_DIR")
    ap.add_argument("--out", required=True, help="path prefix of the .png/.md/.json")
    ap.add_argument("--title", default="Validation mIoU during training")
    args = ap.parse_args()
    curves = {}
    for item in args.runs:
        name, path = item.split("=", 1)
        curves[name] = read_curve(Path(path))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    line_chart(
        {n: ([i for i, _ in c], [v for _, v in c]) for n, c in curves.items()},
        out.with_suffix(".png"),
        title=args.title,
        xlabel="iteration",
        ylabel="val mIoU (%)",
    )
    lines = ["| Run | last | best | every validation (iteration: mIoU) |", "|---|---:|---:|---|"]
    for n, c in curves.items():
        pts = ", ".join(f"{i}: {v:.2f}" for i, v in c)
        lines.append(f"| {n} | {c[-1][1]:.2f} | {max(v for _, v in c):.2f} | {pts} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({n: c for n, c in curves.items()}, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
