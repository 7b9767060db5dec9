"""``equiseg pretrain``: an encoder pretrained on the built-in scenes, in the original
``mit_b*.pth`` layout, loads as ImageNet weights do -- every encoder key, into every branch."""

from __future__ import annotations

import json

import torch

import equiseg
from equiseg.cli import main
from equiseg.models import load_mit_weights
from equiseg.tasks.pretrain import DATA_SEED, PretrainSize, run_pretrain

TINY = PretrainSize(train=4, size=64, max_iters=2)


def test_pretrain_writes_a_mit_file_that_loads_fully(tmp_path):
    out = tmp_path / "mit_b0_synth.pth"
    r = run_pretrain(
        out,
        size=TINY,
        modalities=["rgb", "depth"],
        overrides=["data.batch_size=2", "data.num_workers=0"],
        progress=False,
    )
    assert r.iterations == 2 and out.is_file()
    sd = torch.load(out, weights_only=True)
    assert all(k.startswith(("patch_embed", "block", "norm")) for k in sd)  # the original layout
    model = equiseg.create_model("equiseg_b0", num_classes=25, modalities=["rgb", "depth", "event"])
    report = load_mit_weights(model, out)
    assert report.missing_keys == [] and report.unexpected_keys == [] and report.matched == report.total
    for name, v in sd.items():  # every branch (here: the shared MiT) holds the pretrained tensors
        assert torch.equal(model.backbone.state_dict()[name], v), name
    # the trained encoder differs from a fresh one: it was trained, not copied from the init
    fresh = equiseg.create_model("equiseg_b0", num_classes=25, modalities=["rgb"])
    assert not torch.equal(fresh.backbone.patch_embed1.proj.weight, sd["patch_embed1.proj.weight"])
    # its own data: generated with a seed no evaluation uses, beside the file
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["data_seed"] == DATA_SEED != 0 and (tmp_path / "mit_b0_synth_data" / "img").is_dir()
    # model.pretrained accepts it
    m2 = equiseg.create_model("equiseg_b0", num_classes=25, modalities=["rgb", "depth"], pretrained=out)
    assert m2.pretrained_report.coverage == 1.0


def test_pretrain_cli_errors(tmp_path, capsys):
    assert main(["--quiet", "pretrain", "--out", str(tmp_path / "x.txt")]) == 2
    assert "expected a .pth file name" in capsys.readouterr().err
    assert main(["--quiet", "pretrain", "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
