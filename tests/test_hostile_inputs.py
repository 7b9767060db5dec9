"""Hostile but realistic input, second round: every case ends in one line on stderr naming the file,
folder or key (exit code 2), nothing on disk changes that should not, and no partial file is left.

* export folders hold one model: a second export, another model's weights or stray files are refused
  unless ``--overwrite``, which moves the old contents aside (never deletes); a failed export leaves the
  folder as it was;
* ``predict --out`` inside the input data set folder is refused (the next run would read the outputs);
* malformed configs (``_base_`` not a file name, ``model.pretrained``/``model.name`` of the wrong type),
  ``--short-side 0``, images declaring more pixels than ``EQUISEG_MAX_IMAGE_PIXELS``, and a run record
  (``result.json``) that is ``[]``, incomplete or truncated;
* a read-only ``--out`` is found before any work; a full disk names the file and leaves no 0-byte or
  partial file;
* quoted values are bounded, and a YAML alias bomb is refused.

Read-only folders: the tests run as root here, and root writes through mode bits, so :func:`read_only`
also makes ``os.open`` fail with ``EROFS`` under the folder (what a read-only mount does) when the
effective user is root. A full disk is simulated by ``os.fsync`` failing with ``ENOSPC`` (where the
kernel reports a full disk for buffered data at the latest).
"""

from __future__ import annotations

import errno
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import equiseg
from equiseg.cli import main
from equiseg.data import DELIVER_NORM_STATS
from equiseg.data.io import MAX_PIXELS_ENV, read_image
from equiseg.engine import save_checkpoint
from equiseg.utils import (
    QUOTE_LIMIT,
    WriteError,
    bounded_repr,
    read_json_record,
    write_atomic,
    write_json_atomic,
)

MODS = ["rgb", "depth"]
TINY = dict(embed_dims=(8, 16, 40, 64), depths=(1, 1, 1, 1), decoder_dim=32, drop_path_rate=0.0)
META = {"norm_stats": {m: DELIVER_NORM_STATS[m].to_dict() for m in MODS}}


