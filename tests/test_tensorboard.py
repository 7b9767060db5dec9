"""``train.tensorboard``: the event file read back holds every loss term, lr, img/s, the val metrics
overall and per case and a prediction panel per validation; no folder without the flag; a clear
start-up error without the package."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
from study_utils import make_synth, tiny_config_dict

import equiseg
from equiseg.config import load_experiment

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

NOT_TERMS = {"iter", "epoch", "lr", "img_per_s", "data_wait_s"}  # log.jsonl keys that are no loss term


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    return make_synth(tmp_path_factory.mktemp("synth"))  # val: one sample each of cloud, fog, night, rain


def _config(root: Path, work: Path, *, iters: int, val_every: int, model: str = "equiseg_b0", **train):
    cfg = tiny_config_dict(root, work, max_iters=iters)
    cfg["model"]["name"] = model
    cfg["train"].update(val_interval=val_every, **train)
    return load_experiment(cfg)


def _events(work: Path) -> EventAccumulator:
    files = list((work / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 1, files
    acc = EventAccumulator(str(files[0]), size_guidance={"scalars": 0, "images": 0})  # 0: keep all
    acc.Reload()
    return acc


def _steps(acc: EventAccumulator, tag: str) -> list[int]:
    return [e.step for e in acc.Scalars(tag)]


def test_scalars_and_panels_are_written_and_read_back(synth_root, tmp_path):
    work = tmp_path / "run"
    equiseg.train(_config(synth_root, work, iters=4, val_every=2, tensorboard=True), progress=False)
    acc = _events(work)
    tags = acc.Tags()
    log = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    train_recs = [r for r in log if "loss" in r]
    terms = set(train_recs[0]) - NOT_TERMS
    assert {"loss", "loss_ce", "loss_sgm"} <= terms

    # every loss term of the log, lr and img/s, at every log interval (img/s from the second on)
    assert {f"train/{k}" for k in terms} | {"train/lr", "train/img_per_s"} <= set(tags["scalars"])
    for k in [*terms, "lr"]:
        assert _steps(acc, f"train/{k}") == [1, 2, 3, 4], k
        got = [e.value for e in acc.Scalars(f"train/{k}")]
        assert got == pytest.approx([r[k] for r in train_recs], rel=1e-4, abs=1e-6), k
    assert _steps(acc, "train/img_per_s") == [2, 3, 4]
    assert all(e.value > 0 for e in acc.Scalars("train/img_per_s"))

    # the val metrics overall and per case at every validation; the last equal metrics.json
    metrics = json.loads((work / "metrics.json").read_text())
    assert set(metrics["per_case"]) == {"cloud", "fog", "night", "rain"}
    val_tags = ["val/mIoU", "val/aAcc", "val/mAcc", *(f"val_case/mIoU/{c}" for c in metrics["per_case"])]
    for tag in val_tags:
        assert _steps(acc, tag) == [2, 4], tag
    assert acc.Scalars("val/mIoU")[-1].value == pytest.approx(metrics["mIoU"], rel=1e-5)
    for c, r in metrics["per_case"].items():
        assert acc.Scalars(f"val_case/mIoU/{c}")[-1].value == pytest.approx(r["mIoU"], rel=1e-5, abs=1e-6)

    # one prediction panel per validation: an RGB image of the four val samples
    assert "val/predictions" in tags["images"]
    panels = acc.Images("val/predictions")
    assert [p.step for p in panels] == [2, 4]
    from PIL import Image

    im = Image.open(io.BytesIO(panels[-1].encoded_image_string))
    assert im.mode == "RGB" and im.size == (panels[-1].width, panels[-1].height)
    assert im.height > 4 * 64  # four rows of 64-pixel tiles


def test_a_methods_own_loss_terms_are_logged(synth_root, tmp_path):
    # MAGIC reports loss_select and loss_consistency besides CE (LossOutput.terms)
    work = tmp_path / "magic"
    equiseg.train(
        _config(synth_root, work, iters=2, val_every=2, model="magic_b0", tensorboard=True), progress=False
    )
    scalars = set(_events(work).Tags()["scalars"])
    assert {"train/loss", "train/loss_ce", "train/loss_select", "train/loss_consistency"} <= scalars


def test_resume_replaces_what_the_killed_run_logged_after_its_checkpoint(synth_root, tmp_path):
    work = tmp_path / "run"
    cfg = _config(synth_root, work, iters=4, val_every=2, tensorboard=True)
    equiseg.train(cfg, progress=False, stop_after=2)
    at_2 = (work / "last.pt").read_bytes()
    equiseg.train(cfg, progress=False, resume=True)  # logs iterations 3 and 4 ...
    (work / "last.pt").write_bytes(at_2)  # ... then "dies" before saving them
    equiseg.train(cfg, progress=False, resume=True)  # 3 and 4 again, from the checkpoint at 2
    acc = EventAccumulator(str(work / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()  # the folder: one event file per run, read in order
    log = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    assert _steps(acc, "train/loss") == [1, 2, 3, 4]
    got = [e.value for e in acc.Scalars("train/loss")]
    assert got == pytest.approx([r["loss"] for r in log if "loss" in r], rel=1e-4, abs=1e-6)
    assert _steps(acc, "val/mIoU") == [2, 4] and [p.step for p in acc.Images("val/predictions")] == [2, 4]


def test_no_tensorboard_folder_without_the_flag(synth_root, tmp_path):
    work = tmp_path / "run"
    equiseg.train(_config(synth_root, work, iters=1, val_every=1), progress=False)
    assert (work / "log.jsonl").exists() and not (work / "tensorboard").exists()


def test_the_flag_without_the_package_is_one_start_up_error(synth_root, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import raises ImportError
    work = tmp_path / "run"
    with pytest.raises(ValueError, match="pip install tensorboard"):
        equiseg.train(_config(synth_root, work, iters=1, val_every=1, tensorboard=True), progress=False)
    assert not work.exists()  # refused before anything was written
