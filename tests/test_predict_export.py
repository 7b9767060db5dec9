"""Inference and export end to end on a tiny model: ``equiseg predict`` on a
DeLiVER-layout folder and on explicit files with a modality absent; safetensors and ONNX exports,
``from_pretrained``, ``create_model(pretrained=...)`` and onnxruntime-vs-PyTorch at two sizes."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import equiseg
from equiseg.cli import main
from equiseg.data import DELIVER_NORM_STATS
from equiseg.engine import save_checkpoint
from equiseg.tasks.export import ExportResult, export, export_onnx, export_safetensors
from equiseg.tasks.predict import iter_predict, predict, predict_to_dir

MODS = ["rgb", "depth"]
WEIGHTS = "model.safetensors"
TINY = dict(embed_dims=(8, 16, 40, 64), depths=(1, 1, 1, 1), decoder_dim=32, drop_path_rate=0.0)
PALETTE = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255]]
META = {
    "classes": ["a", "b", "c", "d", "e"],
    "palette": PALETTE,
    "modalities": MODS,
    "ignore_index": 255,
    "rgb_modalities": ["rgb"],
    "norm_stats": {m: DELIVER_NORM_STATS[m].to_dict() for m in MODS},
}


def tiny_model() -> equiseg.EQUISeg:
    torch.manual_seed(0)
    model = equiseg.create_model("equiseg_b0", num_classes=5, modalities=MODS, **TINY)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval mode is really exercised
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> dict:
    """A checkpoint of the tiny model and a 2-sample DeLiVER-layout val split (64×64)."""
    root = tmp_path_factory.mktemp("predict_export")
    model = tiny_model()
    ckpt = root / "best.pt"
    save_checkpoint(ckpt, {"model": model.state_dict(), "model_config": model.cfg.to_dict(), "meta": META})
    data = root / "deliver"
    equiseg.data.synth.generate(
        data, layout="deliver", splits={"val": 2}, size=(64, 64), seed=0, progress=False
    )
    return {"root": root, "ckpt": ckpt, "model": model, "data": data}


def _colours_in_palette(path: Path) -> None:
    img = np.asarray(Image.open(path))
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    colours = {tuple(c) for c in img.reshape(-1, 3)}
    assert colours <= {tuple(c) for c in PALETTE}, colours


# ------------------------------------------------------------------------------------- predict


def test_predict_deliver_folder_cli(work, tmp_path):
    out = tmp_path / "out"
    args = ["--quiet", "predict", "--checkpoint", str(work["ckpt"]), "--input", str(work["data"]),
            "--out", str(out), "--overlay", "--raw", "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    rgb_files = sorted((work["data"] / "img").rglob("*_rgb_*.png"))
    assert len(rgb_files) == 2
    preds = predict(work["ckpt"], work["data"])  # the same through the Python API
    for src, pred in zip(rgb_files, preds, strict=True):
        rel = src.relative_to(work["data"] / "img").with_suffix("")  # condition/val/sequence/frame_rgb_front
        colour, overlay, classes = (out / f"{rel}{s}.png" for s in ("_pred", "_overlay", "_classes"))
        for f in (colour, overlay, classes):
            assert f.is_file(), f
        _colours_in_palette(colour)
        ids = np.asarray(Image.open(classes))
        assert ids.shape == (64, 64) and ids.dtype == np.uint8 and ids.max() < 5
        assert np.array_equal(ids, pred.numpy())
        assert np.array_equal(np.asarray(Image.open(colour)), np.asarray(PALETTE, np.uint8)[ids])
        # overlay = 50 % colour + 50 % RGB
        rgb = np.asarray(Image.open(src).convert("RGB")).astype(np.float32)
        expected = np.clip(0.5 * np.asarray(PALETTE, np.float32)[ids] + 0.5 * rgb + 0.5, 0, 255).astype(
            np.uint8
        )
        assert np.abs(np.asarray(Image.open(overlay)).astype(int) - expected).max() <= 1


def test_predict_matches_model_and_resizes_back(work):
    """Predictions equal the model's argmax on normalised inputs; --short-side predicts at input size."""
    model = work["model"]
    ds = equiseg.data.DeLiVER(work["data"], "val", MODS)
    raw, _ = ds.load(0)
    inputs = [DELIVER_NORM_STATS[m].apply(x)[None] for m, x in zip(MODS, raw, strict=True)]
    with torch.no_grad():
        expected = model(inputs).argmax(1)[0]
    loaded = equiseg.load_model(work["ckpt"])
    assert torch.equal(predict(loaded, work["data"])[0], expected)
    # --short-side 96: the forward runs at 96×96 (val transform), the prediction is back at 64×64
    up = [
        torch.nn.functional.interpolate(x, size=(96, 96), mode="bilinear", align_corners=False)
        for x in inputs
    ]
    with torch.no_grad():
        logits = torch.nn.functional.interpolate(
            model(up), size=(64, 64), mode="bilinear", align_corners=False
        )
    resized = predict(loaded, {"rgb": raw[0], "depth": raw[1]}, short_side=96)[0]
    assert resized.shape == (64, 64) and resized.dtype == torch.int64
    assert (resized == logits.argmax(1)[0]).float().mean() > 0.99  # resampling order differs: float round-off


