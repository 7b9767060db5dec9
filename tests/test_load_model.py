"""The one model loader (``equiseg.models.load_model``, ``equiseg.load``): every format it reads -- a
training checkpoint, an ``equiseg export`` folder, a peer's release, a bare state dict -- detected from
the content, read once, returned as one typed ``LoadedModel``; and one precise line for each bad input."""

from __future__ import annotations

import json

import pytest
import safetensors.torch
import torch
import yaml
from model_utils import TINY
from reference_fixtures import rel_err, release_setup

import equiseg
from equiseg.api import model_from_checkpoint
from equiseg.checkpoint_io import CheckpointError, load_checkpoint, save_checkpoint
from equiseg.data import DELIVER_NORM_STATS
from equiseg.engine.eval_setup import load_eval_setup, load_with_config
from equiseg.models import LoadedModel, ModelFile, create_model, load_model, model_config, read_model_file
from equiseg.models.backbones import MixVisionTransformer
from equiseg.tasks.export import export_safetensors, load_checkpoint_model

MODS = ["rgb", "depth"]
META = {
    "classes": ["a", "b", "c", "d", "e"],
    "palette": [[i, i, i] for i in range(5)],
    "modalities": MODS,
    "ignore_index": 255,
    "rgb_modalities": ["rgb"],
    "norm_stats": {m: DELIVER_NORM_STATS[m].to_dict() for m in MODS},
}
X = [torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)) for _ in MODS]


def _tiny(**kw) -> equiseg.EQUISeg:
    torch.manual_seed(0)
    return create_model("equiseg_b0", num_classes=5, modalities=MODS, **{**TINY, **kw}).eval()


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(X)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """A checkpoint laid out as the trainer writes it, the export of the same model, a bare state dict
    and the CMNeXt fixture's release with the config that names its model and data set."""
    root = tmp_path_factory.mktemp("load_model")
    model = _tiny()
    ckpt = root / "best.pt"
    state = {
        "model": model.state_dict(),
        "model_config": model.cfg.to_dict(),
        "meta": META,
        "config": {"model": {"name": "equiseg_b0"}},
        "iter": 7,
    }
    save_checkpoint(ckpt, state)
    export = root / "export"
    export_safetensors(model, export, META)
    bare = root / "bare.pt"
    torch.save(model.state_dict(), bare)
    fx, release, cfg = release_setup(root, reference_compat=True)
    (root / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    return dict(root=root, model=model, ckpt=ckpt, export=export, bare=bare, fx=fx, release=release, cfg=cfg)


@pytest.fixture
def reads(monkeypatch) -> dict:
    """How often a file is read: ``torch.load`` and safetensors' ``load_file`` calls, counted."""
    counts = {"torch": 0, "safetensors": 0}
    torch_load, st_load = torch.load, safetensors.torch.load_file

    def counting_torch(*args, **kwargs):
        counts["torch"] += 1
        return torch_load(*args, **kwargs)

    def counting_st(*args, **kwargs):
        counts["safetensors"] += 1
        return st_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_torch)
    monkeypatch.setattr(safetensors.torch, "load_file", counting_st)
    return counts


# ------------------------------------------------------------------------------------------- formats


def test_a_training_checkpoint(files, reads):
    loaded = load_model(files["ckpt"])
    assert reads == {"torch": 1, "safetensors": 0}
    assert isinstance(loaded, LoadedModel) and loaded.format == "checkpoint" and loaded.path == files["ckpt"]
    assert loaded.name == "equiseg_b0" and loaded.iteration == 7 and loaded.train_config["model"]["name"]
    assert loaded.classes == META["classes"] and loaded.num_classes == 5 and loaded.modalities == tuple(MODS)
    assert loaded.norm_stats == META["norm_stats"] and loaded.model.meta == loaded.meta
    assert loaded.model_config == files["model"].cfg and not loaded.model.training
    assert loaded.describe() == f"{files['ckpt']}: equiseg checkpoint of equiseg_b0 (iteration 7)"
    torch.testing.assert_close(_logits(loaded.model), _logits(files["model"]), rtol=0, atol=0)


