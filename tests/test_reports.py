"""The report figures (matplotlib) and ``report.html``: every chart from hand-made inputs,
the confusion heatmap's normalisation, the HTML writer, and demo-/compare-/robustness-like reports
rendered in headless Chromium (every image loaded, the headline numbers in the DOM)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from equiseg.reports import figures as F
from equiseg.reports.html import Report, inline, write_html

MODS = ["rgb", "depth", "event", "lidar"]


def _png(path: Path, min_w: int = 500, min_h: int = 250) -> tuple[int, int]:
    assert path.is_file() and path.stat().st_size > 5000, path
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size[0] >= min_w and im.size[1] >= min_h, (path, im.size)
        assert len(set(np.asarray(im.convert("L")).flatten().tolist())) > 10  # not blank
        return im.size


def _train_log() -> list[dict]:
    recs = []
    for it in range(1, 101, 3):
        recs.append(
            {
                "iter": it,
                "lr": 1e-3 * (1 - it / 101),
                "loss": 2.0 / it**0.3,
                "loss_ce": 1.8 / it**0.3,
                "loss_sgm": 0.02 / it**0.2,
            }
        )
    recs += [{"iter": 50, "val": {"mIoU": 20.5}}, {"iter": 100, "val": {"mIoU": 31.25}}]
    return recs


def _grid_rows(n: int = 3, size: int = 32) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    rows = []
    for i, case in enumerate(["rain", "night", "overexposure"][:n]):
        label = torch.randint(0, 5, (size, size), generator=g)
        label[:3] = 255
        inputs = [torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=g) for _ in MODS]
        if i == 2:
            inputs[2] = None  # an absent modality: a grey tile marked "not given"
        preds = {
            m: torch.where(torch.rand(size, size, generator=g) < 0.3, 0, label.clamp(max=4))
            for m in ("a", "b")
        }
        rows.append({"title": case, "inputs": inputs, "label": label, "preds": preds})
    return rows


# ---------------------------------------------------------------------------------------------------
# figures


def test_every_figure_writes_a_png(tmp_path: Path) -> None:
    combos = ["R+D+E+L", "R+D+E", "R", "D"]
    _png(F.training_curves(_train_log(), tmp_path / "training.png", lambda_sgm=60), 1000, 300)
    _png(
        F.missing_modality_chart(
            combos,
            {"EMM": [40, 30, 20, None], "RMM (r = 0.5)": [38, 29, 25, 5]},
            tmp_path / "missing.png",
            abbreviations={"rgb": "R", "depth": "D"},
            clean=41.0,
        )
    )
    _png(
        F.noise_chart(
            ["clean", "NM low", "NM mid"], {"m1": [40, 35, 20], "m2": [38, 30, 28]}, tmp_path / "noise.png"
        )
    )
    per_stage = {f"stage{i}": {m: 10.0 * i - (30 if m == "lidar" else 0) for m in MODS} for i in range(1, 5)}
    _png(F.similarity_chart(per_stage, MODS, tmp_path / "similarity.png"))  # negative values drawn below 0
    _png(
        F.hbar_chart(["sun", "night", "fog"], [30.0, None, 12.5], tmp_path / "cases.png", xlabel="mIoU (%)"),
        500,
        150,
    )
    _png(
        F.bar_chart(
            ["a", "b"],
            {"x": [1.0, 2.0], "y": [2.0, float("nan")]},
            tmp_path / "bars.png",
            errors={"x": [0.1, None]},
            ylabel="%",
        )
    )
    _png(F.line_chart({"s": ([0, 1, 2], [1.0, 0.5, 0.25])}, tmp_path / "line.png", logy=True))
    confusion = F.confusion_heatmap(np.eye(4) * 10 + 1, ["a", "b", "c", "d"], tmp_path / "confusion.png")
    _png(confusion.path)
    grid = F.prediction_grid(
        _grid_rows(),
        ["RGB", "Depth", "Event", "LiDAR"],
        [(i * 40, 80, 200 - i * 30) for i in range(5)],
        tmp_path / "fig2.png",
        class_names=list("vwxyz"),
        errors=True,
    )
    w, h = _png(grid, 1000, 400)
    assert w > h  # 4 modalities + ground truth + 2 models + errors, 3 rows
    _png(F.bar_chart(["a"], {"x": [1.0]}, tmp_path / "bar.png"))
    _png(F.line_chart({"s": ([0, 1], [1.0, 2.0])}, tmp_path / "line.png"))


def test_svg_on_request(tmp_path: Path, monkeypatch) -> None:
    p = F.bar_chart(["a"], {"x": [1.0]}, tmp_path / "a.png")
    assert p.is_file() and not p.with_suffix(".svg").exists()  # PNG only by default
    F.bar_chart(["a"], {"x": [1.0]}, tmp_path / "b.png", formats=("png", "svg"))
    svg = (tmp_path / "b.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    monkeypatch.setenv(F.FORMATS_ENV, "png,svg")
    assert F.figure_formats() == ("png", "svg")
    F.training_curves(_train_log(), tmp_path / "t.png")
    assert (tmp_path / "t.png").is_file() and (tmp_path / "t.svg").is_file()
    monkeypatch.setenv(F.FORMATS_ENV, "png,gif")
    with pytest.raises(ValueError, match="unknown format"):
        F.figure_formats()


def test_confusion_heatmap_normalises_rows(tmp_path: Path) -> None:
    counts = np.array(
        [
            [8, 2, 0, 0],  # class a: 80 % right, 20 % taken for b
            [0, 0, 0, 0],  # class b: never in the ground truth, but predicted -> kept, row empty (NaN)
            [0, 0, 0, 0],  # class c: neither in the ground truth nor predicted -> dropped
            [1, 1, 0, 2],  # class d: 25 / 25 / 50
        ]
    )
    fig = F.confusion_heatmap(torch.tensor(counts), ["a", "b", "c", "d"], tmp_path / "c.png")
    assert fig.classes == ["a", "b", "d"] and fig.path.is_file()
    np.testing.assert_allclose(fig.matrix[0], [80.0, 20.0, 0.0])
    assert np.isnan(fig.matrix[1]).all()
    np.testing.assert_allclose(fig.matrix[2], [25.0, 25.0, 50.0])
    np.testing.assert_allclose(np.nansum(fig.matrix, axis=1), [100.0, 0.0, 100.0])
    kept = F.confusion_heatmap(counts, list("abcd"), tmp_path / "all.png", drop_empty=False)
    assert kept.classes == list("abcd") and kept.matrix.shape == (4, 4)
    with pytest.raises(ValueError, match="K×K"):
        F.confusion_heatmap(counts, ["a"], tmp_path / "bad.png")


# ---------------------------------------------------------------------------------------------------
# HTML writer


def test_html_writer_escapes_makes_tables_and_embeds(tmp_path: Path) -> None:
    png = F.bar_chart(["a"], {"x": [1.0]}, tmp_path / "fig" / "chart.png")
    md = "\n".join(
        [
            "# Title <b>& co",
            "",
            "Text with <script>alert(1)</script>, **bold**, `a<b>`, [json](r.json) and [x](javascript:alert(1)).",
            "",
            "| Model | mIoU | note |",
            "|---|---:|:---:|",
            "| m<1> | 12.34 | `a|b` |",
            "| m2 | 5.00 | x \\| y |",
            "",
            "![a chart & more](fig/chart.png)",
            "",
            "- item **one**",
            "- item two",
        ]
    )
    path = write_html(md, tmp_path / "report.html")
    text = path.read_text()
    assert "<title>Title &lt;b&gt;&amp; co</title>" in text and "<h1>Title &lt;b&gt;&amp; co</h1>" in text
    assert "<script" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<strong>bold</strong>" in text and "<code>a&lt;b&gt;</code>" in text
    assert '<a href="r.json">json</a>' in text and 'href="javascript' not in text
    assert '<th class="num">mIoU</th>' in text and '<td class="num">12.34</td>' in text
    assert "<td>m&lt;1&gt;</td>" in text and '<td class="mid"><code>a|b</code></td>' in text
    assert '<td class="mid">x | y</td>' in text
    assert "<ul><li>item <strong>one</strong></li><li>item two</li></ul>" in text
    # the figure is embedded (self-contained), enlargeable, with its caption
    src = re.search(r'<img src="data:image/png;base64,([^"]+)" alt="a chart &amp; more">', text)
    assert src and base64.b64decode(src.group(1)) == png.read_bytes()
    assert 'class="zoom"' in text and "<figcaption>a chart &amp; more" in text
    assert inline("a * b * c") == "a * b * c"  # lone asterisks are not emphasis

    linked = Report("t", base_dir=tmp_path, embed=False).figure("fig/chart.png", "c").html()
    assert '<img src="fig/chart.png"' in linked
    with pytest.warns(UserWarning, match="does not exist"):
        missing = Report("t", base_dir=tmp_path).figure("nope.png", "c").html()
    assert "Figure not found" in missing
    built = (
        Report("Built", base_dir=tmp_path)
        .heading("Built", 1)
        .paragraph("p")
        .table(["a", "b"], [[1, 2.5]], align=["", "num"])
        .html()
    )
    assert '<td>1</td><td class="num">2.5</td>' in built


# ---------------------------------------------------------------------------------------------------
# reports in a browser

CHROMIUM = next(
    (shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None
)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium not installed (Debian: apt-get install chromium; .ci/run does)",
)
# Injected into a copy of the report (the report itself carries no script): after load, record how many
# images decoded, and whether clicking a figure enlarges it (its label turns into a fixed overlay).
PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0);
  let zoom = 'none';
  const label = document.querySelector('.zoom + label');
  if (label) {
    label.click();
    const box = document.getElementById(label.htmlFor);
    zoom = box.checked && getComputedStyle(label).position === 'fixed' ? 'ok' : 'fail';
    label.click();
  }
  const d = document.createElement('div');
  d.id = 'equiseg-check';
  d.dataset.total = imgs.length;
  d.dataset.loaded = ok.length;
  d.dataset.broken = imgs.filter(i => !ok.includes(i)).map(i => i.alt).join('|');
  d.dataset.zoom = zoom;
  document.body.appendChild(d);
});
</script>"""
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--virtual-time-budget=5000",
]


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=90,
    )


