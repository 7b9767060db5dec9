"""Any number of input channels per modality (``data.channels``): the stems and their initialisation,
every architecture, the folder spec and loaders, the transforms, and a 1-channel plus a 20-channel
modality end to end (train, eval, analyze, robustness, predict, safetensors and ONNX export). With the
default (3 everywhere) nothing changes: no new state dict key, the same outputs (the parity tests of
tests/test_peer_*.py, tests/test_weights.py and tests/test_release_files.py cover the releases)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from fixtures_data import pattern, write_png8
from model_utils import TINY
from PIL import Image

import equiseg
from equiseg.cli import main
from equiseg.config import load_experiment
from equiseg.data import FolderDataset, NormStats, build_train_transform, build_val_transform
from equiseg.models import create_model
from equiseg.models.backbones import stem_weight_from_rgb
from equiseg.models.weights import load_mit_weights
from equiseg.robustness.corruptions import apply_emm, apply_nm, apply_rmm
from equiseg.tasks.predict import predict

ARCHS = ["equiseg_b0", "segformer_b0", "cmnext_b0", "cmx_b0", "stitchfusion_b0", "magic_b0", "magicpp_b0"]
MODS = ("rgb", "depth", "ms")
CHANNELS = {"depth": 1, "ms": 20}


def _mods(name: str) -> tuple[str, ...]:
    return MODS[:2] if name.startswith("cmx") else MODS  # CMX fuses exactly two


def _channels(name: str) -> dict[str, int]:
    return {m: c for m, c in CHANNELS.items() if m in _mods(name)}


# ----------------------------------------------------------------------------- the stem initialisation


def test_stem_weight_from_rgb_answers_as_the_rgb_filter_to_a_repeated_signal():
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(8, 3, 7, 7, generator=g, dtype=torch.float64)  # float64: the identity, exactly
    signal = torch.randn(2, 1, 32, 32, generator=g, dtype=torch.float64)
    rgb = F.conv2d(signal.repeat(1, 3, 1, 1), weight, padding=3)  # the loaders' old repeat
    for c in (1, 2, 20):
        w = stem_weight_from_rgb(weight, c)
        assert w.shape == (8, c, 7, 7)
        torch.testing.assert_close(
            F.conv2d(signal.repeat(1, c, 1, 1), w, padding=3), rgb, rtol=1e-5, atol=1e-5
        )
    assert stem_weight_from_rgb(weight, 3) is weight  # 3 channels: the RGB filters themselves
    with pytest.raises(ValueError, match="D×3×k×k"):
        stem_weight_from_rgb(torch.randn(8, 1, 7, 7), 2)


def _mit_file(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A 3-channel MiT-B0-tiny weights file in the original layout (what ``mit_b0.pth`` holds)."""
    torch.manual_seed(1)
    sd = create_model("segformer_b0", num_classes=2, modalities=["rgb"], **TINY).backbone.state_dict()
    path = tmp_path / "mit_tiny.pth"
    torch.save(sd, path)
    return path, sd


def test_mit_weights_fill_every_stem_and_count_as_loaded(tmp_path):
    path, sd = _mit_file(tmp_path)
    w1 = stem_weight_from_rgb(sd["patch_embed1.proj.weight"], 1)
    w20 = stem_weight_from_rgb(sd["patch_embed1.proj.weight"], 20)
    # a shared MiT: stems.<modality> beside patch_embed1
    model = create_model("equiseg_b0", num_classes=2, modalities=MODS, channels=CHANNELS, **TINY)
    report = load_mit_weights(model, path)
    assert report.missing_keys == [] and report.unexpected_keys == [] and report.coverage == 1.0
    enc = model.backbone
    assert torch.equal(enc.stems.depth.proj.weight, w1) and torch.equal(enc.stems.ms.proj.weight, w20)
    for stem in (enc.stems.depth, enc.stems.ms):
        assert torch.equal(stem.proj.bias, sd["patch_embed1.proj.bias"])
        assert torch.equal(stem.norm.weight, sd["patch_embed1.norm.weight"])
    assert torch.equal(enc.patch_embed1.proj.weight, sd["patch_embed1.proj.weight"])  # RGB untouched
    # one MiT per modality: the branch's own patch_embed1 takes its channels
    sep = create_model(
        "equiseg_b0", num_classes=2, modalities=MODS, channels=CHANNELS, share_encoder=False, **TINY
    )
    assert load_mit_weights(sep, path).coverage == 1.0
    assert [e.patch_embed1.proj.in_channels for e in sep.backbones] == [3, 1, 20]
    assert torch.equal(sep.backbones[2].patch_embed1.proj.weight, w20)
    # CMNeXt: a non-3-channel auxiliary has its own stage-1 conv beside the shared one
    cmnext = create_model("cmnext_b0", num_classes=2, modalities=MODS, channels=CHANNELS, **TINY)
    load_mit_weights(cmnext, path)
    emb = cmnext.aux_embeds[0]
    assert torch.equal(emb.stems["0"].weight, w1) and torch.equal(emb.stems["1"].weight, w20)
    assert torch.equal(emb.stems["1"].bias, sd["patch_embed1.proj.bias"])