def test_an_export_folder_and_its_files(files, reads):
    folder = files["export"]
    for source in (folder, folder / "config.json", folder / "model.safetensors"):
        loaded = load_model(source)
        assert loaded.format == "export" and loaded.path == source
        assert loaded.weights == folder / "model.safetensors" and loaded.meta == META
        assert loaded.iteration is None and loaded.train_config is None and loaded.name == "equiseg"
        torch.testing.assert_close(_logits(loaded.model), _logits(files["model"]), rtol=0, atol=0)
    assert reads == {"torch": 0, "safetensors": 3}  # one read per load
    assert equiseg.from_pretrained(folder).meta == META  # the old name: the loader's .model


def test_a_release_with_the_config_naming_its_model(files, reads):
    fx, cfg = files["fx"], files["cfg"]
    fields = {k: v for k, v in cfg["model"].items() if k != "name"}  # the fixture's sizes, reference_compat
    model_cfg = model_config("cmnext_b0", num_classes=4, modalities=cfg["data"]["modalities"], **fields)
    loaded = load_model(files["release"], config=model_cfg, name="cmnext_b0")
    assert reads == {"torch": 0, "safetensors": 1}
    assert loaded.format == "release" and loaded.name == "cmnext_b0" and loaded.meta == {}
    assert "cmnext release state dict (backbone.*, decode_head.*)" in loaded.report
    assert loaded.describe().endswith("mapped and loaded strictly into cmnext_b0")
    with torch.no_grad():
        assert rel_err(loaded.model(fx.inputs), fx.logits) < 1e-4  # the released network, exactly
    # the experiment-config level: the config's data set gives the classes and normalisation
    by_yaml = equiseg.load(files["release"], files["root"] / "cfg.yaml")
    assert by_yaml.classes == ["c0", "c1", "c2", "c3"] and set(by_yaml.norm_stats) == set(
        model_cfg.modalities
    )
    assert reads["safetensors"] == 2


def test_a_bare_state_dict_with_its_model_config(files, reads):
    loaded = load_model(files["bare"], config=files["model"].cfg, meta=META)
    assert reads == {"torch": 1, "safetensors": 0}
    assert loaded.format == "state_dict" and loaded.meta == META and loaded.name == "equiseg"
    torch.testing.assert_close(_logits(loaded.model), _logits(files["model"]), rtol=0, atol=0)


def test_one_read_from_the_file_to_the_evaluation(files, reads):
    """A caller that must know the format first (``compare`` builds a release with ``reference_compat``)
    reads the file once and hands the :class:`ModelFile` on: nothing reads it again."""
    file = read_model_file(files["release"])
    assert isinstance(file, ModelFile) and file.format == "release" and file.release == "cmnext"
    assert file.needs_config and reads["safetensors"] == 1
    setup = load_eval_setup(files["cfg"], file)
    assert reads == {"torch": 0, "safetensors": 1}
    assert setup.loaded.format == "release" and setup.name == "cmnext_b0" and len(setup.dataset) == 2


def test_api_load_model_and_model_from_checkpoint_delegate(files):
    model = equiseg.load_model(files["ckpt"])
    assert isinstance(model, equiseg.EQUISeg) and model.meta == META and not model.training
    rebuilt = model_from_checkpoint(load_checkpoint(files["ckpt"]), "best.pt")
    torch.testing.assert_close(_logits(rebuilt), _logits(model), rtol=0, atol=0)


def test_pretrained_full_model_weights_read_once(files, reads):
    """``model.pretrained`` naming a whole model's weights goes through the same reader, once."""
    model = create_model("equiseg_b0", num_classes=5, modalities=MODS, pretrained=files["ckpt"], **TINY)
    assert reads == {"torch": 1, "safetensors": 0} and model.pretrained_report.kind == "full"
    torch.testing.assert_close(_logits(model.eval()), _logits(files["model"]), rtol=0, atol=0)