def _browser_check(html: Path, tmp: Path, headline: list[str]) -> None:
    """Load ``html`` in headless Chromium: every image decoded, a figure enlarges, ``headline`` in the
    DOM; and a screenshot is not blank."""
    text = html.read_text()
    imgs = re.findall(r"<img [^>]*>", text)
    assert imgs and all('src="data:image/png;base64,' in i for i in imgs)  # self-contained
    probe = html.with_name(f"probe_{html.name}")  # same folder: relative links resolve as in the report
    probe.write_text(text.replace("</body>", PROBE + "</body>"))
    r = _chromium(["--dump-dom", probe.as_uri()], tmp / "profile")
    m = re.search(r'<div id="equiseg-check"([^>]*)>', r.stdout)
    assert m, f"no probe result in the DOM (rc {r.returncode}): {r.stderr[-2000:]}"
    got = dict(re.findall(r'data-([\w-]+)="([^"]*)"', m.group(1)))
    assert int(got["total"]) == len(imgs) and got["loaded"] == got["total"], got
    assert got["zoom"] == "ok", got
    dom = re.sub(r"<[^>]+>", " ", re.sub(r'src="data:[^"]*"', "", r.stdout))
    dom = " ".join(dom.split())
    for needle in headline:
        assert needle in dom, needle
    shot = tmp / f"{html.parent.name}_{html.stem}.png"
    r = _chromium([f"--screenshot={shot}", "--window-size=1200,1600", html.as_uri()], tmp / "profile")
    assert shot.is_file(), r.stderr[-2000:]
    with Image.open(shot) as im:
        assert len(set(np.asarray(im.convert("L").resize((200, 260))).flatten().tolist())) > 20