def _model(seed: int) -> equiseg.EQUISeg:
    torch.manual_seed(seed)
    return equiseg.create_model("equiseg_b0", num_classes=5, modalities=MODS, **TINY).eval()


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> dict:
    """Checkpoints of two models of the same architecture (other weights) and a 1-sample DeLiVER split."""
    root = tmp_path_factory.mktemp("hostile")
    ckpts = {}
    for name, seed in (("a", 0), ("b", 1)):
        model = _model(seed)
        ckpts[name] = root / f"{name}.pt"
        save_checkpoint(
            ckpts[name], {"model": model.state_dict(), "model_config": model.cfg.to_dict(), "meta": META}
        )
    data = root / "deliver"
    equiseg.data.synth.generate(
        data, layout="deliver", splits={"val": 1}, size=(64, 64), seed=0, progress=False
    )
    cfg = root / "cfg.yaml"
    cfg.write_text("model: {name: equiseg_b0}\n")
    return {"root": root, "a": ckpts["a"], "b": ckpts["b"], "data": data, "cfg": cfg}


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith(f"equiseg {command}: error: "), err
    return err


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) with its bytes."""
    if not folder.exists():
        return {}
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _assert_no_partials(folder: Path) -> None:
    """No temporary file of an interrupted write and no 0-byte file anywhere under ``folder``."""
    for p in folder.rglob("*"):
        assert not p.name.endswith(".tmp"), p
        assert not (p.is_file() and p.stat().st_size == 0), p


def _no_space(fd: int) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.fixture
def disk_full(monkeypatch):
    """Every write that reaches ``os.fsync`` fails as on a full disk."""
    monkeypatch.setattr(os, "fsync", _no_space)


@pytest.fixture
def read_only(monkeypatch):
    """``read_only(folder)``: make ``folder`` read-only (mode bits; for root, ``os.open`` under it fails
    with ``EROFS`` as on a read-only mount, since root ignores mode bits)."""
    made = []
    real_open = os.open

    def make(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o555)
        made.append(folder)
        if os.geteuid() == 0:
            prefix = str(folder.resolve())

            def guarded(path, flags, *args, **kwargs):
                if str(Path(path).resolve()).startswith(prefix) and flags & (os.O_WRONLY | os.O_RDWR):
                    raise OSError(errno.EROFS, "Read-only file system", str(path))
                return real_open(path, flags, *args, **kwargs)

            monkeypatch.setattr(os, "open", guarded)
        return folder

    yield make
    for folder in made:
        folder.chmod(0o755)


# ------------------------------------------------------------------------------ export: one model


def _predict(ckpt: Path, inputs: Path, out: Path, *extra: str) -> int:
    args = ["--quiet", "predict", "--checkpoint", str(ckpt), "--input", str(inputs), "--out", str(out)]
    return main([*args, *extra])


def _train(cfg: Path, work_dir: Path, *overrides: str) -> int:
    args = ["--quiet", "train", str(cfg), "--work-dir", str(work_dir)]
    return main([*args, "--set", *overrides] if overrides else args)


def _export(ckpt: Path, out: Path, fmt: str = "safetensors", *extra: str) -> int:
    args = ["--quiet", "export", "--checkpoint", str(ckpt), "--format", fmt, "--out", str(out)]
    return main([*args, "--no-verify", *extra] if fmt == "onnx" else [*args, *extra])


def test_export_refuses_a_non_empty_folder_and_overwrite_moves_it_aside(work, tmp_path, capsys):
    out = tmp_path / "export"
    assert _export(work["a"], out) == 0
    capsys.readouterr()
    first = _snapshot(out)
    config = json.loads((out / "config.json").read_text())
    assert len(config["weights_sha256"]) == 64

    # the same export again, another model's safetensors, another model's ONNX, stray files: refused
    for ckpt, fmt in ((work["a"], "safetensors"), (work["b"], "safetensors"), (work["b"], "onnx")):
        assert _export(ckpt, out, fmt) == 2
        err = _one_line_error(capsys, "export")
        assert f"--out {out} " in err and "--overwrite" in err, err
        assert _snapshot(out) == first
    assert "another model" in err  # model B's ONNX beside model A's weights
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("mine")
    assert _export(work["a"], stray) == 2
    assert "notes.txt" in _one_line_error(capsys, "export")
    assert _snapshot(stray) == {"notes.txt": b"mine"}

    # --overwrite: the old set is moved aside whole, the new one is model B's alone
    assert _export(work["b"], out, "safetensors", "--overwrite") == 0
    assert "moved the previous contents" in capsys.readouterr().out
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("export.replaced-")]
    assert len(aside) == 1 and _snapshot(aside[0]) == first
    new = json.loads((out / "config.json").read_text())
    assert new["weights_sha256"] != config["weights_sha256"] and sorted(_snapshot(out)) == sorted(first)
    _assert_no_partials(tmp_path)


def test_export_adds_the_other_format_of_the_same_model(work, tmp_path):
    pytest.importorskip("onnx")
    out = tmp_path / "export"
    assert _export(work["a"], out) == 0
    weights = (out / "model.safetensors").read_bytes()
    assert _export(work["a"], out, "onnx") == 0  # same weights and meta: one consistent set
    config = json.loads((out / "config.json").read_text())
    assert config["onnx"]["file"] == "model.onnx" and (out / "model.safetensors").read_bytes() == weights
    assert sorted(_snapshot(out)) == ["config.json", "model.onnx", "model.safetensors"]


def test_export_failing_verification_is_left_complete_for_inspection(work, tmp_path, capsys, monkeypatch):
    pytest.importorskip("onnxruntime")
    import equiseg.tasks.export as export_module

    bad = [export_module.OnnxCheck((1, 64, 64), 1.0, 1.0, False)]
    monkeypatch.setattr(export_module, "verify_onnx", lambda *a, **k: bad)
    out = tmp_path / "export"
    args = ["--quiet", "export", "--checkpoint", str(work["a"]), "--format", "onnx", "--out", str(out)]
    assert main([*args, "--size", "64", "64"]) == 1
    err = _one_line_error(capsys, "export")
    assert f"{out / 'model.onnx'}: onnxruntime does not match PyTorch" in err, err
    assert sorted(_snapshot(out)) == ["config.json", "model.onnx"]
    assert json.loads((out / "config.json").read_text())["onnx"]["file"] == "model.onnx"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_export_on_a_full_disk_names_the_file_and_changes_nothing(work, tmp_path, capsys, monkeypatch):
    out = tmp_path / "export"
    assert _export(work["a"], out) == 0
    before = _snapshot(out)
    with monkeypatch.context() as m:
        m.setattr(os, "fsync", _no_space)
        assert _export(work["b"], out, "safetensors", "--overwrite") == 2
        err = _one_line_error(capsys, "export")
        assert f"{out / 'model.safetensors'}" in err and "No space left on device" in err, err
        assert _export(work["a"], tmp_path / "fresh") == 2
        assert f"{tmp_path / 'fresh' / 'model.safetensors'}" in _one_line_error(capsys, "export")
    assert _snapshot(out) == before  # not moved aside: the new set never became complete
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no staging folder, no fresh/
    _assert_no_partials(tmp_path)


# --------------------------------------------------------------------- predict: outputs vs inputs


@pytest.mark.parametrize("where", ["preds", "img/preds", "."])
def test_predict_out_inside_the_input_folder_is_refused(work, capsys, where):
    data = work["data"]
    before = _snapshot(data)
    out = data / where
    assert _predict(work["a"], data, out) == 2
    err = _one_line_error(capsys, "predict")
    assert f"--out {out} is inside the input folder {data}" in err, err
    assert _snapshot(data) == before


# ------------------------------------------------------------------------ malformed configs / args


@pytest.mark.parametrize("base", ["[ok.yaml]", "5", "{a: 1}", "''"])
def test_base_that_is_not_a_file_name(work, tmp_path, capsys, base):
    (tmp_path / "ok.yaml").write_text("train: {seed: 1}\n")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"_base_: {base}\n")
    work_dir = tmp_path / "run"
    assert _train(cfg, work_dir) == 2
    err = _one_line_error(capsys, "train")
    assert f"{cfg.resolve()}: _base_: expected the file name of one config" in err, err
    assert not work_dir.exists()


@pytest.mark.parametrize(
    "item, key",
    [
        ("model.pretrained=true", "model.pretrained"),
        ("model.pretrained=false", "model.pretrained"),
        ("model.pretrained=5", "model.pretrained"),
        ("model.name=[x]", "model.name"),
        ("model.name=5", "model.name"),
    ],
)
def test_model_name_and_pretrained_of_the_wrong_type(work, tmp_path, capsys, item, key):
    work_dir = tmp_path / "run"
    assert _train(work["cfg"], work_dir, item) == 2
    err = _one_line_error(capsys, "train")
    assert f"error: {key}: expected " in err, err
    assert not work_dir.exists()


def test_predict_short_side_zero(work, tmp_path, capsys):
    out = tmp_path / "out"
    assert _predict(work["a"], work["data"], out, "--short-side", "0") == 2
    err = _one_line_error(capsys, "predict")
    assert "--short-side: expected an integer >= 32" in err and "got 0" in err
    assert not out.exists()


def _png_header_only(width: int, height: int) -> bytes:
    """A tiny, well-formed RGB PNG whose header declares ``width × height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = chunk(b"IDAT", zlib.compress(b"\0" * 16))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + pixels + chunk(b"IEND", b"")


