"""A public release's state dict wherever the CLI takes a checkpoint: ``eval``, ``robustness``,
``analyze``, ``predict`` and ``export`` with the model named in the config, the detected format said.

The release is the CMNeXt parity fixture's reference state dict (DELIVER's own key names), and the data
a 4-class folder data set of random images, so its logits are known: the fixture's.
"""

from __future__ import annotations

import pytest
import torch
import yaml
from reference_fixtures import rel_err, release_setup

from equiseg.cli import main
from equiseg.tasks.export import load_checkpoint_model

MODS = ["rgb", "depth", "event"]


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("release")
    fx, path, cfg = release_setup(tmp, reference_compat=True)
    (tmp / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    return fx, path, tmp


def test_the_config_names_the_model_of_a_release(release):
    fx, path, tmp = release
    model = load_checkpoint_model(path, config=tmp / "cfg.yaml")
    with torch.no_grad():
        assert rel_err(model(fx.inputs), fx.logits) < 1e-4  # the released network, exactly
    assert model.meta["classes"] == ["c0", "c1", "c2", "c3"]
    with pytest.raises(ValueError, match="released state dict: pass --config"):
        load_checkpoint_model(path)


def test_every_command_takes_a_release(release, capsys):
    _, path, tmp = release
    cfg = str(tmp / "cfg.yaml")
    assert main(["--quiet", "eval", cfg, "--checkpoint", str(path), "--out", str(tmp / "ev")]) == 0
    err = capsys.readouterr().err
    assert (
        "cmnext release state dict (backbone.*, decode_head.*)" in err and "mapped and loaded strictly" in err
    )
    assert (
        main(
            [
                "--quiet",
                "robustness",
                cfg,
                "--checkpoint",
                str(path),
                "--tests",
                "emm",
                "--out",
                str(tmp / "r"),
            ]
        )
        == 0
    )
    assert main(["--quiet", "analyze", cfg, "--checkpoint", str(path), "--out", str(tmp / "a")]) == 0
    assert (
        main(
            [
                "--quiet",
                "predict",
                "--checkpoint",
                str(path),
                "--config",
                cfg,
                "--out",
                str(tmp / "p"),
                "--input",
                *[f"{m}={tmp / 'data' / m / 'val' / '0.png'}" for m in MODS],
            ]
        )
        == 0
    )
    assert list((tmp / "p").glob("*_pred.png"))
    assert (
        main(
            [
                "--quiet",
                "export",
                "--checkpoint",
                str(path),
                "--config",
                cfg,
                "--format",
                "safetensors",
                "--out",
                str(tmp / "x"),
            ]
        )
        == 0
    )
    assert (tmp / "x" / "model.safetensors").is_file()
    capsys.readouterr()
    # without --config the file cannot be interpreted: one line saying what to pass
    assert (
        main(
            [
                "--quiet",
                "export",
                "--checkpoint",
                str(path),
                "--format",
                "safetensors",
                "--out",
                str(tmp / "y"),
            ]
        )
        == 2
    )
    assert "pass --config" in capsys.readouterr().err
    # a release of another architecture than the config names: one line, the unmapped keys named
    bad = tmp / "bad.yaml"
    bad.write_text((tmp / "cfg.yaml").read_text().replace("cmnext_b0", "stitchfusion_b0"))
    assert main(["--quiet", "eval", str(bad), "--checkpoint", str(path)]) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1
        and f"{path} is a cmnext release, but the model (from the config) is stitchfusion" in err
    )