@pytest.mark.parametrize("name", ARCHS)
def test_a_one_channel_stem_starts_as_the_three_channel_network_on_the_repeated_image(name, tmp_path):
    """From the same 3-channel weights, the 1-channel model on ``g`` computes what the 3-channel model
    computed on ``g`` repeated three times (what the loaders fed before): the stem loses nothing."""
    path, _ = _mit_file(tmp_path)
    mods = _mods(name)
    torch.manual_seed(0)
    three = create_model(name, num_classes=4, modalities=mods, **TINY).eval()
    one = create_model(name, num_classes=4, modalities=mods, channels={"depth": 1}, **TINY).eval()
    load_mit_weights(three, path)
    load_mit_weights(one, path)
    own = one.state_dict()
    rest = {k: v for k, v in three.state_dict().items() if k in own and own[k].shape == v.shape}
    one.load_state_dict(rest, strict=False)  # heads, fusion ...: the 3-channel model's
    g = torch.Generator().manual_seed(2)
    xs = [torch.randn(2, 3, 64, 64, generator=g) for _ in mods]
    depth = xs[1][:, :1]
    with torch.no_grad():
        ref = three([xs[0], depth.repeat(1, 3, 1, 1), *xs[2:]])
        out = one([xs[0], depth, *xs[2:]])
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- every architecture


@pytest.mark.parametrize("name", ARCHS)
def test_every_architecture_takes_any_channel_count(name):
    mods, channels = _mods(name), _channels(name)
    model = create_model(name, num_classes=4, modalities=mods, channels=channels, **TINY)
    assert model.input_channels == tuple(channels.get(m, 3) for m in mods)
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(2, c, 64, 64, generator=g) for c in model.input_channels]
    labels = torch.randint(0, 4, (2, 64, 64), generator=g)
    out = model(xs, labels=labels)
    out.loss.backward()
    stems = [p for n, p in model.named_parameters() if "stems" in n or "patch_embed1.proj.weight" in n]
    assert stems and all(p.grad is not None for p in stems)  # every stem is trained
    model.eval()
    with torch.no_grad():
        assert model(xs).shape == (2, 4, 64, 64)
        for i in range(len(mods)):  # each modality absent in turn (None), and alone
            assert model([None if j == i else x for j, x in enumerate(xs)]).shape == (2, 4, 64, 64)
            assert model([x if j == i else None for j, x in enumerate(xs)]).shape == (2, 4, 64, 64)
        zeros = [torch.zeros_like(x) if i else x for i, x in enumerate(xs)]  # the benchmark's EMM
        assert torch.isfinite(model(zeros)).all()
    with pytest.raises(ValueError, match=r"'depth' must have shape B×1×H×W"):
        model([xs[0], torch.randn(2, 3, 64, 64), *xs[2:]])


