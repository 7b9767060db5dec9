"""MUSES loader (docs/design.md §4.2): raw camera/labels and the SDK's projected modalities in every encoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures_data import make_muses, write_png8

from equiseg.data import CITYSCAPES_CLASSES, MUSES
from equiseg.data.io import write_png16

SAMPLES = [
    ("train", "clear", "day", "REC0001_frame_000010"),
    ("train", "fog", "night", "REC0002_frame_000020"),
    ("train", "snow", "day", "REC0003_frame_000030"),
]


def _check_exact(ds: MUSES, written: dict) -> None:
    for i in range(len(ds)):
        stem = ds.samples[i].fields["stem"]
        arrays = written[stem]
        inputs, label = ds[i]
        cam, lidar, radar, event = inputs
        assert cam.dtype == torch.uint8 and tuple(cam.shape) == (3, 6, 10)  # not squashed to a square
        np.testing.assert_array_equal(cam.permute(1, 2, 0).numpy(), arrays["frame_camera"])
        for name, x in (("lidar", lidar), ("radar", radar), ("event_camera", event)):
            assert x.dtype == torch.float32 and tuple(x.shape) == (3, 6, 10)
            np.testing.assert_allclose(x.permute(1, 2, 0).numpy(), arrays[name], rtol=0, atol=1e-4)
        np.testing.assert_array_equal(label.numpy(), arrays["label"].astype(np.int64))
        assert label[0, 0] == 255 and label[0, 1] == 18  # 255 stays ignore (not 0 = road)


@pytest.mark.parametrize("encoding", ["npz", "npy", "png"])
def test_exact_decoding(tmp_path, encoding):
    written = make_muses(tmp_path, SAMPLES, encoding=encoding)
    ds = MUSES(tmp_path, "train", verify=True)
    assert len(ds) == 3
    _check_exact(ds, written)
    assert ds.files[0]["lidar"].suffix == f".{encoding}"


def test_png_channel_order_and_scaling(tmp_path):
    # One lidar pixel, written as OpenCV would: array [range, intensity, height] -> file B, G, R.
    written = make_muses(tmp_path, SAMPLES[:1], encoding="npz")
    stem = SAMPLES[0][3]
    path = tmp_path / f"projected_to_rgb/lidar/train/clear/day/{stem}_lidar.npz"
    path.unlink()
    png = np.full((6, 10, 3), 15000, np.uint16)  # (0 + 100) * 150 = 15000 is "no return"
    png[2, 3] = [(12.0 + 100) * 150, (5.0 + 100) * 150, (1.5 + 100) * 150]  # array order
    write_png16(path.with_suffix(".png"), png, bgr=True)
    from equiseg.data.io import read_png16

    assert read_png16(path.with_suffix(".png"), bgr=False)[2, 3].tolist() == [15225, 15750, 16800]  # file RGB
    inputs, _ = MUSES(tmp_path, "train", modalities=("lidar",))[0]
    assert inputs[0][:, 2, 3].tolist() == pytest.approx([12.0, 5.0, 1.5])
    assert float(inputs[0].abs().sum()) == pytest.approx(18.5)
    del written


def test_mixed_encodings(tmp_path):
    make_muses(tmp_path, SAMPLES[:2], encoding="png")
    written = make_muses(tmp_path / "b", SAMPLES[2:], encoding="npy")
    for src in (tmp_path / "b").rglob("*"):  # merge the two trees: sample 3 in .npy, the others .png
        if src.is_file():
            dst = tmp_path / src.relative_to(tmp_path / "b")
            dst.parent.mkdir(parents=True, exist_ok=True)
            src.rename(dst)
    ds = MUSES(tmp_path, "train", verify=True)
    assert [ds.files[i]["radar"].suffix for i in range(3)] == [".png", ".png", ".npy"]
    inputs, _ = ds[2]
    np.testing.assert_allclose(inputs[2].permute(1, 2, 0).numpy(), written[SAMPLES[2][3]]["radar"], atol=1e-6)


def test_cases_and_metadata(tmp_path):
    make_muses(tmp_path, SAMPLES)
    ds = MUSES(tmp_path, "train")
    assert ds.cases == [("clear", "day"), ("fog", "night"), ("snow", "day")]
    assert len(MUSES(tmp_path, "train", case="day")) == 2
    assert len(MUSES(tmp_path, "train", case="night")) == 1
    assert MUSES(tmp_path, "train", case="fog").case_of(0) == ("fog", "night")
    with pytest.raises(FileNotFoundError, match="no samples of case 'rain'"):
        MUSES(tmp_path, "train", case="rain")
    with pytest.raises(ValueError, match=r"unknown case 'cloud'.*clear, fog, rain, snow, day, night"):
        MUSES(tmp_path, "train", case="cloud")
    assert ds.classes == CITYSCAPES_CLASSES and ds.palette[0] == (128, 64, 128)
    assert ds.norm_stats["lidar"].mean == pytest.approx((4.917, 6.149, 0.270))
    assert ds.norm_stats["radar"].std == pytest.approx((14.61, 19.29, 1.0))
    assert ds.norm_stats["event_camera"].scale == 1.0
    assert ds.norm_stats["frame_camera"].scale == 255.0
    assert ds.rgb_modalities == ("frame_camera",)


def test_modality_subset(tmp_path):
    written = make_muses(tmp_path, SAMPLES[:1])
    inputs, _ = MUSES(tmp_path, "train", modalities=("event_camera", "frame_camera"))[0]
    np.testing.assert_array_equal(inputs[0].permute(1, 2, 0).numpy(), written[SAMPLES[0][3]]["event_camera"])
    with pytest.raises(ValueError, match=r"unknown modality 'rgb'.*frame_camera, lidar, radar, event_camera"):
        MUSES(tmp_path, "train", modalities=("rgb",))


def test_missing_projection_lists_every_encoding(tmp_path):
    make_muses(tmp_path, SAMPLES)
    stem = SAMPLES[1][3]
    (tmp_path / f"projected_to_rgb/radar/train/fog/night/{stem}_radar.npz").unlink()
    with pytest.raises(FileNotFoundError, match=r"radar.*_radar\.npz.*_radar\.npy.*_radar\.png"):
        MUSES(tmp_path, "train", verify=True)
    ds = MUSES(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="none of"):
        ds[1]


def test_labels_false_and_empty_split(tmp_path):
    make_muses(tmp_path, SAMPLES[:1])
    for p in (tmp_path / "gt_semantic").rglob("*.png"):
        p.unlink()
    with pytest.raises(FileNotFoundError, match="gt_labelTrainIds"):
        MUSES(tmp_path, "train")
    inputs, label = MUSES(tmp_path, "train", labels=False)[0]
    assert tuple(label.shape) == (6, 10) and bool((label == 255).all())
    with pytest.raises(FileNotFoundError, match="split 'val'"):
        MUSES(tmp_path, "val")


def test_bad_label_and_bad_arrays(tmp_path):
    make_muses(tmp_path, SAMPLES)
    ds = MUSES(tmp_path, "train")
    label_path = ds.files[0]["label"]
    bad = np.zeros((6, 10), np.uint8)
    bad[1, 1] = 19
    write_png8(label_path, bad)
    with pytest.raises(ValueError, match=rf"{label_path}.*19.*0\.\.18"):
        ds[0]
    lidar = ds.files[1]["lidar"]
    lidar.write_bytes(lidar.read_bytes()[:40])
    with pytest.raises(ValueError, match=rf"{lidar}.*(unreadable|truncated)"):
        ds[1]
    radar = ds.files[2]["radar"]
    np.savez_compressed(radar, np.zeros((3, 6, 10), np.float32))  # channels first: not the SDK layout
    with pytest.raises(ValueError, match=rf"{radar}.*channels last"):
        ds[2]
    np.savez_compressed(radar, np.zeros((6, 11, 3), np.float32))
    with pytest.raises(ValueError, match=rf"{radar}.*'radar' is 6×11.*6×10"):
        ds[2]