def test_image_declaring_too_many_pixels(work, tmp_path, capsys, monkeypatch):
    """A 70-byte PNG declaring 100000² pixels (OpenCV's own error before), and -- the 20000² case, at a
    size a test can afford -- a valid image over a lowered ``EQUISEG_MAX_IMAGE_PIXELS``."""
    huge = tmp_path / "huge.png"
    huge.write_bytes(_png_header_only(100_000, 100_000))
    assert len(huge.read_bytes()) < 100
    out = tmp_path / "out"
    args = ["--quiet", "predict", "--checkpoint", str(work["a"]), "--out", str(out), "--input"]
    assert main([*args, f"rgb={huge}"]) == 2
    err = _one_line_error(capsys, "predict")
    assert f"{huge}: the file declares 100000×100000 = 10,000,000,000 pixels" in err
    assert MAX_PIXELS_ENV in err and not out.exists()

    rgb = next((work["data"] / "img").rglob("*_rgb_*.png"))  # 64×64
    monkeypatch.setenv(MAX_PIXELS_ENV, "4000")
    assert main([*args, f"rgb={rgb}"]) == 2
    err = _one_line_error(capsys, "predict")
    assert f"{rgb}: the file declares 64×64 = 4,096 pixels, more than the limit of 4,000" in err
    assert not out.exists()
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(ValueError, match=f"{MAX_PIXELS_ENV}: expected an integer >= 1"):
        read_image(rgb)
    monkeypatch.setenv(MAX_PIXELS_ENV, "4096")
    assert main([*args, f"rgb={rgb}"]) == 0 and (out / f"{rgb.stem}_pred.png").is_file()


