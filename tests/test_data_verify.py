"""``equiseg data verify``: generated roots pass, and each planted defect is reported with its file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from equiseg.cli import main
from equiseg.data.synth import generate
from equiseg.data.verify import PUBLISHED_COUNTS, SYNTH_MANIFEST, read_synth_manifest, verify_dataset

SIZE = 64
DELIVER_SPLITS = {"train": 2, "val": 10}  # val: the 10 cases once (eventlowres: events at 1/4 size)
MUSES_SPLITS = {"train": 1, "val": 4, "test": 2}
DELIVER_FOLDERS = {"img": "rgb", "hha": "depth", "depth": "depth", "event": "event", "lidar": "lidar",
                   "semantic": "semantic"}  # fmt: skip


@pytest.fixture(scope="module")
def deliver_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("deliver_src")
    generate(root, layout="deliver", splits=DELIVER_SPLITS, size=SIZE, seed=1, progress=False)
    return root


@pytest.fixture(scope="module")
def muses_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("muses_src")
    generate(root, layout="muses", splits=MUSES_SPLITS, size=SIZE, seed=2, progress=False)
    return root


@pytest.fixture
def deliver(deliver_root, tmp_path) -> Path:
    """A fresh copy to plant defects in."""
    return Path(shutil.copytree(deliver_root, tmp_path / "deliver"))


@pytest.fixture
def muses(muses_root, tmp_path) -> Path:
    return Path(shutil.copytree(muses_root, tmp_path / "muses"))


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(["--quiet", "data", "verify", *map(str, args)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _first(root: Path, pattern: str, index: int = 0) -> Path:
    return sorted(root.glob(pattern))[index]


def _kinds(report) -> list[str]:
    return [p.kind for p in report.problems]


# --- clean roots -----------------------------------------------------------------------------------
def test_generated_roots_pass_against_their_manifest(deliver_root, muses_root, capsys):
    r = verify_dataset(deliver_root, "deliver")
    assert r.ok and r.problems == []
    assert r.splits == ["train", "val"]  # the manifest's splits, not the published three
    assert "synth manifest" in r.expected_from
    assert {s: rows["(all)"].frames for s, rows in r.rows.items()} == DELIVER_SPLITS
    assert all(row.frames == row.expected for rows in r.rows.values() for row in rows.values())
    assert set(r.rows["val"]) == {"cloud", "fog", "night", "rain", "sun", "(all)"}

    m = verify_dataset(muses_root, "muses")
    assert m.ok and m.splits == ["train", "val", "test"]
    assert {c for c in m.rows["val"] if c != "(all)"} <= {f"{w}/{t}" for w in ("clear", "fog", "rain", "snow")
                                                         for t in ("day", "night")}  # fmt: skip

    rc, out, err = _cli(capsys, deliver_root, "--layout", "deliver")
    assert rc == 0 and err == ""
    assert "OK: 12 frame(s) in 2 split(s)" in out and "condition" in out and "(all)" in out
    rc, out, _ = _cli(capsys, muses_root, "--layout", "muses", "--json")
    data = json.loads(out)
    assert rc == 0 and data["ok"] is True and data["splits"]["val"]["frames"] == 4
    assert data["counts"] == dict.fromkeys(
        ("split", "count", "missing", "decode", "nonfinite", "size", "label"), 0
    )


def test_threads_report_the_same_as_one(deliver):
    Path(_first(deliver, "lidar/*/val/*/*.png", 3)).unlink()
    one = verify_dataset(deliver, "deliver", workers=1).to_dict()
    three = verify_dataset(deliver, "deliver", workers=3).to_dict()
    assert one == three and one["counts"]["missing"] == 1


# --- planted defects -------------------------------------------------------------------------------
def test_missing_modality_file(deliver, capsys):
    victim = _first(deliver, "lidar/*/val/*/*_lidar_front.png", 2)
    victim.unlink()
    r = verify_dataset(deliver, "deliver")
    (p,) = r.problems
    assert (p.kind, p.split, p.modality, p.file) == ("missing", "val", "lidar", str(victim))
    assert p.condition == victim.parts[-4] and r.rows["val"][p.condition].problems["missing"] == 1
    rc, out, _ = _cli(capsys, deliver, "--layout", "deliver")
    assert rc == 1 and str(victim) in out and "FAILED: 1 problem(s) (1 missing)" in out


def test_missing_label_and_missing_sample_file(deliver):
    label = _first(deliver, "semantic/*/val/*/*.png", 1)
    label.unlink()
    rgb = _first(deliver, "img/*/val/*/*.png", 6)
    rgb.unlink()  # the frame's other five files stay: it is reported as a frame without RGB
    r = verify_dataset(deliver, "deliver")
    missing = {p.modality: p for p in r.problems if p.kind == "missing"}
    assert missing["label"].file == str(label)
    assert missing["rgb"].file == str(rgb) and "other files exist" in missing["rgb"].message
    assert [p.kind for p in r.problems if p.kind == "count"] == ["count", "count"]  # split and condition


def test_truncated_png(deliver, capsys):
    victim = _first(deliver, "event/*/val/*/*.png", 4)
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    r = verify_dataset(deliver, "deliver")
    (p,) = r.problems
    assert (p.kind, p.file, p.modality) == ("decode", str(victim), "event")
    assert "truncated" in p.message and p.message.startswith(str(victim))
    rc, out, _ = _cli(capsys, deliver, "--layout", "deliver", "--json")
    data = json.loads(out)
    assert rc == 1 and data["ok"] is False and data["problems"][0]["file"] == str(victim)


def test_nan_in_a_muses_npz(muses):
    victim = _first(muses, "projected_to_rgb/lidar/val/*/*/*.npz", 1)
    with np.load(victim) as z:
        a = z["arr_0"].copy()
    a[0, 0, 0], a[1, 2, 1] = np.nan, np.inf
    np.savez_compressed(victim, a)
    r = verify_dataset(muses, "muses")
    (p,) = r.problems
    assert (p.kind, p.file, p.modality) == ("nonfinite", str(victim), "lidar")
    assert "2 non-finite value(s)" in p.message


def test_resized_modality(deliver):
    victim = _first(deliver, "lidar/*/val/*/*.png", 5)
    Image.fromarray(np.asarray(Image.open(victim))[:48, :40]).save(victim)
    r = verify_dataset(deliver, "deliver")
    (p,) = r.problems
    assert (p.kind, p.file, p.modality) == ("size", str(victim), "lidar")
    assert "48×40" in p.message and "64×64" in p.message


def test_smaller_lowres_events_pass_larger_ones_do_not(deliver):
    lowres = _first(deliver, "event/*/val/*_eventlowres/*.png")
    assert Image.open(lowres).size == (SIZE // 4, SIZE // 4)  # the generator's own low-res events pass
    assert verify_dataset(deliver, "deliver").ok
    Image.fromarray(np.zeros((SIZE * 2, SIZE, 3), np.uint8)).save(lowres)
    (p,) = verify_dataset(deliver, "deliver").problems
    assert p.kind == "size" and p.file == str(lowres) and "smaller, not larger" in p.message


def test_label_value_out_of_range(deliver, muses):
    victim = _first(deliver, "semantic/*/val/*/*.png", 3)
    sem = np.array(Image.open(victim))
    sem[0, 0, 0], sem[5, 5, 0] = 26, 200  # DeLiVER: raw 1..25 are classes, 0 and 255 ignored
    sem[6, 6, 0] = 255
    Image.fromarray(sem).save(victim)
    (p,) = verify_dataset(deliver, "deliver").problems
    assert (p.kind, p.file, p.modality) == ("label", str(victim), "label")
    assert "26, 200" in p.message and "255" not in p.message.split("outside")[0]

    victim = _first(muses, "gt_semantic/val/*/*/*.png")
    lab = np.array(Image.open(victim))
    lab[0, 0] = 19  # train ids 0..18, 255 ignored
    Image.fromarray(lab).save(victim)
    (p,) = verify_dataset(muses, "muses").problems
    assert (p.kind, p.file) == ("label", str(victim)) and "value(s) 19 " in p.message


def test_removed_frame_is_a_count_off_the_manifest(deliver, capsys):
    rgb = _first(deliver, "img/fog/val/*/*.png")
    for folder, modal in DELIVER_FOLDERS.items():
        Path(str(rgb).replace("/img/", f"/{folder}/").replace("_rgb_", f"_{modal}_")).unlink()
    r = verify_dataset(deliver, "deliver")
    assert _kinds(r) == ["count", "count"]
    split, cond = r.problems
    assert split.condition is None and "split 'val': 9 frame(s), expected 10" in split.message
    assert cond.condition == "fog" and "condition 'fog'" in cond.message
    rc, out, _ = _cli(capsys, deliver, "--layout", "deliver")
    assert rc == 1 and "expected 10" in out


def test_hha_and_depth(deliver, capsys):
    r = verify_dataset(deliver, "deliver")  # the generator writes both, as the release has both
    assert r.ok and r.depth == {"hha": True, "depth": True, "checked": "hha"}
    assert any("hha/ and depth/ are both present" in n for n in r.notes)
    rc, out, _ = _cli(capsys, deliver, "--layout", "deliver")
    assert rc == 0 and "both present" in out

    shutil.rmtree(deliver / "hha")
    r = verify_dataset(deliver, "deliver")
    assert r.ok and r.depth["checked"] == "depth"
    assert any("data.depth_folder: depth" in n for n in r.notes)

    r = verify_dataset(deliver, "deliver", depth_folder="hha")  # asked for hha/: every depth file is missing
    assert set(_kinds(r)) == {"missing"} and len(r.problems) == sum(DELIVER_SPLITS.values())
    assert all(p.modality == "depth" and "/hha/" in p.file for p in r.problems)
    assert any("--depth-folder depth" in n for n in r.notes)


def test_published_counts_without_a_manifest(deliver, capsys):
    (deliver / SYNTH_MANIFEST).unlink()
    r = verify_dataset(deliver, "deliver")
    assert r.splits == ["train", "val", "test"] and "published" in r.expected_from
    assert r.rows["train"]["(all)"].expected == PUBLISHED_COUNTS["deliver"]["train"] == 3983
    kinds = [(p.kind, p.split) for p in r.problems]
    assert kinds == [("split", "test"), ("count", "train"), ("count", "val")]
    assert "3983" in r.problems[1].message

    r = verify_dataset(deliver, "deliver", splits=["val"])  # only val must be there
    assert [(p.kind, p.split) for p in r.problems] == [("count", "val")]
    assert PUBLISHED_COUNTS["muses"] == {"train": 1500, "val": 250, "test": 750}


def test_required_split_missing_from_a_generated_root(deliver, capsys):
    rc, out, _ = _cli(capsys, deliver, "--layout", "deliver", "--splits", "val,test")
    assert rc == 1 and "[split] test" in out


def test_muses_test_split_without_labels_is_a_note(muses):
    shutil.rmtree(muses / "gt_semantic" / "test")
    r = verify_dataset(muses, "muses")
    assert r.ok and any("split 'test' has no label files" in n for n in r.notes)
    (muses / "gt_semantic" / "val").rename(muses / "gt_semantic" / "val_moved")  # val labels are required
    r = verify_dataset(muses, "muses")
    assert set(_kinds(r)) == {"missing"} and {p.modality for p in r.problems} == {"label"}
    assert len(r.problems) == MUSES_SPLITS["val"]


def test_folder_layout_with_a_spec(deliver, tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "classes: [a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p, q, r, s, t, u, v, w, x, y]\n"
        "cases: [cloud, fog, night, rain, sun]\n"
        "case_fields: [cond]\n"
        "modalities:\n"
        "  rgb: {path: 'img/{cond}/{split}/{seq}/{frame}_rgb_front.png', rgb: true}\n"
        "  lidar: {path: 'lidar/{cond}/{split}/{seq}/{frame}_lidar_front.png'}\n"
        "label: {path: 'semantic/{cond}/{split}/{seq}/{frame}_semantic_front.png', offset: -1, "
        "ignore_values: [0, 255]}\n"
    )
    r = verify_dataset(deliver, "folder", spec=spec)
    assert r.ok and r.splits == ["train", "val"]  # found on disk
    assert r.rows["val"]["(all)"].expected is None and r.rows["val"]["(all)"].frames == 10
    victim = _first(deliver, "lidar/*/train/*/*.png")
    victim.write_bytes(b"not a png")
    rc, out, _ = _cli(capsys, deliver, "--layout", "folder", "--spec", spec, "--splits", "train")
    assert rc == 1 and str(victim) in out and "[decode]" in out


def test_folder_layout_without_splits_and_with_nothing_on_disk(tmp_path, capsys):
    for i in range(3):
        Image.fromarray(np.full((8, 10, 3), i, np.uint8)).save(tmp_path / f"rgb_{i}.png")
        Image.fromarray(np.full((8, 10), i, np.uint8)).save(tmp_path / f"label_{i}.png")
    Image.fromarray(np.full((8, 10), 7, np.uint8)).save(tmp_path / "label_2.png")  # class 7 of 3
    spec = tmp_path / "flat.yaml"
    spec.write_text(
        "classes: [a, b, c]\nmodalities: {rgb: {path: 'rgb_{k}.png'}}\nlabel: {path: 'label_{k}.png'}\n"
    )
    r = verify_dataset(tmp_path, "folder", spec=spec)  # no {split}: one set of frames
    assert r.splits == [""] and r.rows[""]["(all)"].frames == 3
    (p,) = r.problems
    assert p.kind == "label" and p.file == str(tmp_path / "label_2.png") and "value(s) 7 " in p.message
    rc, out, _ = _cli(capsys, tmp_path, "--layout", "folder", "--spec", spec)
    assert rc == 1 and "\n-      (all)           3" in out and "[label] -/-: " in out

    empty = tmp_path / "empty"
    empty.mkdir()
    spec2 = tmp_path / "split.yaml"
    spec2.write_text("classes: [a]\nmodalities: {rgb: {path: '{split}/{k}.png'}}\n")
    r = verify_dataset(empty, "folder", spec=spec2)
    assert [p.kind for p in r.problems] == ["split"] and "no frames of any split" in r.problems[0].message
    rc, out, _ = _cli(capsys, empty, "--layout", "folder", "--spec", spec2)
    assert rc == 1 and "[split]" in out


# --- usage errors: one line, exit 2 ------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, needle",
    [
        (["--layout", "kitti"], "--layout: unknown layout 'kitti'"),
        (["--layout", "folder"], "--spec"),
        (["--layout", "deliver", "--spec", "x.yaml"], "--spec: only for --layout folder"),
        (["--layout", "deliver", "--splits", "train,bogus"], "--splits: unknown deliver split 'bogus'"),
        (["--layout", "muses", "--depth-folder", "hha"], "--depth-folder: only for --layout deliver"),
        (
            ["--layout", "deliver", "--depth-folder", "lidar"],
            "--depth-folder: expected one of auto, hha, depth",
        ),
    ],
)
def test_usage_errors(args, needle, deliver_root, tmp_path, capsys):
    root = Path(shutil.copytree(deliver_root, tmp_path / "d"))
    (root / SYNTH_MANIFEST).unlink()  # published splits: 'bogus' is not one
    rc, out, err = _cli(capsys, root, *args)
    assert rc == 2 and out == ""
    assert err.startswith("equiseg data verify: error: ") and needle in err and err.count("\n") == 1


def test_missing_root_and_bad_spec(tmp_path, capsys):
    rc, _, err = _cli(capsys, tmp_path / "nowhere", "--layout", "deliver")
    assert rc == 2 and "nowhere does not exist" in err and err.count("\n") == 1
    (tmp_path / "afile").write_text("x")
    rc, _, err = _cli(capsys, tmp_path / "afile", "--layout", "muses")
    assert rc == 2 and "is a file" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("classes: [a]\nmodalities:\n  rgb: {path: 'x/{k}.png', type: sparkly}\n")
    rc, _, err = _cli(capsys, tmp_path, "--layout", "folder", "--spec", bad)
    assert rc == 2 and str(bad) in err and "modalities.rgb" in err and err.count("\n") == 1
    rc, _, err = _cli(capsys, tmp_path, "--layout", "folder", "--spec", tmp_path / "none.yaml")
    assert rc == 2 and "none.yaml does not exist" in err
    (tmp_path / SYNTH_MANIFEST).write_text("{not json")
    rc, _, err = _cli(capsys, tmp_path, "--layout", "deliver")
    assert rc == 2 and SYNTH_MANIFEST in err and err.count("\n") == 1


# --- the manifest synth writes ---------------------------------------------------------------------------
def test_synth_writes_and_merges_its_manifest(tmp_path):
    root = tmp_path / "d"
    s = generate(root, layout="deliver", splits={"train": 3}, size=32, seed=0, progress=False)
    assert s["manifest"] == str(root / SYNTH_MANIFEST)
    generate(root, layout="deliver", splits={"val": 2}, size=32, seed=0, conditions="fog", progress=False)
    m = read_synth_manifest(root)
    assert m["layout"] == "deliver"
    assert m["splits"]["train"]["frames"] == 3 and m["splits"]["val"] == {
        "frames": 2, "conditions": {"fog": 2}, "size": [32, 32], "seed": 0}  # fmt: skip
    assert verify_dataset(root, "deliver").ok  # both runs described
    generate(root, layout="muses", splits={"val": 1}, size=32, progress=False)  # another layout replaces it
    assert list(read_synth_manifest(root)["splits"]) == ["val"]
