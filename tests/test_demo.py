"""`equiseg demo` end to end at a tiny size: every artefact of the report is produced."""

from __future__ import annotations

import json

from equiseg.tasks.demo import DemoSize, run_demo


def test_demo_end_to_end_tiny(tmp_path):
    size = DemoSize(train=8, val=4, size=64, max_iters=4, val_interval=2, robustness_samples=2)
    report = run_demo(
        tmp_path,
        size=size,
        progress=False,
        overrides=["data.batch_size=2", "data.num_workers=0", "model.decoder_dim=32"],
    )
    text = report.read_text()
    for needle in (
        "Clean val mIoU",
        "Per case",
        "Per class",
        "predictions.png",
        "training.png",
        "EMM",
        "RGB",
        "docs/reproduction.md",  # the recipe follows the reproduction study, in one sentence
    ):
        assert needle.lower() in text.lower(), needle
    for f in (
        "figures/predictions.png",
        "figures/training.png",
        "eval/metrics.json",
        "robustness/robustness.json",
        "analysis/analysis.json",
        "run/best.pt",
        "run/last.pt",
    ):
        assert (tmp_path / f).is_file(), f
    summary = json.loads((tmp_path / "demo_summary.json").read_text())
    assert summary["iterations"] == 4 and 0 <= summary["mIoU"] <= 100
    assert {"clean", "emm_avg", "mean"} <= set(summary["robustness"])
    # every image the report links exists
    import re

    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert (tmp_path / link).is_file(), link