@pytest.mark.parametrize("name", ARCHS)
def test_the_default_is_the_three_channel_network_unchanged(name):
    mods = _mods(name)
    torch.manual_seed(0)
    default = create_model(name, num_classes=4, modalities=mods, **TINY).eval()
    torch.manual_seed(0)
    explicit = create_model(name, num_classes=4, modalities=mods, channels=dict.fromkeys(mods, 3), **TINY)
    explicit.eval()
    assert default.cfg.channels == explicit.cfg.channels == {}  # equal networks, equal configs
    assert list(default.state_dict()) == list(explicit.state_dict())
    assert not any("stems" in k for k in default.state_dict())
    for k, v in default.state_dict().items():
        assert torch.equal(v, explicit.state_dict()[k]), k
        if k.endswith("patch_embed1.proj.weight") or k == "aux_embeds.0.proj.weight":
            assert v.shape[1] == 3, k
    xs = [torch.randn(1, 3, 64, 64) for _ in mods]
    with torch.no_grad():
        assert torch.equal(default(xs), explicit(xs))


def test_model_config_channels_round_trip_and_old_configs_load():
    cfg = equiseg.models.model_config("equiseg_b0", 4, MODS, channels={"ms": 20, "depth": 1, "rgb": 3})
    assert cfg.channels == {"depth": 1, "ms": 20} and cfg.input_channels == (3, 1, 20)  # model order
    d = cfg.to_dict()
    assert d["channels"] == {"depth": 1, "ms": 20}
    assert equiseg.ModelConfig.from_dict(d) == cfg
    old = equiseg.models.model_config("equiseg_b0", 4, MODS).to_dict()
    old.pop("channels")  # a checkpoint written before channels existed
    assert equiseg.ModelConfig.from_dict(old).input_channels == (3, 3, 3)


# ------------------------------------------------------------------------------------ bad values


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.channels.depth=0", r"^data\.channels\.depth: expected an integer >= 1, got 0$"),
        ("data.channels.depth=-2", r"^data\.channels\.depth: expected an integer >= 1, got -2$"),
        ("data.channels.depth=1.5", r"^data\.channels\.depth: expected an integer >= 1, got 1\.5$"),
        ("data.channels.thermal=1", r"^data\.channels: unknown modality 'thermal'; data\.modalities are "),
        ("data.channels.deptj=1", r"^data\.channels: unknown modality 'deptj' \(did you mean 'depth'\?\)"),
        ("data.channels=4", r"^data\.channels: expected a mapping"),
        ("model.channels={depth: 1}", r"^model\.channels is set by the data section"),
    ],
)
def test_bad_channel_values_are_one_line_errors_naming_the_key(override, message):
    with pytest.raises(ValueError, match=message) as err:
        load_experiment(None, [override])
    assert "\n" not in str(err.value)