@pytest.fixture(scope="module")
def bench_result() -> dict:
    from equiseg.robustness import run_benchmark

    def stub(inputs):  # perfect (class 1) when RGB is present and non-zero, class 0 otherwise
        x = inputs[0]
        good = x is not None and bool(x.abs().sum() > 0)
        logits = torch.zeros(x.shape[0] if x is not None else 1, 2, 16, 16)
        logits[:, 1 if good else 0] = 1.0
        return logits

    samples = [([torch.randn(3, 16, 16) for _ in range(3)], torch.ones(16, 16, dtype=torch.long))]
    return run_benchmark(
        stub,
        samples,
        rmm_rates=(0.5,),
        progress=False,
        modality_names=["rgb", "depth", "event"],
        convention="present",
        model_name="stub",
    )


def _analysis_result() -> dict:
    stages = {f"stage{i}": {m: 20.0 * i - 5 for m in MODS} for i in range(1, 5)}
    sec = {"per_stage": stages, "last_stage": stages["stage4"], "last_stage_std": {m: 1.0 for m in MODS}}
    return {"modalities": MODS, "similarity": sec, "num_samples": 3, "definition": "post-LN stage output"}


def _demo_like_report(out: Path, bench: dict) -> Path:
    """The demo's report from synthetic results, through the demo's own writers (no training)."""
    from equiseg.config import load_experiment
    from equiseg.data.constants import DELIVER_CLASSES, DELIVER_PALETTE
    from equiseg.reports.robustness import robustness_section
    from equiseg.tasks.analysis import analysis_section
    from equiseg.tasks.demo import DemoSize, _evaluation_figures, _report, demo_config_path

    classes = list(DELIVER_CLASSES)
    confusion = np.zeros((25, 25), int)
    confusion[:6, :6] = np.eye(6, dtype=int) * 90 + 2
    per_class = {
        c: {"IoU": 50.0 + i if i < 6 else None, "Acc": 60.0 if i < 6 else None} for i, c in enumerate(classes)
    }
    metrics = {
        "mIoU": 41.23,
        "aAcc": 80.5,
        "mAcc": 55.0,
        "convention": "present",
        "num_samples": 4,
        "other_convention": {"mIoU": 20.1, "mAcc": 30.0, "convention": "reference"},
        "per_case": {
            "sun": {"mIoU": 45.0, "aAcc": 81.0, "mAcc": 56.0},
            "night": {"mIoU": 30.5, "aAcc": 70.0, "mAcc": 40.0},
        },
        "per_class": per_class,
        "confusion": confusion.tolist(),
        "precision_note": "fp32",
    }
    figures = out / "figures"
    curve = F.training_curves(_train_log(), figures / "training.png", lambda_sgm=1)
    panel = F.prediction_grid(
        _grid_rows(2),
        ["RGB", "Depth", "Event", "LiDAR"],
        DELIVER_PALETTE,
        figures / "predictions.png",
        class_names=classes,
        errors=True,
    )
    evaluation = _evaluation_figures(metrics, classes, figures)
    assert set(evaluation) == {"per_case", "per_class", "confusion"}
    cfg = load_experiment(demo_config_path())
    size = DemoSize(train=8, val=4, size=64, max_iters=4, val_interval=2, robustness_samples=2)
    sections = [robustness_section(bench, out), analysis_section(_analysis_result(), out)]
    times = {"data": 1.0, "train": 2.0}
    text = _report(cfg, size, metrics, times, 3.5, panel, curve, out, True, sections, evaluation)
    (out / "report.md").write_text(text)
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert (out / link).is_file(), link
    return write_html(text, out / "report.html")