# -------------------------------------------------------------------------------------------- errors


def test_missing_file_and_folder_without_config(files, tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"^{tmp_path}/nope.pt does not exist; expected an equiseg "):
        load_model(tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError, match=rf"^{tmp_path} is a folder, expected a checkpoint file "):
        load_model(tmp_path)
    onnx_only = tmp_path / "onnx_only"
    onnx_only.mkdir()
    (onnx_only / "config.json").write_text((files["export"] / "config.json").read_text())
    with pytest.raises(
        FileNotFoundError, match=r"model.safetensors does not exist; export the PyTorch weights"
    ):
        load_model(onnx_only)


def test_not_a_checkpoint(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=rf"checkpoint {junk} "):
        load_model(junk)
    with pytest.raises(ValueError, match=rf"{junk}"):  # the old API name keeps its ValueError
        load_checkpoint_model(junk)
    bad_json = tmp_path / "export"
    bad_json.mkdir()
    (bad_json / "config.json").write_text('{"format": "equ')
    with pytest.raises(ValueError, match=rf"^{bad_json}/config.json: not valid JSON"):
        load_model(bad_json)


def test_unknown_format_and_encoder_weights(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"foo": torch.zeros(2)}, other)
    with pytest.raises(
        ValueError, match=rf"^{other}: neither an equiseg checkpoint .* it has keys \['foo'\]$"
    ):
        load_model(other)
    mit = tmp_path / "mit_b0.pth"
    torch.save(MixVisionTransformer().state_dict(), mit)
    assert read_model_file(mit).format == "mit"
    with pytest.raises(ValueError, match=rf"^{mit}: MiT encoder weights \(ImageNet\), not a whole model"):
        load_model(mit)


def test_release_or_state_dict_without_config(files):
    with pytest.raises(ValueError, match=r"is a released state dict: pass --config \(config= in Python\)"):
        load_model(files["release"])
    with pytest.raises(
        ValueError, match=r"bare.pt is a full-model state dict without its model config: pass"
    ):
        equiseg.load(files["bare"])


def test_config_and_model_mismatch(files, tmp_path):
    # a config given with a checkpoint must name the stored network
    with pytest.raises(
        ValueError, match=r"best.pt: model.hub is 'mean' in the given config but 'selfquery' in"
    ):
        load_model(files["ckpt"], config=_tiny(hub="mean").cfg)
    load_model(files["ckpt"], config=_tiny(lambda_sgm=1.0).cfg)  # a training-only key may differ
    # a release of another method than the config names
    other = {**files["cfg"], "model": {**files["cfg"]["model"], "name": "stitchfusion_b0"}}
    with pytest.raises(
        ValueError, match=r"is a cmnext release, but the model \(from the config\) is stitchfusion"
    ):
        load_with_config(files["release"], other)
    # weights that do not fit the model config stored with them: one line, a few names
    model = _tiny()
    bad = tmp_path / "mismatch.pt"
    save_checkpoint(
        bad, {"model": _tiny(share_encoder=False).state_dict(), "model_config": model.cfg.to_dict()}
    )
    with pytest.raises(
        ValueError, match=rf"^{bad}: weights do not match the model config stored with them: "
    ):
        load_model(bad)
    # a malformed stored config names the file and the key
    broken = tmp_path / "broken.pt"
    save_checkpoint(broken, {"model": model.state_dict(), "model_config": {**model.cfg.to_dict(), "hub": 3}})
    with pytest.raises(ValueError, match=rf"^{broken}: model_config: "):
        load_model(broken)
    # an export whose config.json was edited
    edited = tmp_path / "edited"
    export_safetensors(model, edited, META)
    config = json.loads((edited / "config.json").read_text())
    config["model_config"]["hub"] = "mean"
    (edited / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ValueError, match=r"model.safetensors: checkpoint is for another EQUISeg architecture"
    ):
        load_model(edited)
