"""Typed validation of every value a user types: experiment configs (YAML and ``--set``), the YAML spec of
a folder data set, and ``--max-samples``. Each error must name the dotted key and what was expected."""

from __future__ import annotations

import glob
import re
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from equiseg.cli import main
from equiseg.config import DataConfig, EvalConfig, TrainConfig, load_experiment, load_yaml
from equiseg.data import FolderDataset
from equiseg.data.folder import DatasetSpec
from equiseg.engine.eval_setup import subset
from equiseg.engine.evaluate import evaluate

PKG = Path(__file__).resolve().parents[1] / "equiseg"
DEMO = PKG / "configs" / "demo.yaml"

# (override, dotted key, expected-text) for every constrained key: the value is just outside the range.
BAD = [
    ("data.batch_size=0", "data.batch_size", "expected an integer >= 1, got 0"),
    ("data.num_workers=-1", "data.num_workers", "expected an integer >= 0, got -1"),
    ("data.crop_size=[16,64]", "data.crop_size[0]", "expected an integer >= 32, got 16"),
    ("data.crop_size=[64,31]", "data.crop_size[1]", "expected an integer >= 32, got 31"),
    ("data.val_short_side=31", "data.val_short_side", "expected an integer >= 32, got 31"),
    ("data.val_align=0", "data.val_align", "expected an integer >= 1, got 0"),
    ("train.epochs=0", "train.epochs", "expected an integer >= 1, got 0"),
    ("train.max_iters=-1", "train.max_iters", "expected an integer >= 0 (0: use train.epochs), got -1"),
    ("train.lr=0", "train.lr", "expected a number > 0, got 0.0"),
    ("train.lr=-0.1", "train.lr", "expected a number > 0, got -0.1"),
    ("train.lr=.nan", "train.lr", "expected a number > 0, got nan"),
    ("train.betas=[0.9,1.0]", "train.betas[1]", "expected a number in [0, 1), got 1.0"),
    ("train.weight_decay=-0.01", "train.weight_decay", "expected a number >= 0, got -0.01"),
    ("train.warmup_epochs=-1", "train.warmup_epochs", "expected a number >= 0, got -1.0"),
    ("train.warmup_iters=-2", "train.warmup_iters", "(-1: use train.warmup_epochs), got -2"),
    ("train.warmup_ratio=1.5", "train.warmup_ratio", "expected a number in [0, 1], got 1.5"),
    ("train.warmup_ratio=-0.1", "train.warmup_ratio", "expected a number in [0, 1], got -0.1"),
    ("train.power=0", "train.power", "expected a number > 0, got 0.0"),
    ("train.grad_clip=-1", "train.grad_clip", "expected a number >= 0 (0: no clipping), got -1.0"),
    ("train.seed=-1", "train.seed", "expected an integer in [0, 4294967296), got -1"),
    ("train.log_interval=0", "train.log_interval", "expected an integer >= 1, got 0"),
    ("train.val_interval=-1", "train.val_interval", "expected an integer >= 0 (0: once per epoch), got -1"),
    ("train.checkpoint_interval=-5", "train.checkpoint_interval", "(0: at every validation), got -5"),
    ("train.device=gpu", "train.device", "expected one of auto | cpu | cuda | cuda:N | mps"),
    ("eval.crop_size=[1024,8]", "eval.crop_size[1]", "expected an integer >= 32, got 8"),
    ("eval.stride=[0,768]", "eval.stride[0]", "expected an integer >= 1, got 0"),
    ("eval.scales=[1.0,-0.5]", "eval.scales[1]", "expected a number > 0, got -0.5"),
    ("eval.scales=[]", "eval.scales", "expected at least one scale"),
    ("eval.align=0", "eval.align", "expected an integer >= 1, got 0"),
    ("eval.window_batch=0", "eval.window_batch", "expected an integer >= 1, got 0"),
    ("eval.num_panels=-1", "eval.num_panels", "expected an integer >= 0, got -1"),
]


def _dict_from_override(override: str) -> dict:
    """The same bad value written in a YAML mapping instead of a ``--set`` string."""
    key, raw = override.split("=", 1)
    section, name = key.split(".")
    return {section: {name: yaml.safe_load(raw)}}