def test_bad_channel_values_from_the_cli_are_one_line_errors(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"channels": {"depth": 0}}}))
    assert main(["--quiet", "train", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.channels.depth: expected an integer >= 1, got 0" in err[0]


# ------------------------------------------------------------------- the folder spec and the loaders

DATASET_YAML = textwrap.dedent(
    """
    name: sensors
    classes: [road, car, sky]
    modalities:
      rgb:
        path: "rgb/{split}/{key}.png"
        rgb: true
        norm: {mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], scale: 255}
      depth:
        path: "depth/{split}/{key}.png"
        channels: 1
      ms:
        path: "ms/{split}/{key}.npy"
        type: array
        channels: 20
        norm: {mean: [0.5], std: [0.25], scale: 1}
    label:
      path: "label/{split}/{key}.png"
    """
)


def make_sensors(root: Path, splits: dict[str, int] | None = None, size: int = 64) -> Path:
    """A folder data set of RGB, 1-channel 8-bit depth PNGs and 20-channel float ``.npy`` arrays."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "sensors.yaml").write_text(DATASET_YAML)
    rng = np.random.default_rng(0)
    for split, n in (splits or {"train": 4, "val": 2}).items():
        for i in range(n):
            key = f"{split}{i}"
            label = rng.integers(0, 3, (size, size), dtype=np.uint8)
            write_png8(root / f"rgb/{split}/{key}.png", pattern(size, size, 3, i))
            write_png8(root / f"depth/{split}/{key}.png", (label * 100).astype(np.uint8))  # gray, H×W
            (root / f"ms/{split}").mkdir(parents=True, exist_ok=True)
            ms = rng.random((size, size, 20), dtype=np.float32) + label[..., None]
            np.save(root / f"ms/{split}/{key}.npy", ms)
            write_png8(root / f"label/{split}/{key}.png", label)
    return root / "sensors.yaml"


def test_loaders_take_each_modality_with_its_channels(tmp_path):
    spec = make_sensors(tmp_path / "s", {"train": 2}, size=40)
    ds = FolderDataset(spec, split="train")
    assert ds.channels == {"rgb": 3, "depth": 1, "ms": 20}
    (rgb, depth, ms), label = ds[0]
    assert rgb.shape == (3, 40, 40) and depth.shape == (1, 40, 40) and ms.shape == (20, 40, 40)
    assert depth.dtype == torch.uint8 and ms.dtype == torch.float32
    np.testing.assert_array_equal(ms.permute(1, 2, 0).numpy(), np.load(tmp_path / "s/ms/train/train0.npy"))
    # normalisation: one value for all channels, fitted to the modality's channels
    assert ds.norm_stats["ms"].mean == (0.5,) * 20 and len(ds.norm_stats["depth"].mean) == 1
    val = build_val_transform(ds.modalities, ds.norm_stats, short_side=64, align=32)
    (v_rgb, v_depth, v_ms), v_label = val(*ds.load(0))
    assert v_rgb.shape == (3, 64, 64) and v_depth.shape == (1, 64, 64) and v_ms.shape == (20, 64, 64)
    assert v_label.shape == (64, 64)
    norm = build_val_transform(ds.modalities, ds.norm_stats, short_side=None)(*ds.load(0))[0]
    torch.testing.assert_close(norm[2], (ms - 0.5) / 0.25)  # (x / scale - mean) / std per channel
    torch.testing.assert_close(norm[1], depth.float() / 255)  # 8-bit default: /255, mean 0, std 1
    train = build_train_transform(32, ds.modalities, ds.norm_stats, ds.rgb_modalities, seed=0)
    outs, lab = train(*ds.load(1))
    assert [tuple(x.shape) for x in outs] == [(3, 32, 32), (1, 32, 32), (20, 32, 32)]
    assert lab.shape == (32, 32)
    # the experiment's data.channels decides, and must agree with the spec where it declares one
    assert FolderDataset(spec, split="train", channels={"depth": 1, "ms": 20}).channels["ms"] == 20
    with pytest.raises(ValueError, match=r"data\.channels\.ms: is not set \(3\) but the sensors spec declares "
                       r"modalities\.ms\.channels: 20; set data\.channels\.ms: 20"):  # fmt: skip
        FolderDataset(spec, split="train", channels={"depth": 1})


def test_loader_refuses_a_file_with_other_channels(tmp_path):
    spec = make_sensors(tmp_path / "s", {"train": 1}, size=40)
    write_png8(tmp_path / "s/depth/train/train0.png", pattern(40, 40, 3, 0))  # RGB where 1 is declared
    ds = FolderDataset(spec, split="train")
    with pytest.raises(ValueError, match=r"train0\.png: has 3 channel\(s\), but the modality takes 1"):
        ds[0]


@pytest.mark.parametrize(
    "edit, message",
    [
        ({"channels": 0}, r"modalities\.ms\.channels: expected an integer >= 1, got 0"),
        ({"channels": "many"}, r"modalities\.ms\.channels: expected an integer"),
        ({"rgb": True}, r"modalities\.ms\.rgb: colour jitter and blur need 3 \(RGB\) channels"),
        (
            {"norm": {"mean": [1, 2, 3], "std": [1, 1, 1]}},
            r"modalities\.ms\.norm: has 3 different means/stds",
        ),
    ],
)
def test_bad_spec_channels(tmp_path, edit, message):
    spec_path = make_sensors(tmp_path / "s", {"train": 1}, size=40)
    spec = yaml.safe_load(spec_path.read_text())
    spec["modalities"]["ms"].update(edit)
    spec_path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ValueError, match=message):
        FolderDataset(spec_path, split="train")


def test_norm_stats_for_channels():
    assert NormStats((0.2,), (0.5,), 1).for_channels(4).mean == (0.2,) * 4
    assert NormStats().for_channels(1) == NormStats((0.0,), (1.0,), 1.0)  # DeLiVER's non-RGB 0 / 1
    assert NormStats((1, 2), (1, 1)).for_channels(2).mean == (1.0, 2.0)
    with pytest.raises(ValueError, match="as many means as stds"):
        NormStats((0, 0), (1,))
    x = torch.rand(5, 8, 8) * 255
    st = NormStats((0.1,), (0.3,), 255)
    torch.testing.assert_close(st.invert(st.apply(x)), x, rtol=1e-5, atol=1e-3)


def test_robustness_corruptions_on_any_channel_count():
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(1, c, 32, 32, generator=g) for c in (3, 1, 20)]
    emm = apply_emm(xs, (1, 2))
    assert emm[0] is xs[0] and all(torch.equal(e, torch.zeros_like(x)) for e, x in zip(emm[1:], xs[1:]))
    rmm = apply_rmm(xs, (2,), 0.5, torch.Generator().manual_seed(0))
    assert rmm[2].shape == (1, 20, 32, 32) and 0.4 < float((rmm[2] == 0).float().mean()) < 0.6
    nm = apply_nm(xs, "mid", torch.Generator().manual_seed(0))
    assert [tuple(x.shape) for x in nm] == [tuple(x.shape) for x in xs]
    assert all(not torch.equal(a, b) for a, b in zip(nm, xs))


# ------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """A tiny EQUISeg trained for two iterations on RGB + 1-channel depth + 20-channel ``ms``, its
    stems initialised from 3-channel MiT weights (``model.pretrained``)."""
    tmp = tmp_path_factory.mktemp("channels")
    spec = make_sensors(tmp / "data")
    mit, _ = _mit_file(tmp)
    config = {
        "model": {
            "name": "equiseg_b0",
            **{k: list(v) if isinstance(v, tuple) else v for k, v in TINY.items()},
        },
        "data": {
            "dataset": "folder",
            "spec": str(spec),
            "root": str(tmp / "data"),
            "modalities": list(MODS),
            "channels": dict(CHANNELS),
            "crop_size": [64, 64],
            "val_short_side": None,
            "batch_size": 2,
            "num_workers": 0,
        },
        "train": {
            "max_iters": 2,
            "warmup_iters": 0,
            "lr": 1e-3,
            "val_interval": 2,
            "seed": 0,
            "device": "cpu",
        },
        "eval": {"convention": "present"},
        "work_dir": str(tmp / "run"),
    }
    config["model"]["pretrained"] = str(mit)
    cfg = tmp / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(config, sort_keys=False))
    result = equiseg.train(cfg, progress=False)
    return {"tmp": tmp, "cfg": cfg, "ckpt": result.work_dir / "last.pt", "result": result}


def test_train_keeps_the_channels_in_the_checkpoint(run):
    from equiseg.tasks.export import load_checkpoint_model

    assert run["result"].iterations == 2
    model = load_checkpoint_model(run["ckpt"])
    assert model.cfg.channels == CHANNELS and model.input_channels == (3, 1, 20)
    assert model.backbone.stems.ms.proj.weight.shape[1] == 20
    saved = yaml.safe_load((run["ckpt"].parent / "config.yaml").read_text())
    assert saved["data"]["channels"] == CHANNELS


def test_eval_analyze_and_robustness(run, capsys):
    cfg, ckpt, tmp = str(run["cfg"]), str(run["ckpt"]), run["tmp"]
    assert main(["--quiet", "eval", cfg, "--checkpoint", ckpt, "--out", str(tmp / "ev")]) == 0
    assert (tmp / "ev" / "metrics.json").is_file()
    assert main(["--quiet", "analyze", cfg, "--checkpoint", ckpt, "--out", str(tmp / "an")]) == 0
    out = tmp / "rob"
    argv = ["--quiet", "robustness", cfg, "--checkpoint", ckpt, "--tests", "emm,rmm,nm", "--max-samples", "1",
            "--model-aware-missing", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    r = json.loads((out / "robustness.json").read_text())
    assert r["modalities"] == list(MODS) and len(r["emm"]["combinations"]) == 7
    assert {"clean", "emm_avg", "nm_low", "mean"} <= set(r["summary"]) and r["summary"]["mean"] is not None
    # a config whose data.channels contradicts the checkpoint is refused, naming the key
    capsys.readouterr()
    bad = ["--quiet", "eval", cfg, "--checkpoint", ckpt, "--set", "data.channels.ms=3"]
    assert main(bad) == 2
    assert "data.channels.ms is 3 but the checkpoint's model takes 20" in capsys.readouterr().err


def test_predict_with_files_and_absent_modalities(run, tmp_path, capsys):
    data, ckpt = run["tmp"] / "data", str(run["ckpt"])
    files = [f"rgb={data / 'rgb/val/val0.png'}", f"depth={data / 'depth/val/val0.png'}",
             f"ms={data / 'ms/val/val0.npy'}"]  # fmt: skip
    out = tmp_path / "pred"
    assert main(["--quiet", "predict", "--checkpoint", ckpt, "--out", str(out), "--overlay", "--raw",
                 "--input", *files]) == 0  # fmt: skip
    classes = np.asarray(Image.open(out / "val0_classes.png"))
    assert classes.shape == (64, 64) and classes.max() < 3
    assert (out / "val0_overlay.png").is_file()
    # the multispectral modality alone (the overlay shows its first three bands), and depth alone
    assert main(["--quiet", "predict", "--checkpoint", ckpt, "--out", str(tmp_path / "p2"), "--overlay",
                 "--input", files[2]]) == 0  # fmt: skip
    assert main(["--quiet", "predict", "--checkpoint", ckpt, "--out", str(tmp_path / "p3"),
                 "--input", files[1]]) == 0  # fmt: skip
    # the API with raw tensors: the model's channel count is checked
    ms = torch.from_numpy(np.load(data / "ms/val/val0.npy")).permute(2, 0, 1)
    (pred,) = predict(run["ckpt"], {"ms": ms})
    assert pred.shape == (64, 64)
    with pytest.raises(ValueError, match=r"'ms' must be a 20×H×W tensor"):
        predict(run["ckpt"], {"ms": ms[:3]})
    # a file with other channels than the model takes
    capsys.readouterr()
    assert main(["--quiet", "predict", "--checkpoint", ckpt, "--out", str(tmp_path / "p4"),
                 "--input", f"depth={data / 'rgb/val/val0.png'}"]) == 2  # fmt: skip
    assert "has 3 channel(s), but the modality takes 1" in capsys.readouterr().err


def test_safetensors_and_onnx_export(run, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    from equiseg.tasks.export import from_pretrained, load_checkpoint_model

    model = load_checkpoint_model(run["ckpt"])
    out = tmp_path / "export"
    ckpt = str(run["ckpt"])
    assert main(["export", "--checkpoint", ckpt, "--format", "safetensors", "--out", str(out)]) == 0
    assert (
        main(["export", "--checkpoint", ckpt, "--format", "onnx", "--out", str(out), "--size", "64", "64"])
        == 0
    )
    assert capsys.readouterr().out.count("onnxruntime vs PyTorch") == 2  # verified at two sizes
    config = json.loads((out / "config.json").read_text())
    assert config["model_config"]["channels"] == CHANNELS and config["onnx"]["input_channels"] == [3, 1, 20]
    g = torch.Generator().manual_seed(3)
    xs = [torch.randn(2, c, 64, 96, generator=g) for c in (3, 1, 20)]
    with torch.no_grad():
        ref = model(xs)
        torch.testing.assert_close(from_pretrained(out)(xs), ref)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.shape[1] for i in session.get_inputs()] == [3, 1, 20]
    got = session.run(None, {m: x.numpy() for m, x in zip(MODS, xs, strict=True)})[0]
    assert np.abs(got - ref.numpy()).max() <= 1e-4 * np.abs(ref.numpy()).max()
