"""CMNeXt (docs/design.md §8.3): parity with the DELIVER release, the reshape defect, None inputs, weights."""

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
MODS = ("rgb", "depth", "event", "lidar")


def tiny(n: int, **kw) -> torch.nn.Module:
    return create_model("cmnext_b0", num_classes=5, modalities=MODS[:n], **{**TINY, **kw})


def inputs(n: int, b: int = 2, h: int = 65, w: int = 97, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, 3, h, w, generator=g) for _ in range(n)]


def from_fixture(fx, compat: bool):
    c = fx.config
    return create_model(
        "cmnext_b0",
        num_classes=c["num_classes"],
        modalities=c["modalities"],
        embed_dims=tuple(c["embed_dims"]),
        depths=tuple(c["depths"]),
        decoder_dim=c["decoder_dim"],
        reference_compat=compat,
    )


def loaded(name: str, compat: bool, tmp_path):
    fx = load_fixture(name)
    model = from_fixture(fx, compat)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the compat warning for compat=False is tested on its own
        load_reference_checkpoint(model, fx.write_release(tmp_path / f"{name}.safetensors"))
    return fx, model.eval()


# --- parity with the release -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["cmnext_3mod", "cmnext_2mod"])
def test_release_parity_with_reference_compat(name, tmp_path):
    fx, model = loaded(name, True, tmp_path)
    assert fx.metadata["reference_repo"] == "jamycheung/DELIVER"
    with torch.no_grad():
        out = model(fx.inputs)
    assert out.shape == fx.logits.shape
    assert rel_err(out, fx.logits) < 1e-4


def test_default_equals_compat_with_one_auxiliary(tmp_path):
    fx, default = loaded("cmnext_2mod", False, tmp_path)
    _, compat = loaded("cmnext_2mod", True, tmp_path)
    with torch.no_grad():
        a, b = default(fx.inputs), compat(fx.inputs)
    assert torch.equal(a, b)
    assert rel_err(a, fx.logits) < 1e-4


def test_default_differs_exactly_where_the_reshape_defect_is(tmp_path):
    """Two auxiliaries: the defect is the auxiliary stream update after stages 1-3, so stage 1 (RGB
    branch and fused map) agrees and everything from stage 2 on differs."""
    fx, default = loaded("cmnext_3mod", False, tmp_path)
    _, compat = loaded("cmnext_3mod", True, tmp_path)
    with torch.no_grad():
        assert rel_err(default(fx.inputs), fx.logits) > 1e-2
        fd, fc = default.encode(fx.inputs), compat.encode(fx.inputs)
    assert torch.allclose(fd[0][0], fc[0][0])  # stage-1 rectified RGB: before any stream update
    assert not torch.allclose(fd[0][1:], fc[0][1:])  # the auxiliary streams carried on after stage 1
    assert rel_err(fd[1][0], fc[1][0]) > 1e-3  # stage 2 sees the scrambled streams


def test_compat_stream_update_is_the_release_reshape():
    model = tiny(3, reference_compat=True)
    z = torch.randn(2, 2, 8, 3, 5)  # P×B×C×h×w
    B, C, h, w = z.shape[1:]
    expected = torch.stack([x.reshape(B, h, w, -1).permute(0, 3, 1, 2) for x in z])
    assert torch.equal(model._stream_carry(z), expected)
    assert torch.equal(tiny(3)._stream_carry(z), z)


def test_warns_when_release_loaded_without_compat(tmp_path):
    fx = load_fixture("cmnext_3mod")
    with pytest.warns(UserWarning, match="reference_compat"):
        load_reference_checkpoint(from_fixture(fx, False), fx.write_release(tmp_path / "r.safetensors"))


def test_unmapped_release_key_is_named(tmp_path):
    fx = load_fixture("cmnext_3mod")
    path = fx.write_release(tmp_path / "r.safetensors", {"backbone.bogus_layer.weight": torch.zeros(3)})
    with pytest.raises(ValueError, match="backbone.bogus_layer.weight"):
        load_reference_checkpoint(from_fixture(fx, True), path)


def test_score_net_of_a_modality_the_model_lacks_is_named(tmp_path):
    fx = load_fixture("cmnext_3mod")
    extra = {"backbone.extra_score_predictor.0.score_nets.5.0.weight": torch.zeros(8, 1, 3, 3)}
    path = fx.write_release(tmp_path / "r.safetensors", extra)
    with pytest.raises(ValueError, match="score_nets.5.0.weight"):
        load_reference_checkpoint(from_fixture(fx, True), path)


def test_release_for_another_modality_count_is_refused(tmp_path):
    fx = load_fixture("cmnext_3mod")  # two auxiliaries (hub, two LayerNorms) into a one-auxiliary model
    model = create_model("cmnext_b0", num_classes=4, modalities=["rgb", "depth"], embed_dims=(8, 8, 10, 16))
    with pytest.raises(ValueError, match="extra_score_predictor|ln_1"):
        load_reference_checkpoint(model, fx.write_release(tmp_path / "r.safetensors"))


# --- the model ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_shapes_at_an_odd_size(n):
    model = tiny(n).eval()
    x = inputs(n)
    with torch.no_grad():
        out = model(x)
        feats = model.encode(x)
    assert out.shape == (2, 5, 65, 97)
    assert len(feats) == 4
    for s, (f, c) in enumerate(zip(feats, TINY["embed_dims"])):
        stride = 4 * 2**s
        assert f.shape == (n, 2, c, math.ceil(65 / stride), math.ceil(97 / stride))