@pytest.mark.parametrize(("override", "key", "expected"), BAD, ids=[b[0] for b in BAD])
def test_out_of_range_values_name_the_key(override, key, expected):
    with pytest.raises(ValueError) as set_err:
        load_experiment(DEMO, [override])
    with pytest.raises(ValueError) as dict_err:
        load_experiment(_dict_from_override(override))
    for err in (set_err, dict_err):
        msg = str(err.value)
        assert msg.startswith(f"{key}: ") and expected in msg and "\n" not in msg, msg


def test_error_messages_verbatim():
    cases = {
        "train.lr=-0.1": "train.lr: expected a number > 0, got -0.1",
        "data.batch_size=0": "data.batch_size: expected an integer >= 1, got 0",
        "train.device=gpu": "train.device: expected one of auto | cpu | cuda | cuda:N | mps (N = 0, 1, ...), "
        "got 'gpu'",
    }
    for override, message in cases.items():
        with pytest.raises(ValueError) as err:
            load_experiment(DEMO, [override])
        assert str(err.value) == message


@pytest.mark.parametrize(
    "override",
    [
        "train.max_iters=0",  # sentinel: use epochs
        "train.val_interval=0",  # sentinel: once per epoch
        "train.checkpoint_interval=0",  # sentinel: at every validation
        "train.warmup_iters=-1",  # sentinel: use warmup_epochs
        "train.warmup_iters=0",
        "train.grad_clip=0",
        "train.epochs=1",
        "train.log_interval=1",
        "train.warmup_ratio=0",
        "train.warmup_ratio=1",
        "train.weight_decay=0",
        "train.lr=1e-9",
        "train.seed=0",
        "data.batch_size=1",
        "data.num_workers=0",
        "data.crop_size=[32,32]",
        "data.val_short_side=32",
        "data.val_short_side=null",
        "data.val_align=1",
        "eval.crop_size=[32,32]",
        "eval.stride=[1,1]",
        "eval.scales=[0.5,1.75]",
        "eval.align=null",
        "eval.window_batch=1",
        "eval.num_panels=0",
    ],
)
def test_boundary_and_sentinel_values_load(override):
    load_experiment(DEMO, [override])


def test_sentinels_keep_their_values():
    cfg = load_experiment(DEMO, ["train.max_iters=0", "train.val_interval=0", "train.warmup_iters=-1"])
    assert (cfg.train.max_iters, cfg.train.val_interval, cfg.train.warmup_iters) == (0, 0, -1)


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"])
def test_device_strings_accepted(device):
    assert load_experiment(DEMO, [f"train.device={device}"]).train.device == device


@pytest.mark.parametrize("device", ["gpu", "GPU", "cuda:", "cuda:x", "cuda:-1", "cuda 0", "tpu", "", "0"])
def test_device_strings_refused(device):
    with pytest.raises(
        ValueError, match=r"^train\.device: expected one of auto \| cpu \| cuda \| cuda:N \| mps"
    ):
        load_experiment({"train": {"device": device}})


def test_direct_construction_is_checked():
    with pytest.raises(ValueError, match=r"^data\.batch_size: expected an integer >= 1, got 0$"):
        DataConfig(batch_size=0)
    with pytest.raises(ValueError, match=r"^train\.lr: expected a number > 0"):
        TrainConfig(lr=-1.0)
    with pytest.raises(ValueError, match=r"^eval\.crop_size\[0\]: expected an integer >= 32, got 8"):
        EvalConfig(crop_size=(8, 64))
    assert TrainConfig().device == "auto" and EvalConfig().scales == (1.0,)


def test_direct_construction_checks_each_fields_declared_values_once():
    """A field's range and Literal choices are declared once, on the field (equiseg/schema.py), and hold
    for a config built in Python as for one read from YAML."""
    from equiseg.data.folder_spec import ModalitySpec
    from equiseg.models.config import ModelConfig

    with pytest.raises(ValueError, match=r"^hub: expected one of selfquery \| mean, got 'max'$"):
        ModelConfig(hub="max")
    with pytest.raises(ValueError, match=r"^num_classes: expected an integer >= 1, got 0$"):
        ModelConfig(num_classes=0)
    with pytest.raises(ValueError, match=r"^stitch_adapter_dim: expected an integer >= 1, got 0$"):
        ModelConfig(stitch_adapter_dim=0)
    with pytest.raises(
        ValueError, match=r"^data\.dataset: expected one of deliver \| muses \| folder, got 'x'$"
    ):
        DataConfig(dataset="x")
    with pytest.raises(ValueError, match=r"^modalities\.d\.png_shift: expected a finite number, got nan$"):
        ModalitySpec("d", ("d/{key}.png",), png_shift=float("nan"))
    with pytest.raises(ValueError, match=r"^modalities\.d\.png_scale: expected a non-zero number, got 0$"):
        ModalitySpec("d", ("d/{key}.png",), png_scale=0)