def test_predict_explicit_files_with_absent_modality(work, tmp_path):
    rgb = next((work["data"] / "img").rglob("*_rgb_*.png"))
    small = tmp_path / "frame.png"  # a non-square size that is not a multiple of 32
    Image.open(rgb).convert("RGB").resize((72, 48)).save(small)
    out = tmp_path / "out"
    assert main(["--quiet", "predict", "--checkpoint", str(work["ckpt"]), "--input", f"rgb={small}",
                 "--out", str(out), "--overlay", "--device", "cpu"]) == 0  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["frame_overlay.png", "frame_pred.png"]
    _colours_in_palette(out / "frame_pred.png")
    assert np.asarray(Image.open(out / "frame_pred.png")).shape == (48, 72, 3)
    # depth absent = passed as None (the model-aware way), not zero-filled
    model = work["model"]
    x = DELIVER_NORM_STATS["rgb"].apply(torch.from_numpy(np.array(Image.open(small))).permute(2, 0, 1))[None]
    with torch.no_grad():
        expected = model([x, None]).argmax(1)[0]
    (pred,) = predict(work["ckpt"], {"rgb": small})
    assert torch.equal(pred, expected)
    # the depth-only sample of the same frame is named after the depth file
    depth = Path(str(rgb).replace("/img/", "/hha/").replace("_rgb_", "_depth_"))
    (p,) = list(iter_predict(work["ckpt"], {"depth": depth}))
    assert p.name == depth.stem and p.raw[0] is None and p.pred.shape == (64, 64)


def test_predict_errors(work, tmp_path, capsys):
    rgb = next((work["data"] / "img").rglob("*_rgb_*.png"))
    base = ["predict", "--checkpoint", str(work["ckpt"]), "--out", str(tmp_path / "o"), "--input"]
    assert main([*base, f"lidar={rgb}"]) == 2
    err = capsys.readouterr().err
    assert (
        "unknown modality 'lidar'" in err and "rgb, depth" in err and "\n" == err[-1] and err.count("\n") == 1
    )
    assert main([*base, f"rgb={tmp_path / 'nope.png'}"]) == 2
    assert "nope.png" in capsys.readouterr().err
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    assert main([*base, f"rgb={bad}"]) == 2
    assert "bad.png" in capsys.readouterr().err
    assert main([*base, str(rgb)]) == 2  # a bare file: which modality?
    assert "rgb=" in capsys.readouterr().err
    assert main([*base, str(tmp_path)]) == 2  # a folder in no known layout
    assert "not a known data set layout" in capsys.readouterr().err
    assert main([*base, str(work["data"]), "--split", "test"]) == 2
    assert "no samples" in capsys.readouterr().err
    assert main([*base, f"rgb={rgb}", f"rgb={rgb}"]) == 2
    assert "given twice" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_predict_folder_with_missing_modality_folder(work, tmp_path):
    """A data set folder without one modality's folder predicts with that modality absent."""
    import shutil

    data = tmp_path / "rgb_only"
    shutil.copytree(work["data"] / "img", data / "img")
    with pytest.warns(UserWarning, match="absent"):
        written = predict_to_dir(work["ckpt"], data, tmp_path / "out")
    assert len(written) == 2 and all(p.name.endswith("_pred.png") for p in written)


