"""DeLiVER loader (docs/design.md §4.1) on hand-made trees with known pixel values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures_data import make_deliver, write_png8
from torch.utils.data import DataLoader

from equiseg.data import DELIVER_CLASSES, DELIVER_PALETTE, DeLiVER, build_val_transform

SAMPLES = [
    ("cloud", "val", "MAP_1_point98", "000001"),
    ("rain", "val", "MAP_2_motionblur", "000002"),
    ("fog", "val", "MAP_3", "000003"),
]


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "DeLiVER"
    written = make_deliver(root, SAMPLES, size=(8, 12), event_size=(4, 6))
    return root, written


def _expected_label(semantic: np.ndarray) -> np.ndarray:
    raw = semantic[..., 0].astype(np.int64)
    return np.where((raw == 0) | (raw == 255), 255, raw - 1)


def test_exact_decoding(tree):
    root, written = tree
    ds = DeLiVER(root, "val")
    assert len(ds) == 3
    assert ds.modalities == ("rgb", "depth", "event", "lidar")
    for i in range(len(ds)):
        arrays = written[str(ds.files[i]["rgb"])]
        inputs, label = ds[i]
        assert [x.dtype for x in inputs] == [torch.uint8] * 4
        assert all(tuple(x.shape) == (3, 8, 12) for x in inputs)
        rgb, depth, event, lidar = (x.permute(1, 2, 0).numpy() for x in inputs)
        np.testing.assert_array_equal(rgb, arrays["rgb"])
        np.testing.assert_array_equal(depth, np.repeat(arrays["depth"], 3, axis=2))  # 1 channel -> 3
        np.testing.assert_array_equal(lidar, arrays["lidar"][..., :3])  # RGBA -> RGB
        # 4×6 event upsampled 2× with nearest: every event pixel becomes a 2×2 block
        np.testing.assert_array_equal(event, arrays["event"].repeat(2, axis=0).repeat(2, axis=1))
        assert label.dtype == torch.int64 and tuple(label.shape) == (8, 12)
        np.testing.assert_array_equal(label.numpy(), _expected_label(arrays["semantic"]))


def test_label_mapping_of_special_values(tree):
    root, _ = tree
    _, label = DeLiVER(root, "val", modalities=("rgb",))[0]
    # deliver_label puts raw 0, 255, 1, 25 in the first four pixels
    assert label.flatten()[:4].tolist() == [255, 255, 0, 24]
    assert int(label[label != 255].max()) <= 24


def test_modality_subset_and_order(tree):
    root, written = tree
    ds = DeLiVER(root, "val", modalities=["lidar", "rgb"])
    inputs, _ = ds[0]
    arrays = written[str(ds.files[0]["rgb"])]
    assert len(inputs) == 2
    np.testing.assert_array_equal(inputs[0].permute(1, 2, 0).numpy(), arrays["lidar"][..., :3])
    np.testing.assert_array_equal(inputs[1].permute(1, 2, 0).numpy(), arrays["rgb"])
    assert list(ds.norm_stats) == ["lidar", "rgb"]
    assert ds.norm_stats["rgb"].mean == pytest.approx((0.485, 0.456, 0.406))
    assert ds.norm_stats["lidar"].scale == 255.0 and ds.norm_stats["lidar"].mean == (0.0, 0.0, 0.0)


def test_metadata(tree):
    root, _ = tree
    ds = DeLiVER(root, "val")
    assert ds.classes == DELIVER_CLASSES and len(ds.classes) == 25
    assert ds.palette == DELIVER_PALETTE and ds.palette[6] == (128, 64, 128)  # Road
    assert ds.ignore_index == 255
    files = ds.files[2]  # samples are sorted by path: cloud, fog, rain
    assert set(files) == {"rgb", "depth", "event", "lidar", "label"}
    assert files["depth"].parts[-5] == "hha" and files["depth"].name == "000002_depth_front.png"
    assert files["label"].parts[-5] == "semantic" and files["label"].name == "000002_semantic_front.png"
    assert ds.cases == [("cloud",), ("fog",), ("rain", "motionblur")]
    assert ds.case_of(2) == ("rain", "motionblur")
    assert ds.rgb_modalities == ("rgb",)


def test_depth_folder_option(tmp_path):
    root = tmp_path / "d"
    written = make_deliver(root, SAMPLES[:1], depth_folder="depth", depth_channels=3)
    ds = DeLiVER(root, "val", modalities=("depth",), depth_folder="depth")
    arrays = next(iter(written.values()))
    np.testing.assert_array_equal(ds[0][0][0].permute(1, 2, 0).numpy(), arrays["depth"])
    with pytest.raises(FileNotFoundError, match="hha"):  # the default folder does not exist here
        DeLiVER(root, "val", modalities=("depth",))
    with pytest.raises(ValueError, match="depth_folder"):
        DeLiVER(root, "val", depth_folder="HHA")


def test_case_filter_never_matches_root_or_split(tmp_path):
    # The root contains both case words 'rain' and 'train'; the split is 'train' (contains 'rain').
    root = tmp_path / "rain_train" / "DeLiVER-rain"
    samples = [
        ("cloud", "train", "MAP_1", "000001"),
        ("rain", "train", "MAP_1", "000002"),
        ("sun", "train", "MAP_5_lidarjitter", "000003"),
        ("night", "train", "MAP_6", "000004_underexposure"),
        ("sun", "train", "MAP_7_brain", "000005"),  # 'brain' is no 'rain' token
    ]
    make_deliver(root, samples)
    assert len(DeLiVER(root, "train", modalities=("rgb",))) == 5
    counts = {c: len(DeLiVER(root, "train", modalities=("rgb",), case=c)) for c in ("rain", "sun", "cloud")}
    assert counts == {"rain": 1, "sun": 2, "cloud": 1}
    lj = DeLiVER(root, "train", modalities=("rgb",), case="lidarjitter")
    assert len(lj) == 1 and "MAP_5_lidarjitter" in str(lj.files[0]["rgb"])
    ue = DeLiVER(root, "train", modalities=("rgb",), case="underexposure")
    assert len(ue) == 1 and ue.case_of(0) == ("night", "underexposure")
    with pytest.raises(FileNotFoundError, match="no samples of case 'fog'"):
        DeLiVER(root, "train", case="fog")


def test_unknown_case_and_modality(tree):
    root, _ = tree
    with pytest.raises(ValueError, match=r"unknown case 'snow'.*cloud, fog, night, rain, sun, motionblur"):
        DeLiVER(root, "val", case="snow")
    with pytest.raises(ValueError, match=r"unknown modality 'hha'.*rgb, depth, event, lidar"):
        DeLiVER(root, "val", modalities=("rgb", "hha"))


def test_empty_split(tree):
    root, _ = tree
    with pytest.raises(FileNotFoundError, match=r"no samples found for split 'train'.*img/\*/train/\*"):
        DeLiVER(root, "train")
    with pytest.raises(FileNotFoundError, match="no samples found"):
        DeLiVER(root.parent / "nowhere", "val")


def test_missing_sibling_verify_and_load(tree):
    root, _ = tree
    ds = DeLiVER(root, "val")
    missing = ds.files[2]["lidar"]
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=str(missing)):
        DeLiVER(root, "val", verify=True)
    ds = DeLiVER(root, "val")  # without verify only the first sample is checked up front
    ds[0]
    with pytest.raises(FileNotFoundError, match=str(missing)):
        ds[2]
    first = ds.files[0]["event"]
    first.unlink()
    with pytest.raises(FileNotFoundError, match=str(first)):
        DeLiVER(root, "val")


def test_label_out_of_range(tree):
    root, _ = tree
    ds = DeLiVER(root, "val", modalities=("rgb",))
    path = ds.files[1]["label"]
    sem = np.zeros((8, 12, 3), np.uint8)
    sem[..., 0] = 5
    sem[2, 3, 0] = 26
    sem[4, 4, 0] = 200
    write_png8(path, sem)
    with pytest.raises(ValueError, match=rf"{path}.*26, 200.*1\.\.25"):
        ds[1]


def test_size_mismatch(tree):
    root, _ = tree
    ds = DeLiVER(root, "val")
    depth = ds.files[0]["depth"]
    write_png8(depth, np.zeros((8, 13), np.uint8))
    with pytest.raises(ValueError, match=rf"{depth}.*'depth' is 8×13.*8×12"):
        ds[0]
    event = ds.files[1]["event"]
    write_png8(event, np.zeros((9, 12, 3), np.uint8))  # events may be smaller, never larger
    with pytest.raises(ValueError, match=rf"{event}.*'event' is 9×12.*smaller"):
        ds[1]


def test_truncated_and_unreadable_images(tree):
    root, _ = tree
    ds = DeLiVER(root, "val")
    rgb = ds.files[1]["rgb"]
    rgb.write_bytes(rgb.read_bytes()[:60])
    with pytest.raises(ValueError, match=rf"{rgb}.*(truncated|unreadable)"):
        ds[1]
    lidar = ds.files[2]["lidar"]
    lidar.write_bytes(b"this is no png")
    with pytest.raises(ValueError, match=rf"{lidar}.*not a PNG"):
        ds[2]


def test_sixteen_bit_file_in_an_8bit_modality(tree):
    root, _ = tree
    ds = DeLiVER(root, "val", modalities=("depth",))
    from equiseg.data.io import write_png16

    write_png16(ds.files[0]["depth"], np.full((8, 12, 3), 1000, np.uint16))
    with pytest.raises(ValueError, match="expects an 8-bit image"):
        ds[0]


def test_transform_and_dataloader(tree):
    root, _ = tree
    plain = DeLiVER(root, "val")
    ds = DeLiVER(
        root, "val", transform=build_val_transform(plain.modalities, plain.norm_stats, short_side=32)
    )
    inputs, label = next(iter(DataLoader(ds, batch_size=3)))
    # 8×12 -> short side 32 -> 32×48 -> sides rounded up to multiples of 32 -> 32×64
    assert len(inputs) == 4 and tuple(inputs[0].shape) == (3, 3, 32, 64)
    assert inputs[0].dtype == torch.float32 and label.dtype == torch.int64
    assert tuple(label.shape) == (3, 32, 64)