def test_slide_stride_must_not_exceed_crop():
    with pytest.raises(ValueError, match=r"^eval\.stride: expected entries <= eval\.crop_size \[512, 512\]"):
        load_experiment(DEMO, ["eval.mode=slide", "eval.crop_size=[512,512]"])
    load_experiment(DEMO, ["eval.crop_size=[512,512]"])  # whole mode does not use the stride
    load_experiment(DEMO, ["eval.mode=slide", "eval.crop_size=[512,512]", "eval.stride=[512,384]"])


def test_every_shipped_config_loads():
    paths = sorted(glob.glob(str(PKG / "configs" / "**" / "*.yaml"), recursive=True))
    assert len(paths) >= 4
    for path in paths:
        load_experiment(path)


def test_malformed_experiment_yaml_is_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  lr: 0.1\n  epochs: 2: 3\n")
    with pytest.raises(ValueError) as err:
        load_experiment(path)
    msg = str(err.value)
    assert msg == f"{path}: not valid YAML: mapping values are not allowed here (line 3, column 12)"


# --------------------------------------------------------------------------------------------------
# The YAML spec of a folder data set
# --------------------------------------------------------------------------------------------------

DATASET_YAML = textwrap.dedent(
    """
    classes: [road, car]
    modalities:
      rgb:
        path: "rgb/{key}.png"
        rgb: true
        bgr: false
      lidar:
        path: "lidar/{key}.png"
        type: array
        png_scale: 256
    label:
      path: "label/{key}.png"
    """
)


def _spec_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def test_valid_spec_is_parsed_typed(tmp_path):
    spec = DatasetSpec.load(_spec_file(tmp_path, DATASET_YAML.replace("bgr: false", "bgr: 'yes'")))
    assert spec.modalities["rgb"].bgr is True and spec.modalities["rgb"].rgb is True
    assert spec.modalities["lidar"].png_scale == 256.0 and spec.modalities["lidar"].kind == "array"
    assert spec.classes == ("road", "car") and spec.root == str(tmp_path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("bgr: false", "bgr: flase"), "modalities.rgb.bgr: expected true/false, got 'flase'"),
        (("rgb: true", "rgb: 2"), "modalities.rgb.rgb: expected true/false, got 2"),
        (("png_scale: 256", "png_scale: abc"), "modalities.lidar.png_scale: expected a number, got 'abc'"),
        (
            ("png_scale: 256", "png_scale: 0"),
            "modalities.lidar.png_scale: expected a non-zero number, got 0.0",
        ),
        (
            ("png_scale: 256", "png_scale: .inf"),
            "modalities.lidar.png_scale: expected a finite number, got inf",
        ),
        (("png_scale: 256", "png_shift: x"), "modalities.lidar.png_shift: expected a number, got 'x'"),
        (("rgb: true", "lowres: maybe"), "modalities.rgb.lowres: expected true/false, got 'maybe'"),
        (("type: array", "type: float"), "modalities.lidar: type must be one of image, array, got 'float'"),
        (("type: array", "type: [array]"), "modalities.lidar.type: expected a string, got ['array']"),
        (("classes: [road, car]", "classes: road"), "classes: expected a list, got 'road'"),
        (
            ("classes: [road, car]", "classes: [road, car]\nignore_index: x"),
            "ignore_index: expected an integer",
        ),
        (
            ("classes: [road, car]", "classes: [road, car]\nignore_index: -1"),
            "ignore_index: expected an integer in",
        ),
        (("classes: [road, car]", "classes: [road, car]\ncases: day"), "cases: expected a list, got 'day'"),
        (("classes: [road, car]", "classes: [road, car]\ncase_fields: key"), "case_fields: expected a list"),
        (
            ('path: "label/{key}.png"', 'path: "l/{key}.png"\n  channel: -1'),
            "label.channel: expected an integer >= 0",
        ),
        (
            ('path: "label/{key}.png"', 'path: "l/{key}.png"\n  ignore_values: [70000]'),
            "label.ignore_values[0]:",
        ),
        (
            ('path: "label/{key}.png"', 'path: "l/{key}.png"\n  mapping: {a: 1}'),
            "label.mapping['a']: expected an",
        ),
    ],
)
def test_bad_spec_values_name_file_and_key(tmp_path, edit, message):
    path = _spec_file(tmp_path, DATASET_YAML.replace(*edit))
    for load in (DatasetSpec.load, FolderDataset):
        with pytest.raises(ValueError) as err:
            load(path)
        msg = str(err.value)
        assert msg.startswith(f"{path}: ") and message in msg and "\n" not in msg, msg
    with pytest.raises(ValueError, match="^" + re.escape(message.split(":")[0])):
        DatasetSpec.load(yaml.safe_load(DATASET_YAML.replace(*edit)))  # a mapping: no file to name