def test_variants_register_all_sizes_with_peer_head_ohem_and_deliver_eps():
    for size, dim in zip(("b0", "b1", "b2", "b3", "b4", "b5"), (256, 256, 512, 512, 512, 512)):
        cfg = model_config(f"cmnext_{size}")
        assert (cfg.arch, cfg.decoder_dim, cfg.loss, cfg.ln_eps) == ("cmnext", dim, "ohem", 1e-5)
    assert model_config("cmnext_b3").depths == (3, 4, 18, 3)


def test_primary_is_the_first_modality_and_one_modality_is_a_segformer():
    model = create_model("cmnext_b0", num_classes=3, modalities=["depth", "rgb"], **TINY)
    assert model.num_aux == 1 and model.aux_hubs is None  # hub only with >= 2 auxiliaries
    single = tiny(1)
    assert not hasattr(single, "frms") and single.num_aux == 0


def test_aux_blocks_follow_depths_ratios_and_drop_path():
    model = tiny(3, depths=(1, 2, 1, 1), drop_path_rate=0.1)
    ratios = [
        blk.mlp.fc1.out_channels / blk.mlp.fc1.in_channels for s in range(4) for blk in model.aux_blocks[s]
    ]
    assert ratios == [8, 8, 8, 4, 4]
    rgb = [blk.drop_path.p for s in range(4) for blk in getattr(model.backbone, f"block{s + 1}")]
    aux = [blk.drop_path.p for s in range(4) for blk in model.aux_blocks[s]]
    assert aux == pytest.approx(rgb) and aux[-1] == pytest.approx(0.1)


# --- None inputs -------------------------------------------------------------------------------------
def test_absent_rgb_is_zeros():
    model = tiny(3).eval()
    x = inputs(3)
    with torch.no_grad():
        a = model([None, x[1], x[2]])
        b = model([torch.zeros_like(x[0]), x[1], x[2]])
        feats = model.encode([None, x[1], x[2]])
    assert torch.allclose(a, b, atol=1e-6)
    assert feats[0].shape[0] == 2  # the present modalities only


def test_no_auxiliary_present_is_zero_auxiliaries():
    model = tiny(3).eval()
    x = inputs(3)
    with torch.no_grad():
        a = model([x[0], None, None])
        b = model([x[0], torch.zeros_like(x[1]), torch.zeros_like(x[2])])
        feats = model.encode([x[0], None, None])
    assert torch.allclose(a, b, atol=1e-6)
    assert feats[-1].shape[0] == 1


def test_absent_auxiliary_is_left_out_of_the_hub():
    model = tiny(4).eval()
    x = inputs(4)
    with torch.no_grad():
        skipped = model([x[0], x[1], None, x[3]])
        zero = model([x[0], x[1], torch.zeros_like(x[2]), x[3]])
        feats = model.encode([x[0], x[1], None, x[3]])
    assert torch.isfinite(skipped).all()
    assert not torch.allclose(skipped, zero, atol=1e-4)  # left out, not zero-filled
    assert feats[2].shape[0] == 3


def test_hub_over_present_auxiliaries_uses_their_own_score_nets():
    """With event (auxiliary 1 of 3) absent its score net plays no part: re-drawing it changes nothing,
    while it changes the output when event is present."""
    model = tiny(4).eval()
    x = inputs(4)
    partial = [x[0], x[1], None, x[3]]
    with torch.no_grad():
        partial_before, full_before = model(partial), model(x)
        for s, hub in enumerate(model.aux_hubs):
            hub.score_dw.weight.view(3, TINY["embed_dims"][s], 1, 3, 3)[1].normal_()
            hub.score_pw.weight[1].normal_()
        partial_after, full_after = model(partial), model(x)
    assert torch.allclose(partial_before, partial_after, atol=1e-6)
    assert not torch.allclose(full_before, full_after, atol=1e-4)


# --- training and weights ---------------------------------------------------------------------------
def test_every_parameter_gets_a_gradient():
    model = tiny(3).train()
    x = inputs(3, h=64, w=64)
    labels = torch.randint(0, 5, (2, 64, 64))
    labels[:, :4] = 255
    out = model.compute_loss(x, labels)
    assert torch.isfinite(out.loss) and out.logits.shape == (2, 5, 64, 64)
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_init_from_mit_fills_the_auxiliary_patch_embeddings(tmp_path):
    mit = MixVisionTransformer(embed_dims=TINY["embed_dims"], depths=TINY["depths"])
    with torch.no_grad():
        for p in mit.parameters():
            p.normal_()
    sd = dict(mit.state_dict())
    sd["head.weight"] = torch.zeros(10, 64)  # the ImageNet classifier of an original mit_b*.pth
    path = tmp_path / "mit_tiny.pth"
    torch.save(sd, path)
    model = tiny(3)
    load_mit_weights(model, path)
    for s in range(4):
        emb = model.aux_embeds[s]
        assert torch.equal(emb.proj.weight, sd[f"patch_embed{s + 1}.proj.weight"])
        assert torch.equal(emb.proj.bias, sd[f"patch_embed{s + 1}.proj.bias"])
        for norm in emb.norms:
            assert torch.equal(norm.weight, sd[f"patch_embed{s + 1}.norm.weight"])
            assert torch.equal(norm.bias, sd[f"patch_embed{s + 1}.norm.bias"])
    assert torch.equal(model.backbone.block4[0].attn.kv.weight, sd["block4.0.attn.kv.weight"])
