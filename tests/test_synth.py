"""The synthetic scene generator (docs/design.md §9): layouts, encodings, determinism, read-back through the loaders."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from equiseg.data import MUSES, DeLiVER, read_png16
from equiseg.data.constants import DELIVER_CASES, DELIVER_CLASSES, MUSES_CASES
from equiseg.data.synth import (
    DELIVER_CONDITIONS,
    DELIVER_FAILURES,
    MUSES_CONDITIONS,
    SYNTH_CLASS_NAMES,
    SYNTH_CLASSES,
    TO_CITYSCAPES,
    decode_depth,
    encode_depth,
    generate,
)

H, W = 40, 56  # tiny and not square: catches swapped axes
DELIVER_FOLDERS = ("img", "hha", "depth", "event", "lidar", "semantic")
SUFFIX = {
    "img": "rgb",
    "hha": "depth",
    "depth": "depth",
    "event": "event",
    "lidar": "lidar",
    "semantic": "semantic",
}


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def deliver(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("deliver")
    summary = generate(
        root, layout="deliver", splits={"train": 3, "val": 15}, size=(H, W), seed=7, progress=False
    )
    return root, summary


@pytest.fixture(scope="module")
def muses(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    out = {}
    for enc in ("npz", "png"):
        root = tmp_path_factory.mktemp(f"muses_{enc}")
        summary = generate(
            root,
            layout="muses",
            splits={"train": 2, "val": 9},
            size=(H, W),
            seed=3,
            progress=False,
            muses_encoding=enc,
        )
        out[enc] = (root, summary)
    return out


# --- DeLiVER layout ------------------------------------------------------------------------------
def test_deliver_files_follow_the_layout(deliver):
    root, summary = deliver
    rgb = sorted(root.glob("img/*/*/*/*_rgb_front.png"))
    assert len(rgb) == 18
    assert summary["splits"] == {"train": 3, "val": 15} and summary["files"] == 18 * 6
    for path in rgb:
        cond, split, seq = path.parts[-4:-1]
        assert cond in DELIVER_CONDITIONS and split in ("train", "val")
        tokens = seq.split("_")
        assert tokens[0] == "MAP" and tokens[1].isdigit()
        frame = path.name[: -len("_rgb_front.png")]
        for folder in DELIVER_FOLDERS:
            sibling = root / folder / cond / split / seq / f"{frame}_{SUFFIX[folder]}_front.png"
            assert sibling.is_file(), sibling
        # depth is written to both hha/ (the loader's default) and depth/
        assert (root / "hha" / cond / split / seq / f"{frame}_depth_front.png").read_bytes() == (
            root / "depth" / cond / split / seq / f"{frame}_depth_front.png"
        ).read_bytes()
    assert len(list(root.rglob("*.png"))) == 18 * 6


def test_deliver_schedule_covers_every_case_in_val(deliver):
    root, summary = deliver
    val = summary["cases"]["val"]
    assert set(val) == set(DELIVER_CASES)
    assert sum(val[f] for f in DELIVER_FAILURES) == 5  # a third of 15
    assert sum(val[c] for c in DELIVER_CONDITIONS) == 15  # every sample sits in a condition folder
    seqs = {p.parent.name for p in root.glob("img/*/val/*/*_rgb_front.png")}
    failure_seqs = [s for s in seqs if s.split("_")[-1] in DELIVER_FAILURES]
    assert sorted(s.split("_")[-1] for s in failure_seqs) == sorted(DELIVER_FAILURES)
    assert not any(f in s and s.split("_")[-1] != f for s in seqs for f in DELIVER_FAILURES)


def test_deliver_encodings(deliver):
    root, _ = deliver
    n_lowres = 0
    for path in sorted(root.glob("img/*/*/*/*_rgb_front.png")):
        rel = path.relative_to(root / "img").parent
        frame = path.name[: -len("_rgb_front.png")]
        rgb = np.asarray(Image.open(path))
        assert rgb.shape == (H, W, 3) and rgb.dtype == np.uint8
        sem = np.asarray(Image.open(root / "semantic" / rel / f"{frame}_semantic_front.png"))
        assert sem.shape == (H, W, 3)
        raw = sem[..., 0]
        assert set(np.unique(raw)) <= {c + 1 for c in SYNTH_CLASSES}  # raw 1..25, never 0 or 255
        assert (sem[..., 1:] == 0).all()
        depth = np.asarray(Image.open(root / "hha" / rel / f"{frame}_depth_front.png"))
        assert depth.shape == (H, W, 3) and (depth == depth[..., :1]).all()
        assert (depth[raw == DELIVER_CLASSES.index("Sky") + 1, 0] == 255).all()  # the sky is at infinity
        assert (depth[..., 0] == 255).mean() < (raw == DELIVER_CLASSES.index("Sky") + 1).mean() + 0.02
        event = np.asarray(Image.open(root / "event" / rel / f"{frame}_event_front.png"))
        if rel.name.split("_")[-1] == "eventlowres":
            n_lowres += 1
            assert event.shape == (H // 4, W // 4, 3)
        else:
            assert event.shape == (H, W, 3)
        assert (event[..., 1] == 0).all() and set(np.unique(event)) <= {0, 85, 170, 255}
        lidar = np.asarray(Image.open(root / "lidar" / rel / f"{frame}_lidar_front.png"))
        assert lidar.shape == (H, W, 3)
        assert (lidar[lidar[..., 0] == 0] == 0).all()  # channel 0 = 0 means no return at all
        assert 0.0 < (lidar[..., 0] > 0).mean() < 0.5  # 16 scan lines in 40 rows (sparser at real sizes)
    assert n_lowres == 1


def test_deliver_reads_back_through_the_loader(deliver):
    root, summary = deliver
    for split, n in summary["splits"].items():
        ds = DeLiVER(root, split, modalities=("rgb", "depth", "event", "lidar"), verify=True)
        assert len(ds) == n
        for case, count in summary["cases"][split].items():
            assert len(DeLiVER(root, split, modalities=("rgb",), case=case)) == count
    ds = DeLiVER(root, "val", modalities=("lidar", "rgb", "event", "depth"))
    for i in range(len(ds)):
        inputs, label = ds[i]
        assert len(inputs) == 4
        for x in inputs:
            assert x.shape == (3, H, W) and x.dtype == torch.uint8
        assert label.shape == (H, W) and label.dtype == torch.int64
        assert set(label.unique().tolist()) <= set(SYNTH_CLASSES)
        files = ds.paths(i)
        rgb = np.array(Image.open(files["rgb"]))
        raw = np.array(Image.open(files["label"]))[..., 0].astype(np.int64)
        assert torch.equal(inputs[1], torch.from_numpy(rgb).permute(2, 0, 1))  # decoded exactly
        assert torch.equal(label, torch.from_numpy(raw - 1))  # raw 1..25 -> 0..24
        if "eventlowres" in ds.case_of(i):  # upsampled with nearest from the 1/4-resolution file
            small = torch.from_numpy(np.array(Image.open(files["event"]))).permute(2, 0, 1)
            assert torch.equal(inputs[2][:, ::4, ::4], small)
    # labels of a whole split cover the road scene
    seen = set()
    for i in range(len(ds)):
        seen |= set(ds[i][1].unique().tolist())
    for name in ("Road", "RoadLine", "Sky", "Building", "Cars", "SideWalk", "Pole"):
        assert DELIVER_CLASSES.index(name) in seen


# --- MUSES layout --------------------------------------------------------------------------------
def test_muses_files_follow_the_layout(muses):
    for enc, (root, summary) in muses.items():
        cams = sorted(root.glob("frame_camera/*/*/*/*_frame_camera.png"))
        assert len(cams) == 11
        assert summary["files"] == 11 * 5
        assert summary["cases"]["val"] == {"clear": 3, "fog": 2, "rain": 2, "snow": 2, "day": 5, "night": 4}
        for path in cams:
            split, cond, tod = path.parts[-4:-1]
            assert split in ("train", "val") and cond in MUSES_CONDITIONS and tod in ("day", "night")
            stem = path.name[: -len("_frame_camera.png")]
            rgb = np.asarray(Image.open(path))
            assert rgb.shape == (H, W, 3) and rgb.dtype == np.uint8
            label = np.asarray(
                Image.open(root / "gt_semantic" / split / cond / tod / f"{stem}_gt_labelTrainIds.png")
            )
            assert label.shape == (H, W) and label.dtype == np.uint8
            assert set(np.unique(label)) <= {i for ids in TO_CITYSCAPES.values() for i in ids}
            for m in ("lidar", "radar", "event_camera"):
                f = root / "projected_to_rgb" / m / split / cond / tod / f"{stem}_{m}.{enc}"
                assert f.is_file(), f
                if enc == "npz":
                    with np.load(f) as z:
                        assert list(z.keys()) == ["arr_0"]
                        a = z["arr_0"]
                    assert a.shape == (H, W, 3) and a.dtype == np.float32
                else:
                    raw = read_png16(f, bgr=True)
                    assert raw.shape == (H, W, 3) and raw.dtype == np.uint16
                    a = raw.astype(np.float32) if m == "event_camera" else raw / 150.0 - 100.0
                empty = (a[..., :2] == 0).all(-1) if m == "event_camera" else a[..., 0] == 0
                assert np.abs(a[empty]).max(initial=0) < 1e-2  # zero where there is no measurement
                assert 0 < (~empty).mean() < 0.5
                if m != "lidar":
                    assert np.abs(a[..., 2]).max() < 1e-2
                if m == "lidar":
                    assert a[..., 0].max() < 100.5 and a[..., 1].max() <= 100.5


def test_muses_reads_back_in_both_encodings(muses):
    decoded = {}
    for enc, (root, summary) in muses.items():
        ds = MUSES(root, "val", verify=True)
        assert len(ds) == 9
        for case, count in summary["cases"]["val"].items():
            assert case in MUSES_CASES
            assert len(MUSES(root, "val", case=case)) == count
        inputs, label = ds[4]
        assert inputs[0].shape == (3, H, W) and inputs[0].dtype == torch.uint8
        for x in inputs[1:]:
            assert x.shape == (3, H, W) and x.dtype == torch.float32
        assert label.dtype == torch.int64 and int(label.max()) <= 18
        decoded[enc] = [ds[i] for i in range(len(ds))]
    for (xa, ya), (xb, yb) in zip(decoded["npz"], decoded["png"], strict=True):
        assert torch.equal(ya, yb) and torch.equal(xa[0], xb[0])
        for a, b in zip(xa[1:], xb[1:], strict=True):  # the PNG encoding rounds to 1/150
            assert (a - b).abs().max() <= 0.5 / 150 + 1e-4


def test_deliver_and_muses_show_the_same_streets(tmp_path):
    d = tmp_path / "d"
    m = tmp_path / "m"
    generate(d, splits={"val": 1}, size=(H, W), seed=5, progress=False)
    generate(m, layout="muses", splits={"val": 1}, size=(H, W), seed=5, progress=False)
    (dl,) = [np.asarray(Image.open(p))[..., 0].astype(np.int64) - 1 for p in d.glob("semantic/*/val/*/*.png")]
    (ml,) = [np.asarray(Image.open(p)) for p in m.glob("gt_semantic/val/*/*/*.png")]
    lut = np.full(25, 255, np.int64)
    for c, ids in TO_CITYSCAPES.items():
        lut[c] = ids[0]
    two = dl == DELIVER_CLASSES.index("TwoWheeler")
    assert (lut[dl][~two] == ml[~two]).all()


# --- determinism -----------------------------------------------------------------------------------
def test_same_seed_same_bytes_other_seed_different(tmp_path):
    kw = dict(splits={"train": 2, "val": 3}, size=(H, W), progress=False)
    a = _tree(Path(generate(tmp_path / "a", seed=11, **kw)["root"]))
    b = _tree(Path(generate(tmp_path / "b", seed=11, **kw)["root"]))
    c = _tree(Path(generate(tmp_path / "c", seed=12, **kw)["root"]))
    assert a == b
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in a if "/img/" in f"/{k}")
    ma = _tree(Path(generate(tmp_path / "ma", layout="muses", seed=1, **kw)["root"]))
    mb = _tree(Path(generate(tmp_path / "mb", layout="muses", seed=1, **kw)["root"]))
    assert ma == mb


def test_a_sample_does_not_depend_on_how_many_are_generated(tmp_path):
    few = _tree(
        Path(generate(tmp_path / "few", splits={"val": 2}, size=(H, W), seed=4, progress=False)["root"])
    )
    many = _tree(
        Path(
            generate(tmp_path / "many", splits={"train": 3, "val": 4}, size=(H, W), seed=4, progress=False)[
                "root"
            ]
        )
    )
    # the manifest records each run's own counts; every sample file is the same
    assert few.pop("equiseg_synth.json") != many.pop("equiseg_synth.json")
    assert few.items() <= many.items()


# --- options and errors ------------------------------------------------------------------------------
def test_conditions_and_failures_select_cases(tmp_path):
    s = generate(
        tmp_path / "x",
        splits={"val": 6},
        size=(H, W),
        conditions=["fog", "rain"],
        failures=[],
        progress=False,
    )
    assert s["cases"]["val"] == {"fog": 3, "rain": 3}
    s = generate(
        tmp_path / "y",
        splits={"val": 9},
        size=(H, W),
        conditions="sun",
        failures="lidarjitter,eventlowres",
        progress=False,
    )
    assert s["cases"]["val"] == {"sun": 9, "lidarjitter": 2, "eventlowres": 2}
    assert DeLiVER(tmp_path / "y", "val", case="eventlowres")[0][0][2].shape == (3, H, W)  # upsampled events


@pytest.mark.parametrize(
    "kwargs",
    [
        {"layout": "kitti"},
        {"conditions": ["sunny"]},
        {"failures": ["blur"]},
        {"splits": {"training": 2}},
        {"splits": {"train": -1}},
        {"size": (8, 8)},
        {"layout": "muses", "failures": ["motionblur"]},
        {"layout": "muses", "conditions": ["cloud"]},
        {"layout": "muses", "muses_encoding": "jpg"},
    ],
)
def test_bad_arguments_raise(tmp_path, kwargs):
    with pytest.raises(ValueError):
        generate(tmp_path, **{"splits": {"val": 1}, "size": (H, W), "progress": False, **kwargs})


def test_public_constants():
    assert len(SYNTH_CLASSES) == len(SYNTH_CLASS_NAMES) == len(TO_CITYSCAPES)
    assert [DELIVER_CLASSES[c] for c in SYNTH_CLASSES] == list(SYNTH_CLASS_NAMES)
    assert set(DELIVER_CONDITIONS) | set(DELIVER_FAILURES) == set(DELIVER_CASES)
    assert encode_depth(np.array([0.5, 1.0, 10.0, 100.0, 1000.0, 5e3, np.inf])).tolist() == [
        0,
        0,
        85,
        170,
        255,
        255,
        255,
    ]
    d = np.array([2.0, 7.5, 42.0, 300.0])
    assert np.allclose(decode_depth(encode_depth(d)), d, rtol=0.014)
    assert zlib.crc32(b"train") != zlib.crc32(b"val")