# -------------------------------------------------------------------------------------- export


def test_safetensors_roundtrip_from_pretrained_and_create_model(work, tmp_path):
    out = tmp_path / "export"
    assert (
        main(["export", "--checkpoint", str(work["ckpt"]), "--format", "safetensors", "--out", str(out)]) == 0
    )
    config = json.loads((out / "config.json").read_text())
    assert config["model_config"] == work["model"].cfg.to_dict() and config["meta"] == META
    x = [torch.randn(2, 3, 64, 96) for _ in MODS]
    with torch.no_grad():
        ref = work["model"](x)
        ref_absent = work["model"]([x[0], None])
        loaded = equiseg.from_pretrained(out)
        assert loaded.meta == META and not loaded.training
        assert torch.equal(loaded(x), ref) and torch.equal(loaded([x[0], None]), ref_absent)
        created = equiseg.create_model(
            "equiseg_b0", num_classes=5, modalities=MODS, pretrained=out / WEIGHTS, **TINY
        ).eval()
        assert torch.equal(created(x), ref)
    # an export folder also serves as --checkpoint for predict
    rgb = next((work["data"] / "img").rglob("*_rgb_*.png"))
    assert torch.equal(predict(out, {"rgb": rgb})[0], predict(work["ckpt"], {"rgb": rgb})[0])
    with pytest.raises(ValueError, match="shape mismatch"):
        other = {**TINY, "decoder_dim": 16}
        equiseg.create_model("equiseg_b0", num_classes=5, modalities=MODS, pretrained=out / WEIGHTS, **other)


def test_onnx_matches_pytorch_at_two_sizes(work, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "export"
    assert main(["export", "--checkpoint", str(work["ckpt"]), "--format", "onnx", "--out", str(out),
                 "--size", "64", "64"]) == 0  # fmt: skip
    report = capsys.readouterr().out
    assert report.count("onnxruntime vs PyTorch") == 2, report
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == MODS
    meta = json.loads(session.get_modelmeta().custom_metadata_map["equiseg_config"])
    assert meta["meta"]["palette"] == PALETTE and meta["onnx"]["inputs"] == MODS
    model = work["model"]
    g = torch.Generator().manual_seed(1)
    for b, h, w in [(1, 64, 64), (3, 80, 112)]:  # the export size, and another batch and size
        x = [torch.randn(b, 3, h, w, generator=g) for _ in MODS]
        with torch.no_grad():
            ref = model(x)
        got = session.run(None, {m: t.numpy() for m, t in zip(MODS, x, strict=True)})[0]
        assert got.shape == (b, 5, h, w)
        diff = np.abs(got - ref.numpy()).max()
        assert diff <= 1e-4 * np.abs(ref.numpy()).max(), diff
    # zero-filled absent modality (the benchmark protocol) is an ordinary input of the graph
    x = [torch.randn(1, 3, 64, 64, generator=g), torch.zeros(1, 3, 64, 64)]
    with torch.no_grad():
        ref = model(x).numpy()
    got = session.run(None, {"rgb": x[0].numpy(), "depth": x[1].numpy()})[0]
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()


def test_export_api(work, tmp_path):
    pytest.importorskip("onnxruntime")
    model = work["model"].train()  # exported in eval mode; the caller's mode is restored
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # tracer and deprecation warnings are silenced by export
            r = export_onnx(model, tmp_path, size=(48, 80), meta=META)
        assert model.training and all(m.training for m in model.modules())
    finally:
        model.eval()
    assert isinstance(r, ExportResult) and r.path == tmp_path / "model.onnx" and len(r.checks) == 2
    assert [c.shape for c in r.checks] == [(1, 48, 80), (2, 88, 56)]
    assert all(c.ok and c.max_abs_diff < 1e-4 for c in r.checks)
    # both formats of one model (same weights and meta) share one folder and one config.json
    export_safetensors(work["model"], tmp_path, meta=META)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["onnx"]["inputs"] == MODS and config["meta"] == META
    with pytest.raises(ValueError, match="unknown export format"):
        export(work["model"], "tflite", tmp_path)
