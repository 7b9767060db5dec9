"""Pretrained weights that cover too little of the encoder fail: the load report
(:meth:`LoadResult.summary`), the 90 % coverage check and ``model.pretrained_strict: false``."""

from __future__ import annotations

import math

import pytest
import torch

import equiseg
from equiseg.config import load_experiment
from equiseg.models import MixVisionTransformer, build_model, load_mit_weights
from equiseg.models.weights import MIN_COVERAGE, LoadResult, load_pretrained

MODS = ["rgb", "depth"]
TINY = dict(embed_dims=(8, 16, 40, 64), depths=(1, 1, 1, 1), decoder_dim=32, drop_path_rate=0.0)


@pytest.fixture(scope="module")
def mit_sd() -> dict[str, torch.Tensor]:
    """ImageNet-style MiT-B0 weights with the classifier head, as ``mit_b0.pth`` holds them."""
    torch.manual_seed(0)
    sd = dict(MixVisionTransformer().state_dict())
    sd["head.weight"] = torch.zeros(1000, 256)
    sd["head.bias"] = torch.zeros(1000)
    return sd


def _save(tmp_path, sd, name="mit_b0.pth"):
    torch.save(sd, tmp_path / name)
    return tmp_path / name


def test_full_file_report(mit_sd, tmp_path):
    path = _save(tmp_path, mit_sd)
    model = equiseg.create_model("equiseg_b0", modalities=MODS, pretrained=path)
    r = model.pretrained_report
    assert isinstance(r, LoadResult) and r.kind == "mit" and r.source == str(path)
    assert (
        r.missing_keys == []
        and r.unexpected_keys == []
        and sorted(r.ignored_keys) == ["head.bias", "head.weight"]
    )
    total = len(MixVisionTransformer().state_dict())
    assert r.matched == r.total == total and r.coverage == 1.0
    assert r.summary() == (
        f"mit weights {path}: matched {total}/{total} encoder keys (100.0 %), 0 missing, 0 unexpected, "
        "2 ignored (head.weight, head.bias)"
    )
    torch.testing.assert_close(model.encoders[0].patch_embed1.proj.weight, mit_sd["patch_embed1.proj.weight"])
    assert equiseg.create_model("equiseg_b0", modalities=MODS, **TINY).pretrained_report is None


def test_one_key_file_is_refused_unless_not_strict(mit_sd, tmp_path):
    path = _save(tmp_path, {"patch_embed1.proj.weight": mit_sd["patch_embed1.proj.weight"]})
    total = len(MixVisionTransformer().state_dict())
    model = equiseg.create_model("equiseg_b0", modalities=MODS)
    before = model.encoders[0].patch_embed1.proj.weight.detach().clone()
    with pytest.raises(ValueError) as e:
        load_pretrained(model, path)
    msg = str(e.value)
    assert msg.startswith(
        f"mit weights {path}: matched 1/{total} encoder keys (0.6 %), {total - 1} missing ("
    )
    assert "under 90 %" in msg and msg.endswith("set model.pretrained_strict: false to load it anyway")
    assert "\n" not in msg
    assert torch.equal(model.encoders[0].patch_embed1.proj.weight, before)  # nothing loaded
    with pytest.raises(ValueError, match=rf"matched 1/{total} encoder keys"):
        equiseg.create_model("equiseg_b0", modalities=MODS, pretrained=path)
    loose = equiseg.create_model("equiseg_b0", modalities=MODS, pretrained=path, pretrained_strict=False)
    r = loose.pretrained_report
    assert (r.matched, r.total, len(r.missing_keys)) == (1, total, total - 1)
    assert f"matched 1/{total} encoder keys (0.6 %)" in r.summary()
    torch.testing.assert_close(loose.encoders[0].patch_embed1.proj.weight, mit_sd["patch_embed1.proj.weight"])


def test_coverage_threshold(mit_sd, tmp_path):
    keys = [k for k in mit_sd if not k.startswith("head.")]
    total = len(keys)
    need = math.ceil(total * MIN_COVERAGE)  # the fewest matched keys that pass
    at = _save(tmp_path, {k: mit_sd[k] for k in keys[:need]}, "at.pth")
    below = _save(tmp_path, {k: mit_sd[k] for k in keys[: need - 1]}, "below.pth")
    assert load_mit_weights(MixVisionTransformer(), at).matched == need
    with pytest.raises(ValueError, match="pretrained_strict"):
        load_mit_weights(MixVisionTransformer(), below)
    assert load_mit_weights(MixVisionTransformer(), below, strict=False).coverage < MIN_COVERAGE


def test_unexpected_keys_listed(mit_sd, tmp_path):
    sd = {**mit_sd, **{f"extra.{i}": torch.zeros(1) for i in range(5)}}
    r = load_mit_weights(MixVisionTransformer(), _save(tmp_path, sd))
    assert r.unexpected_keys == [f"extra.{i}" for i in range(5)]
    assert "5 unexpected (extra.0, extra.1, extra.2, ...)" in r.summary()


def test_full_model_report(tmp_path):
    a = equiseg.create_model("equiseg_b0", num_classes=5, modalities=MODS, **TINY)
    torch.save(a.state_dict(), tmp_path / "model.pth")
    b = equiseg.create_model(
        "equiseg_b0", num_classes=5, modalities=MODS, pretrained=tmp_path / "model.pth", **TINY
    )
    r = b.pretrained_report
    n = len(a.state_dict())
    assert r.kind == "full" and r.matched == r.total == n
    assert r.summary().startswith(
        f"full weights {tmp_path / 'model.pth'}: matched {n}/{n} model keys (100.0 %)"
    )


def test_experiment_config_pretrained_strict(mit_sd, tmp_path):
    path = _save(tmp_path, {"patch_embed1.proj.weight": mit_sd["patch_embed1.proj.weight"]})
    assert load_experiment({}).pretrained_strict is True
    cfg = load_experiment(
        {"model": {"name": "equiseg_b0", "pretrained": str(path)}}, ["model.pretrained_strict=false"]
    )
    assert cfg.pretrained_strict is False
    mcfg = cfg.model_config(25)  # pretrained_strict is not a ModelConfig override
    assert build_model(mcfg, cfg.pretrained, cfg.pretrained_strict).pretrained_report.matched == 1
    with pytest.raises(ValueError, match="matched 1/"):
        build_model(mcfg, cfg.pretrained)
    with pytest.raises(ValueError, match=r"model\.pretrained_strict: expected true/false, got 'maybe'"):
        load_experiment({"model": {"name": "equiseg_b0", "pretrained_strict": "maybe"}})
