"""FolderDataset: a data set described by a YAML file or a dict, no Python needed."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
from fixtures_data import pattern, write_png8

from equiseg.data import FolderDataset, NormStats
from equiseg.data.io import write_png16

DATASET_YAML = textwrap.dedent(
    """
    name: toy
    classes: [road, car, sky]
    palette: [[128, 64, 128], [0, 0, 142], [70, 130, 180]]
    cases: [day, night]
    case_fields: [time]
    modalities:
      rgb:
        path: "rgb/{split}/{time}/{key}.png"
        rgb: true
        norm: {mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25], scale: 255}
      thermal:
        path: ["thermal/{split}/{time}/{key}_t.npy", "thermal/{split}/{time}/{key}_t.png"]
        type: array
        png_scale: 100
        png_shift: 10
        norm: {mean: [20, 20, 20], std: [5, 5, 5]}
    label:
      path: "label/{split}/{time}/{key}.png"
      offset: -1
      ignore_values: [0]
      mapping: {7: 2, 9: 255}
    """
)


@pytest.fixture
def toy(tmp_path):
    root = tmp_path / "toy"
    spec_path = root / "toy.yaml"
    root.mkdir()
    spec_path.write_text(DATASET_YAML)
    written = {}
    for i, (time, key) in enumerate([("day", "a"), ("night", "b"), ("day", "c")]):
        rgb = pattern(4, 5, 3, i)
        thermal = np.arange(60, dtype=np.float32).reshape(4, 5, 3) / 4 + i
        raw = np.array([[0, 1, 2, 3, 7], [9, 1, 1, 2, 3]] * 2, np.uint8)
        write_png8(root / f"rgb/train/{time}/{key}.png", rgb)
        write_png8(root / f"label/train/{time}/{key}.png", raw)
        if i == 1:  # the PNG alternative, decoded as raw / 100 - 10
            write_png16(
                root / f"thermal/train/{time}/{key}_t.png",
                np.round((thermal + 10) * 100).astype(np.uint16),
                bgr=False,
            )
        else:
            (root / f"thermal/train/{time}").mkdir(parents=True, exist_ok=True)
            np.save(root / f"thermal/train/{time}/{key}_t.npy", thermal)
        written[key] = (rgb, thermal)
    return root, spec_path, written


def test_yaml_spec_exact(toy):
    root, spec_path, written = toy
    ds = FolderDataset(spec_path, split="train")  # root defaults to the YAML's folder
    assert len(ds) == 3 and ds.modalities == ("rgb", "thermal")
    assert ds.classes == ("road", "car", "sky") and ds.palette[1] == (0, 0, 142)
    for i in range(3):
        rgb, thermal = written[ds.samples[i].fields["key"]]
        inputs, label = ds[i]
        np.testing.assert_array_equal(inputs[0].permute(1, 2, 0).numpy(), rgb)
        assert inputs[1].dtype == torch.float32
        np.testing.assert_allclose(inputs[1].permute(1, 2, 0).numpy(), thermal, atol=1e-4)
        # raw 0 -> ignore, 1..3 -> 0..2 (offset -1), 7 -> 2 and 9 -> 255 (mapping)
        assert label[:2].tolist() == [[255, 0, 1, 2, 2], [255, 0, 0, 1, 2]]
    assert ds.cases == [("day",), ("day",), ("night",)]
    assert len(FolderDataset(spec_path, split="train", case="night")) == 1
    assert ds.norm_stats["thermal"] == NormStats((20, 20, 20), (5, 5, 5), 1.0)
    assert ds.rgb_modalities == ("rgb",)
    assert [p.suffix for p in (ds.files[i]["thermal"] for i in range(3))] == [".npy", ".npy", ".png"]


def test_dict_spec_root_override_and_subset(toy):
    root, spec_path, _ = toy
    import yaml

    spec = yaml.safe_load(DATASET_YAML)
    spec["split"] = "train"
    ds = FolderDataset(spec, root=root, modalities=["thermal"])
    inputs, label = ds[0]
    assert len(inputs) == 1 and tuple(label.shape) == (4, 5)
    with pytest.raises(ValueError, match="no data root"):
        FolderDataset(spec)


def test_label_values_are_checked(toy):
    root, spec_path, _ = toy
    ds = FolderDataset(spec_path, split="train")
    path = ds.files[0]["label"]
    write_png8(path, np.full((4, 5), 5, np.uint8))  # 5 - 1 = 4 is no class, and 5 is not mapped
    with pytest.raises(ValueError, match=rf"{path}.*value\(s\) 5 outside.*1\.\.3 \(classes 0\.\.2\)"):
        ds[0]


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        (
            lambda s: s.replace("case_fields", "case_field"),
            r"unknown key 'case_field' \(did you mean 'case_fields'",
        ),
        (lambda s: s.replace("png_shift", "png_shfit"), r"modalities.thermal: unknown key 'png_shfit'"),
        (lambda s: s.replace("{key}_t.npy", "{frame}_t.npy"), r"uses field\(s\) \['frame'\]"),
        (lambda s: s.replace("type: array", "type: float"), r"type must be one of"),
        (lambda s: s.replace("[70, 130, 180]]", "]"), r"palette has 2 colours for 3 classes"),
        (lambda s: s.replace("std: [5, 5, 5]", "std: [5, 0, 5]"), r"thermal.norm.*positive"),
        (lambda s: s.replace("case_fields: [time]", "case_fields: [weather]"), r"'weather' is not a field"),
    ],
)
def test_malformed_specs(toy, edit, error):
    root, spec_path, _ = toy
    spec_path.write_text(edit(DATASET_YAML))
    with pytest.raises(ValueError, match=error):
        FolderDataset(spec_path, split="train")


def test_missing_spec_and_empty_split(toy, tmp_path):
    root, spec_path, _ = toy
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        FolderDataset(tmp_path / "nope.yaml")
    with pytest.raises(FileNotFoundError, match=r"split 'val'.*rgb/val/\*/\*\.png"):
        FolderDataset(spec_path, split="val")
    with pytest.raises(ValueError, match=r"uses \{split\} but no split"):
        FolderDataset(spec_path)


def test_lowres_and_no_labels(tmp_path):
    spec = {
        "classes": ["a", "b"],
        "modalities": {
            "cam": {"path": "{key}_cam.png"},
            "ev": {"path": "{key}_ev.png", "lowres": True},
        },
    }
    write_png8(tmp_path / "x_cam.png", pattern(4, 6, 3, 0))
    ev = pattern(2, 3, 1, 1)
    write_png8(tmp_path / "x_ev.png", ev)
    inputs, label = FolderDataset(spec, root=tmp_path)[0]
    assert tuple(label.shape) == (4, 6) and bool((label == 255).all())  # no label in the spec
    np.testing.assert_array_equal(inputs[1][0].numpy(), ev[..., 0].repeat(2, axis=0).repeat(2, axis=1))
    assert FolderDataset(spec, root=tmp_path).palette == ((0, 0, 0), (128, 0, 0))  # default palette


def test_the_metadata_of_a_data_set_a_config_names_without_its_files(tmp_path):
    """data/meta.py: one place resolves a data config's spec (DeLiVER with its depth folder, MUSES, a
    folder spec) and lays out the metadata a checkpoint carries; engine/builders re-exports it."""
    from equiseg.config import DataConfig
    from equiseg.data import DELIVER_CLASSES, MUSES_NORM_STATS
    from equiseg.data.meta import config_meta, dataset_spec
    from equiseg.engine import builders

    assert builders.config_meta is config_meta and builders.dataset_spec is dataset_spec
    meta = config_meta(DataConfig(dataset="deliver", modalities=("rgb", "depth")))
    assert meta["classes"] == list(DELIVER_CLASSES) and meta["modalities"] == ["rgb", "depth"]
    assert meta["rgb_modalities"] == ["rgb"] and meta["ignore_index"] == 255
    assert (
        dataset_spec(DataConfig(dataset="deliver", depth_folder="depth"))
        .modalities["depth"]
        .paths[0]
        .startswith("depth/")
    )
    muses = config_meta(DataConfig(dataset="muses", modalities=("lidar",)))
    assert muses["norm_stats"]["lidar"]["mean"] == list(MUSES_NORM_STATS["lidar"].mean)
    with pytest.raises(ValueError, match=r"^data\.dataset is 'folder' but data\.spec .* is not set$"):
        dataset_spec(DataConfig(dataset="folder"))
    spec = tmp_path / "s.yaml"
    spec.write_text("classes: [a, b]\nmodalities:\n  cam: {path: '{key}.png'}\n")
    assert config_meta(DataConfig(dataset="folder", spec=str(spec), modalities=("cam",)))["classes"] == [
        "a",
        "b",
    ]
    with pytest.raises(ValueError, match=r"unknown modalities \['rgb'\]"):
        config_meta(DataConfig(dataset="folder", spec=str(spec), modalities=("rgb",)))
