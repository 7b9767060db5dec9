"""One-line user errors of ``equiseg predict`` / ``equiseg export``: an unsupported
``--opset``, ``--out`` naming a file, and checkpoint weights that do not fit their model config -- the
shared :func:`~equiseg.models.weights.load_state_dict_strict` message, never torch's key dump."""

from __future__ import annotations

import json

import pytest
import torch

import equiseg
from equiseg.cli import main
from equiseg.data import DELIVER_NORM_STATS
from equiseg.engine import save_checkpoint
from equiseg.models.weights import describe_state_dict_mismatch, load_state_dict_strict
from equiseg.tasks.export import (
    DEFAULT_OPSET,
    MAX_OPSET,
    MIN_OPSET,
    check_opset,
    export,
    load_checkpoint_model,
)

MODS = ["rgb", "depth"]
TINY = dict(embed_dims=(8, 16, 40, 64), depths=(1, 1, 1, 1), decoder_dim=32, drop_path_rate=0.0)
META = {"norm_stats": {m: DELIVER_NORM_STATS[m].to_dict() for m in MODS}}


def _model(**kw) -> equiseg.EQUISeg:
    torch.manual_seed(0)
    return equiseg.create_model("equiseg_b0", num_classes=5, modalities=MODS, **{**TINY, **kw}).eval()


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> dict:
    """A good checkpoint, a checkpoint whose weights do not fit its model_config (separate encoders, so
    other key names, and 7 classes, so other head shapes), and a 1-sample DeLiVER-layout val split."""
    root = tmp_path_factory.mktemp("user_errors")
    good, other = _model(), _model(share_encoder=False)
    ckpt = root / "best.pt"
    save_checkpoint(ckpt, {"model": good.state_dict(), "model_config": good.cfg.to_dict(), "meta": META})
    bad = root / "mismatch.pt"
    cfg = {**good.cfg.to_dict(), "num_classes": 7}
    save_checkpoint(bad, {"model": other.state_dict(), "model_config": cfg, "meta": META})
    data = root / "deliver"
    equiseg.data.synth.generate(
        data, layout="deliver", splits={"val": 1}, size=(64, 64), seed=0, progress=False
    )
    return {"root": root, "ckpt": ckpt, "bad": bad, "data": data, "good": good, "other": other}


def _one_line_error(capsys, command: str) -> str:
    captured = capsys.readouterr()
    err = captured.err
    assert "Traceback" not in err and err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith(f"equiseg {command}: error: "), err
    return err


# -------------------------------------------------------------------------------------------- opset


@pytest.mark.parametrize("opset", [5, 13, MAX_OPSET + 1])
def test_export_unsupported_opset_names_the_range(work, tmp_path, capsys, opset):
    out = tmp_path / "onnx"
    args = ["export", "--checkpoint", str(work["ckpt"]), "--format", "onnx", "--out", str(out)]
    assert main([*args, "--opset", str(opset)]) == 2
    err = _one_line_error(capsys, "export")
    assert (
        f"--opset {opset} is not supported; supported opsets: 14-{MAX_OPSET} (17 is the tested default)"
        in err
    )
    assert not out.exists()  # refused before anything was read or written


def test_check_opset_bounds():
    assert MIN_OPSET == 14 and MIN_OPSET <= DEFAULT_OPSET <= MAX_OPSET
    for ok in (MIN_OPSET, DEFAULT_OPSET, MAX_OPSET):
        check_opset(ok)
    for bad in (MIN_OPSET - 1, MAX_OPSET + 1, "17", True):
        with pytest.raises(ValueError, match="supported opsets"):
            check_opset(bad)
    with pytest.raises(ValueError, match="--opset 5 is not supported"):
        export(_model(), "onnx", "unused", opset=5)  # the API too, before the folder is made


# ---------------------------------------------------------------------------------------- --out FILE


def test_predict_out_is_a_file(work, tmp_path, capsys):
    out = tmp_path / "out.png"
    out.write_bytes(b"x")
    args = ["predict", "--checkpoint", str(work["ckpt"]), "--input", str(work["data"]), "--out", str(out)]
    assert main(args) == 2
    err = _one_line_error(capsys, "predict")
    assert f"--out {out} is a file, expected a folder" in err
    assert out.read_bytes() == b"x"