def test_exact_messages_of_the_issue(tmp_path):
    path = _spec_file(tmp_path, DATASET_YAML.replace("bgr: false", "bgr: flase"))
    with pytest.raises(ValueError) as err:
        FolderDataset(path)
    assert str(err.value) == f"{path}: modalities.rgb.bgr: expected true/false, got 'flase'"
    path = _spec_file(tmp_path, DATASET_YAML.replace("png_scale: 256", "png_scale: abc"))
    with pytest.raises(ValueError) as err:
        DatasetSpec.load(path)
    assert str(err.value) == f"{path}: modalities.lidar.png_scale: expected a number, got 'abc'"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("classes: [road]\nmodalities:\n  rgb: path: x\n", "(line 3, column 12)"),
        ("classes: [road\nmodalities: {}\n", "line 2"),
        ("modalities:\n  rgb:\n    path: 'a\n", "line 4"),
        ("\tclasses: [a]\n", "line 1"),
    ],
)
def test_malformed_spec_yaml_is_one_line(tmp_path, text, where):
    path = _spec_file(tmp_path, text)
    for load in (DatasetSpec.load, FolderDataset, load_yaml):
        with pytest.raises(ValueError) as err:
            load(path)
        msg = str(err.value)
        assert msg.startswith(f"{path}: not valid YAML: ") and where in msg and "\n" not in msg, msg


def test_spec_must_be_a_mapping(tmp_path):
    path = _spec_file(tmp_path, "- a\n- b\n")
    with pytest.raises(ValueError, match=r"spec\.yaml: expected a YAML mapping at the top level, got list$"):
        FolderDataset(path)


# --------------------------------------------------------------------------------------------------
# --max-samples
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["eval", "analyze", "robustness"])
@pytest.mark.parametrize("value", ["0", "-3", "two"])
def test_cli_refuses_non_positive_max_samples(command, value, capsys):
    with pytest.raises(SystemExit) as err:
        main([command, str(DEMO), "--checkpoint", "missing.pt", "--max-samples", value])
    assert err.value.code == 2
    stderr = capsys.readouterr().err
    assert "argument --max-samples: expected an integer >= 1, got" in stderr and value in stderr


def test_cli_ablate_refuses_zero_max_samples(capsys):
    with pytest.raises(SystemExit) as err:
        main(["ablate", str(DEMO), "--rows", "tab2", "--max-samples", "0"])
    assert err.value.code == 2 and "--max-samples" in capsys.readouterr().err


def test_evaluate_refuses_zero_samples():
    with pytest.raises(ValueError, match=r"^max_samples must be >= 1, got 0$"):
        evaluate(torch.nn.Identity(), [], max_samples=0)
    with pytest.raises(ValueError, match=r"max_samples must be >= 1, got -1"):
        evaluate(torch.nn.Identity(), [], max_samples=-1)


def test_subset_checks_before_short_circuit():
    data = list(range(3))
    assert subset(data, None) is data and subset(data, 5) is data and len(subset(data, 2)) == 2
    with pytest.raises(ValueError, match="max_samples must be >= 1, got 0"):
        subset([], 0)  # 0 >= len([]) used to return the (empty) data set
