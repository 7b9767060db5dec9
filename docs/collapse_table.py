"""The modality-collapse table of docs/reproduction.md, from the run folders of an ``equiseg study``.

For every SGM row (Tab. 3 and the sgm_features readings) and init: the last-stage cosine similarity of
each modality's feature with the fused one under three definitions of docs/design.md §7 (fused = mean of all
modalities, one cosine per flattened feature map, averaged over the val samples), as the mean over
seeds of the *lowest* modality (100 = every branch is a copy of the fused feature), the CMTB's
|f_c| / |f'| at the last stage (mean over modalities and seeds), the lowest post-LN similarity at
stages 1-3, and the clean mIoU of the robustness benchmark.

    python docs/collapse_table.py runs/study_quick
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

ROWS = {
    "tab3": ("sgm_lambda60", "lambda80", "lambda40", "lambda1", "cosine_pairing", "no_prototype", "no_sgm"),
    "sgm_features": ("sgm_pre_ln", "sgm_pre_cmtb"),
}
DEFINITIONS = ("post_ln/mean/sample", "pre_ln/mean/sample", "pre_cmtb/mean/sample", "pre_cmtb/others/sample")


def _analysis(run: Path) -> dict | None:
    rec = json.loads((run / "row.json").read_text())
    src = Path(rec.get("reused_from") or run)
    path = src / "analysis" / "analysis.json"
    return json.loads(path.read_text()) if path.is_file() else None


def main(study: str) -> str:
    root = Path(study)
    lines = [
        "| init | row | "
        + " | ".join(
            f"min sim. {d.split('/')[0]}" + (" (others)" if "others" in d else "") for d in DEFINITIONS
        )
        + " | |f_c|/|f'| | min sim. post_ln stage 1 / 2 / 3 | mIoU |",
        "|---|---|" + "---:|" * (len(DEFINITIONS) + 3),
    ]
    for init in sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "tab3").is_dir()):
        for table, rows in ROWS.items():
            for row in rows:
                runs = sorted((root / init / table).glob(f"seed*/{row}"))
                found = [(r, _analysis(r)) for r in runs if (r / "row.json").is_file()]
                found = [(r, a) for r, a in found if a is not None]
                if not found:
                    continue
                cells = []
                for d in DEFINITIONS:
                    lows = [min(a["definitions"][d]["last_stage"].values()) for _, a in found]
                    cells.append(f"{statistics.fmean(lows):.1f}")
                ratios = [statistics.fmean(a["cross_ratio"]["last_stage"].values()) for _, a in found]
                miou = [json.loads((r / "row.json").read_text())["mIoU"] for r, _ in found]
                per_stage = "{:.0f} / {:.0f} / {:.0f}".format(*(
                    statistics.fmean(min(a["definitions"][DEFINITIONS[0]]["per_stage"][f"stage{k}"].values())
                                     for _, a in found)
                    for k in (1, 2, 3)
                ))  # fmt: skip
                lines.append(
                    f"| {init} | `{row}` | "
                    + " | ".join(cells)
                    + f" | {statistics.fmean(ratios):.2f} | {per_stage} | {statistics.fmean(miou):.1f} |"
                )
    return "\n".join(lines)


if __name__ == "__main__":
    print(main(sys.argv[1] if len(sys.argv) > 1 else "runs/study_quick"))