@pytest.mark.parametrize("suffix", [".jpg", ".npz", ".npy", ".tif"])
def test_pixel_limit_applies_to_every_format(tmp_path, monkeypatch, suffix):
    path = tmp_path / f"x{suffix}"
    array = np.zeros((40, 50, 3), np.uint8)
    if suffix == ".npz":
        np.savez_compressed(path, array)
    elif suffix == ".npy":
        np.save(path, array)
    else:
        Image.fromarray(array).save(path)
    assert read_image(path).shape[:2] == (40, 50)
    monkeypatch.setenv(MAX_PIXELS_ENV, "1999")
    with pytest.raises(ValueError, match=rf"{path}: the file declares 40×50 = 2,000 pixels"):
        read_image(path)


# ------------------------------------------------------------------------------------ run records


def test_read_json_record_names_the_file(tmp_path):
    path = tmp_path / "result.json"
    path.write_text("[]\n")
    with pytest.raises(ValueError, match=rf"^{path}: expected a JSON object, got list \[\]$"):
        read_json_record(path, ["config"])
    path.write_text('{"config": {}}\n')
    with pytest.raises(ValueError, match=rf"^{path}: missing key\(s\) 'metrics', 'robustness'"):
        read_json_record(path, ["config", "metrics", "robustness"])
    path.write_text('{"config": {"a": 1}, "metri')
    truncated = rf"^{path}: not valid JSON \(.* line 1, column \d+\); the file is truncated"
    with pytest.raises(ValueError, match=truncated):
        read_json_record(path)
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'nope.json'} does not exist"):
        read_json_record(tmp_path / "nope.json")
    write_json_atomic(path, {"config": {"a": 1}, "metrics": {"mIoU": float("nan")}})
    assert read_json_record(path, ["config", "metrics"]) == {"config": {"a": 1}, "metrics": {"mIoU": None}}


def test_atomic_writes_leave_the_old_file_on_a_full_disk(tmp_path, disk_full):
    path = tmp_path / "result.json"
    path.write_text('{"old": true}\n')
    with pytest.raises(WriteError, match=f"cannot write {path}: No space left on device") as info:
        write_json_atomic(path, {"new": True})
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert path.read_text() == '{"old": true}\n'
    with pytest.raises(WriteError):
        write_atomic(tmp_path / "new.md", "text")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


# --------------------------------------------------------------------- read-only output, full disk


def test_robustness_read_only_out_is_found_first(work, tmp_path, capsys, read_only, monkeypatch):
    import equiseg.engine.eval_setup
    import equiseg.robustness

    def never(*args, **kwargs):
        raise AssertionError("the benchmark started")

    monkeypatch.setattr(equiseg.engine.eval_setup, "load_eval_setup", never)
    monkeypatch.setattr(equiseg.robustness, "run_benchmark", never)
    ro = read_only(tmp_path / "ro")
    for out in (ro, ro / "new"):
        args = ["--quiet", "robustness", str(work["cfg"]), "--checkpoint", str(work["a"]), "--out", str(out)]
        assert main(args) == 2
        err = _one_line_error(capsys, "robustness")
        assert f"--out {out} " in err and "not writable" in err, err
    assert _snapshot(ro) == {}