# ------------------------------------------------------------------------------ state-dict mismatches


def _assert_short_mismatch(err: str, source) -> None:
    assert str(source) in err
    assert "weights do not match the model config stored with them" in err
    assert "Error(s) in loading state_dict" not in err and "size mismatch for" not in err  # torch's dump
    assert "missing keys (" in err and "unexpected keys (" in err and "shape mismatches (" in err
    assert err.count("...") == 2 and len(err) < 800, err  # at most 3 names of each kind (2 shapes)


def test_predict_and_export_mismatched_checkpoint(work, tmp_path, capsys):
    args = ["predict", "--checkpoint", str(work["bad"]), "--input", str(work["data"]), "--out", str(tmp_path)]
    assert main(args) == 2
    _assert_short_mismatch(_one_line_error(capsys, "predict"), work["bad"])
    out = tmp_path / "st"
    args = ["export", "--checkpoint", str(work["bad"]), "--format", "safetensors", "--out", str(out)]
    assert main(args) == 2
    _assert_short_mismatch(_one_line_error(capsys, "export"), work["bad"])
    assert not out.exists()


def test_export_folder_with_another_architecture(work, tmp_path, capsys):
    """``from_pretrained`` of an export whose config.json was edited: the one-line message."""
    out = tmp_path / "export"
    assert (
        main(["export", "--checkpoint", str(work["ckpt"]), "--format", "safetensors", "--out", str(out)]) == 0
    )
    capsys.readouterr()
    config = json.loads((out / "config.json").read_text())
    config["model_config"]["hub"] = "mean"
    (out / "config.json").write_text(json.dumps(config))
    args = ["predict", "--checkpoint", str(out), "--input", str(work["data"]), "--out", str(tmp_path / "p")]
    assert main(args) == 2
    err = _one_line_error(capsys, "predict")
    assert str(out / "model.safetensors") in err and "checkpoint is for another EQUISeg architecture" in err
    assert "Error(s) in loading state_dict" not in err and len(err) < 800
    with pytest.raises(ValueError, match="another EQUISeg architecture"):
        load_checkpoint_model(out)


def test_describe_and_load_state_dict_strict(work):
    good, other = work["good"], work["other"]
    assert describe_state_dict_mismatch(good.state_dict(), good.state_dict()) == ""
    line = describe_state_dict_mismatch(good.state_dict(), other.state_dict())
    n_missing = len(set(good.state_dict()) - set(other.state_dict()))
    n_unexpected = len(set(other.state_dict()) - set(good.state_dict()))
    assert n_missing > 3 and n_unexpected > 3
    assert line.startswith(f"{n_missing} missing keys (") and f", {n_unexpected} unexpected keys (" in line
    assert line.endswith(", 0 shape mismatches") and "\n" not in line
    # shapes: 7 classes against 5
    seven = equiseg.create_model("equiseg_b0", num_classes=7, modalities=MODS, **TINY).state_dict()
    line = describe_state_dict_mismatch(good.state_dict(), seven)
    assert line.startswith("0 missing keys, 0 unexpected keys, 2 shape mismatches (head.linear_pred.weight: ")
    assert "file (7, 32, 1, 1), model (5, 32, 1, 1); head.linear_pred.bias: file (7,), model (5,))" in line
    target = _model(share_encoder=False)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(ValueError, match=r"^f\.pt: no fit: 0 missing keys, 0 unexpected keys, 2 shape mis"):
        load_state_dict_strict(target, {**target.state_dict(), **{k: seven[k] for k in seven if "pred" in k}},
                               "f.pt", "no fit")  # fmt: skip
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())  # nothing loaded
    with pytest.raises(ValueError, match=r"^f\.pt: weights do not match the model: \d+ missing keys \("):
        load_state_dict_strict(target, good.state_dict(), "f.pt")
    load_state_dict_strict(target, other.state_dict(), "f.pt")  # a fitting state dict loads
    assert all(torch.equal(a, b) for a, b in zip(target.state_dict().values(), other.state_dict().values()))