def _compare_result(out: Path) -> dict:
    """A two-model ``compare`` result as :func:`~equiseg.tasks.compare.run_compare` builds it."""
    from equiseg.tasks.compare import COLUMNS, COSTS

    combos = ["rgb+depth", "rgb", "depth"]
    models = {}
    for k, name in enumerate(["equiseg_b0", "segformer_b0"]):
        runs = []
        for seed in (1, 2):
            summary = {key: 30.0 + k + seed for key, _ in COLUMNS}
            summary.update(nm_high=10.0 + seed, clean=40.0 + k + seed)
            runs.append(
                {
                    "summary": summary,
                    "emm": {c: 20.0 + i + k for i, c in enumerate(combos)},
                    "similarity": {"rgb": 60.0, "depth": 35.0 + k} if k == 0 else None,
                    "cost": {"params_m": 3.7, "gflops": 1.2, "img_per_s": 20.0},
                    "seed": seed,
                    "iterations": 2,
                    "train_seconds": 1.0,
                    "eval_seconds": 1.0,
                    "checkpoint": "x.pt",
                }
            )
        keys = [key for key, _ in (*COLUMNS, *COSTS)]
        mean = {
            key: float(np.mean([r["summary"].get(key, r["cost"].get(key, 0)) for r in runs])) for key in keys
        }
        std = {key: 0.5 for key in keys}
        models[name] = {"runs": runs, "mean": mean, "std": std, "emm": runs[0]["emm"]}
    return {
        "config": "c.yaml",
        "overrides": [],
        "quick": True,
        "seeds": [1, 2],
        "split": "val",
        "convention": "present",
        "modalities": ["rgb", "depth"],
        "models": models,
        "machine": {"cpu": "test CPU", "threads": 1},
        "seconds": 3.0,
    }