def test_predict_and_export_read_only_out(work, tmp_path, capsys, read_only):
    ro = read_only(tmp_path / "ro")
    assert _predict(work["a"], work["data"], ro) == 2
    assert f"--out {ro} is not writable" in _one_line_error(capsys, "predict")
    assert _export(work["a"], ro / "x") == 2
    assert f"--out {ro / 'x'} cannot be created: {ro} is not writable" in _one_line_error(capsys, "export")
    assert _snapshot(ro) == {}


def test_predict_on_a_full_disk_names_the_file_and_leaves_no_partial_png(work, tmp_path, capsys, disk_full):
    out = tmp_path / "out"
    assert _predict(work["a"], work["data"], out) == 2
    err = _one_line_error(capsys, "predict")
    assert f"cannot write {out}/" in err and "_pred.png: No space left on device" in err, err
    assert not any(p.is_file() for p in out.rglob("*"))
    _assert_no_partials(tmp_path)


def test_robustness_report_on_a_full_disk(tmp_path, capsys, disk_full, monkeypatch):
    """The report writer under the CLI: the file is named, no 0-byte ``robustness.json`` remains."""
    import equiseg.tasks.robustness_run
    from equiseg.reports.robustness import write_robustness_report

    def fake_run(config, checkpoint, overrides, *, out_dir, **kwargs):
        write_robustness_report({"clean": {"mIoU": 50.0}}, out_dir)
        raise AssertionError("unreachable: the disk is full")

    monkeypatch.setattr(equiseg.tasks.robustness_run, "run_robustness", fake_run)
    out = tmp_path / "rob"
    cfg = tmp_path / "cfg.yaml"  # the CLI reads the config's data section (the split) before the run
    cfg.write_text(f"data: {{root: {tmp_path / 'no_data'}}}\n")
    assert main(["--quiet", "robustness", str(cfg), "--checkpoint", "x.pt", "--out", str(out)]) == 2
    err = _one_line_error(capsys, "robustness")
    assert f"cannot write {out / 'robustness.json'}: No space left on device" in err, err
    assert not (out / "robustness.json").exists()
    _assert_no_partials(tmp_path)


# --------------------------------------------------------------------------- bounded error messages


def test_yaml_alias_bomb_is_refused(work, tmp_path, capsys):
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\nmodel:\n  name: *a8\n")  # 9^9 strings in ~500 bytes
    assert bomb.stat().st_size < 1000
    work_dir = tmp_path / "run"
    assert _train(bomb, work_dir) == 2
    err = _one_line_error(capsys, "train")
    assert f"{bomb}: the config expands to more than 100000 values" in err and len(err) < 400, err
    recursive = "train.seed=&a [*a]"
    assert _train(work["cfg"], work_dir, recursive) == 2
    assert "--set train.seed: the config expands to more than" in _one_line_error(capsys, "train")
    assert not work_dir.exists()


def test_quoted_values_are_bounded(work, tmp_path, capsys):
    big = "[" + ", ".join(map(str, range(20_000))) + "]"
    assert _train(work["cfg"], tmp_path / "r", f"train.seed={big}") == 2
    err = _one_line_error(capsys, "train")
    assert "train.seed: expected an integer, got [0, 1, 2," in err and len(err) < 2 * QUOTE_LIMIT, err
    assert _train(work["cfg"], tmp_path / "r", f"model.name={'x' * 100_000}") == 2
    assert len(_one_line_error(capsys, "train")) < 2 * QUOTE_LIMIT
    assert bounded_repr(["a"]) == "['a']" and bounded_repr(-0.1) == "-0.1"
    nested = [[list(range(1000))] * 1000] * 1000
    assert len(bounded_repr(nested)) < QUOTE_LIMIT + 40
