"""CMX (docs/design.md §8.4): parity with the RGBX release, two modalities, None inputs, weights."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from reference_fixtures import load_fixture, rel_err

from equiseg.models import load_reference_checkpoint
from equiseg.models.backbones import MixVisionTransformer
from equiseg.models.registry import create_model, model_config
from equiseg.models.weights import load_mit_weights

TINY = dict(embed_dims=(8, 16, 40, 64), depths=(1, 1, 1, 1), decoder_dim=32, drop_path_rate=0.0)


def tiny(**kw) -> torch.nn.Module:
    return create_model("cmx_b0", num_classes=5, modalities=("rgb", "depth"), **{**TINY, **kw})


def inputs(b: int = 2, h: int = 65, w: int = 97, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, 3, h, w, generator=g) for _ in range(2)]


def from_fixture(fx, compat: bool):
    c = fx.config
    return create_model(
        "cmx_b0",
        num_classes=c["num_classes"],
        modalities=c["modalities"],
        embed_dims=tuple(c["embed_dims"]),
        depths=tuple(c["depths"]),
        decoder_dim=c["decoder_dim"],
        reference_compat=compat,
    )


# --- parity with the release -------------------------------------------------------------------------
@pytest.mark.parametrize("compat", [True, False])
def test_release_parity(compat, tmp_path):
    """No known CMX defect changes outputs: both modes reproduce the release's logits."""
    fx = load_fixture("cmx")
    assert fx.metadata["reference_repo"] == "huaaaliu/RGBX_Semantic_Segmentation"
    assert "decode_head.linear_fuse.0.bias" in fx.state_dict  # the head's fuse-conv bias, folded on load
    model = from_fixture(fx, compat)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_reference_checkpoint(model, fx.write_release(tmp_path / "cmx.safetensors"))
    model.eval()
    assert model.head.linear_fuse[1].eps == 1e-3  # RGBX's decoder BatchNorm eps
    with torch.no_grad():
        out = model(fx.inputs)
    assert rel_err(out, fx.logits) < 1e-4


def test_unmapped_release_key_is_named(tmp_path):
    fx = load_fixture("cmx")
    path = fx.write_release(tmp_path / "r.safetensors", {"backbone.extra_bogus.weight": torch.zeros(3)})
    with pytest.raises(ValueError, match="backbone.extra_bogus.weight"):
        load_reference_checkpoint(from_fixture(fx, True), path)


def test_fuse_bias_fold_is_exact_in_training_mode_too():
    """``BN(Wx + b)`` with running mean μ equals ``BN(Wx)`` with running mean μ - b, also while training
    (output and running-statistics update)."""
    torch.manual_seed(0)
    conv, bn = torch.nn.Conv2d(6, 4, 1), torch.nn.BatchNorm2d(4, eps=1e-3)
    bn.running_mean.normal_()
    folded = torch.nn.BatchNorm2d(4, eps=1e-3)
    folded.load_state_dict(bn.state_dict())
    folded.running_mean -= conv.bias.detach()
    x = torch.randn(2, 6, 5, 7)
    y_ref = bn.train()(conv(x))
    y_fold = folded.train()(torch.nn.functional.conv2d(x, conv.weight))
    assert torch.allclose(y_ref, y_fold, atol=1e-5)
    assert torch.allclose(bn.running_mean - conv.bias.detach(), folded.running_mean, atol=1e-6)
    assert torch.allclose(
        bn.eval()(conv(x)), folded.eval()(torch.nn.functional.conv2d(x, conv.weight)), atol=1e-5
    )


# --- the model ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("mods", [("rgb",), ("rgb", "depth", "event")])
def test_exactly_two_modalities(mods):
    with pytest.raises(ValueError, match="exactly two modalities"):
        create_model("cmx_b0", num_classes=5, modalities=mods, **TINY)


def test_shapes_at_an_odd_size():
    model = tiny().eval()
    x = inputs()
    with torch.no_grad():
        out = model(x)
        feats = model.encode(x)
    assert out.shape == (2, 5, 65, 97)
    for s, (f, c) in enumerate(zip(feats, TINY["embed_dims"])):
        stride = 4 * 2**s
        assert f.shape == (2, 2, c, math.ceil(65 / stride), math.ceil(97 / stride))


def test_two_separate_mits():
    model = tiny()
    assert model.encoders[0] is not model.encoders[1]
    assert (
        model.encoders[0].patch_embed1.proj.weight.data_ptr()
        != model.encoders[1].patch_embed1.proj.weight.data_ptr()
    )


def test_variants_register_all_sizes_with_the_peer_head_and_ce():
    for size, dim in zip(("b0", "b1", "b2", "b3", "b4", "b5"), (256, 256, 512, 512, 512, 512)):
        cfg = model_config(f"cmx_{size}", modalities=("rgb", "depth"))
        assert (cfg.arch, cfg.decoder_dim, cfg.loss, cfg.ln_eps) == ("cmx", dim, "ce", 1e-6)


def test_reference_compat_reproduces_the_stage2_drop_path_rates():
    kw = dict(depths=(1, 2, 1, 1), drop_path_rate=0.1)
    dpr = torch.linspace(0, 0.1, 5).tolist()
    compat, default = tiny(reference_compat=True, **kw), tiny(**kw)
    assert [b.drop_path.p for b in compat.backbones[0].block2] == pytest.approx([dpr[1], dpr[1]])
    assert [b.drop_path.p for b in compat.backbones[1].block2] == pytest.approx([dpr[2], dpr[2]])
    assert [b.drop_path.p for b in default.backbones[1].block2] == pytest.approx([dpr[1], dpr[2]])
    assert compat.backbones[0].block3[0].drop_path.p == pytest.approx(dpr[3])


# --- None inputs -------------------------------------------------------------------------------------
@pytest.mark.parametrize("absent", [0, 1])
def test_absent_modality_is_zeros(absent):
    model = tiny().eval()
    x = inputs()
    with_none = list(x)
    with_none[absent] = None
    zeros = list(x)
    zeros[absent] = torch.zeros_like(x[absent])
    with torch.no_grad():
        assert torch.allclose(model(with_none), model(zeros), atol=1e-6)
        feats = model.encode(with_none)
        full = model.encode(zeros)
    present = 1 - absent
    assert feats[0].shape[0] == 1
    assert torch.allclose(feats[3][0], full[3][present], atol=1e-6)


# --- training and weights ---------------------------------------------------------------------------
def test_every_parameter_gets_a_gradient():
    model = tiny().train()
    x = inputs(h=64, w=64)
    labels = torch.randint(0, 5, (2, 64, 64))
    out = model.compute_loss(x, labels)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_imagenet_weights_initialise_both_branches(tmp_path):
    mit = MixVisionTransformer(embed_dims=TINY["embed_dims"], depths=TINY["depths"])
    with torch.no_grad():
        for p in mit.parameters():
            p.normal_()
    path = tmp_path / "mit_tiny.pth"
    torch.save(mit.state_dict(), path)
    model = tiny()
    load_mit_weights(model, path)
    for enc in model.encoders:
        for k, v in mit.state_dict().items():
            assert torch.equal(enc.state_dict()[k], v), k