def test_compare_figures_and_report(tmp_path: Path) -> None:
    from equiseg.tasks.compare import compare_chart, compare_figures, noise_levels, write_compare_reports

    result = _compare_result(tmp_path)
    noise = noise_levels(result)
    assert noise["levels"] == ["low", "mid", "high"]
    assert noise["models"]["equiseg_b0"] == [
        41.5,
        31.5,
        31.5,
        11.5,
    ]  # clean, NM low/mid/high: mean of 2 seeds
    files = {"chart": compare_chart(result, tmp_path / "compare.png"), **compare_figures(result, tmp_path)}
    assert set(files) == {"chart", "missing", "noise", "similarity"}
    for p in files.values():
        _png(p)
    files["predictions"] = F.prediction_grid(
        _grid_rows(2), ["RGB", "Depth"], [(0, 0, 0), (0, 0, 255)] * 3, tmp_path / "compare_predictions.png"
    )
    result["files"] = {k: str(v) for k, v in files.items()}
    html = write_compare_reports(result, tmp_path).read_text()
    md = (tmp_path / "compare.md").read_text()
    for name in (
        "compare.png",
        "compare_missing.png",
        "compare_noise.png",
        "compare_similarity.png",
        "compare_predictions.png",
    ):
        assert f"]({name})" in md, name
    assert "## Noisy modalities" in md and "| equiseg_b0 | 41.50 | 31.50 | 31.50 | 11.50 |" in md
    assert html.count("<img ") == 5 and "<td>equiseg_b0</td>" in html and "Predictions (paper Fig. 2)" in html
    json.dumps(result)  # the files are plain strings


@needs_chromium
def test_reports_render_in_chromium(tmp_path: Path, bench_result: dict) -> None:
    from equiseg.reports.robustness import write_robustness_report
    from equiseg.tasks.compare import compare_chart, compare_figures, write_compare_reports

    demo = _demo_like_report(tmp_path / "demo", bench_result)
    text = demo.read_text()
    assert text.count("<img ") == 8  # 3 evaluation charts, training, predictions, 2 robustness, similarity
    _browser_check(
        demo, tmp_path, ["Clean val mIoU 41.23 %", "20.10 %", "Per class", "Robustness under sensor failures"]
    )

    rob = write_robustness_report(bench_result, tmp_path / "rob", title="Stub robustness", model_name="stub")
    assert (rob.parent / "report.html").is_file()
    _browser_check(rob.parent / "report.html", tmp_path, ["Stub robustness", f"{100 * 4 / 7:.2f}"])

    cmp_dir = tmp_path / "compare"
    cmp_dir.mkdir()
    result = _compare_result(cmp_dir)
    files = {"chart": compare_chart(result, cmp_dir / "compare.png"), **compare_figures(result, cmp_dir)}
    result["files"] = {k: str(v) for k, v in files.items()}
    page = write_compare_reports(result, cmp_dir)
    _browser_check(page, tmp_path, ["EQUISeg and its peers", "41.50 ± 0.50", "segformer_b0"])


def test_render_study_rewrites_charts_and_html(tmp_path: Path) -> None:
    from equiseg.tasks.study import paired_difference, render_study

    full, row = [30.0, 32.0], [28.0, 31.0]
    stats = lambda v: {"values": v, "mean": sum(v) / 2, "std": 1.0, "vs_full": paired_difference(v, full)}  # noqa: E731
    section = {
        "init": "scratch",
        "table": "tab2",
        "full": "cmtb",
        "rows": {
            "cmtb": {"mIoU": stats(full), "emm_avg": stats(full)},
            "hub_mean": {"mIoU": stats(row), "emm_avg": stats(row)},
        },
    }
    study = {
        "config": "c.yaml",
        "overrides": [],
        "quick": True,
        "seeds": [1, 2],
        "inits": ["scratch"],
        "tables": ["tab2"],
        "recipe_for_pretrained_inits": ["train.lr=6e-5"],
        "sections": [section],
        "seconds": 1.0,
    }
    (tmp_path / "study.json").write_text(json.dumps(study))
    render_study(tmp_path / "study.json")
    assert "](study_scratch_tab2.png)" in (tmp_path / "study.md").read_text()
    _png(tmp_path / "study_scratch_tab2.png")
    html = (tmp_path / "report.html").read_text()
    assert html.count('<img src="data:image/png;base64,') == 1 and "(Δ -1.50 ± " in html
