"""Pretrained weight formats (docs/design.md §1.3): HF safetensors <-> original mit_b*.pth parity with
transformers' own SegFormer encoder, strict loading and clear errors."""

from __future__ import annotations

import pytest
import torch

import equiseg
from equiseg.models import MixVisionTransformer, convert_hf_to_original, load_mit_weights, read_state_dict

transformers = pytest.importorskip("transformers")  # in the [test] extras, so CI runs these

VARIANTS = {
    "b0": dict(hidden_sizes=[32, 64, 160, 256], depths=[2, 2, 2, 2]),
    "b2": dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 4, 6, 3]),
}


def _hf_encoder(variant: str, tmp_path):
    from transformers import SegformerConfig, SegformerModel

    v = VARIANTS[variant]
    cfg = SegformerConfig(
        hidden_sizes=v["hidden_sizes"],
        depths=v["depths"],
        num_attention_heads=[1, 2, 5, 8],
        decoder_hidden_size=256,
        drop_path_rate=0.0,
    )
    torch.manual_seed(0)
    model = SegformerModel(cfg).eval()
    with torch.no_grad():  # random, non-trivial norms and biases so every tensor matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(tmp_path / f"hf_{variant}")
    return model, tmp_path / f"hf_{variant}" / "model.safetensors"


def _our_mit(variant: str) -> MixVisionTransformer:
    v = VARIANTS[variant]
    # HF uses LayerNorm eps 1e-5 everywhere; the original release 1e-6 in blocks and stage norms
    return MixVisionTransformer(
        embed_dims=v["hidden_sizes"], depths=v["depths"], drop_path_rate=0.0, ln_eps=1e-5
    ).eval()


@pytest.mark.parametrize("variant", ["b0", "b2"])
def test_hf_parity_through_original_layout(variant, tmp_path):
    hf, st_path = _hf_encoder(variant, tmp_path)
    # convert the HF safetensors to the original layout and save it as mit_bX.pth would be
    converted, dropped = convert_hf_to_original(read_state_dict(st_path))
    assert not dropped
    pth = tmp_path / f"mit_{variant}.pth"
    torch.save(converted, pth)
    ours = _our_mit(variant)
    res = load_mit_weights(ours, pth)
    assert res.missing_keys == [] and res.unexpected_keys == []
    x = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        ref = hf(pixel_values=x, output_hidden_states=True).hidden_states
        out = ours.forward_features(x)
    assert len(ref) == 4
    for a, b in zip(out, ref):
        assert a.shape == b.shape
        rel = (a - b).norm() / b.norm()
        assert rel < 1e-4, rel
    # the safetensors file loads directly too, with identical tensors
    direct = _our_mit(variant)
    res = load_mit_weights(direct, st_path)
    assert res.missing_keys == [] and res.unexpected_keys == []
    for (k, a), b in zip(direct.state_dict().items(), ours.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)


def test_pretrained_initialises_every_branch(tmp_path):
    _, st_path = _hf_encoder("b0", tmp_path)
    for share in (True, False):
        model = equiseg.create_model(
            "equiseg_b0", modalities=["rgb", "depth", "event"], pretrained=st_path, share_encoder=share
        )
        ref = read_state_dict(st_path)["encoder.patch_embeddings.0.proj.weight"]
        for enc in model.encoders:
            torch.testing.assert_close(enc.patch_embed1.proj.weight, ref)
        assert len(model.encoders) == (1 if share else 3)


def test_original_layout_drops_imagenet_head_and_reports_keys(tmp_path):
    mit = MixVisionTransformer()
    sd = dict(mit.state_dict())
    sd["head.weight"] = torch.zeros(1000, 256)
    sd["head.bias"] = torch.zeros(1000)
    del sd["norm4.weight"]
    sd["extra.thing"] = torch.zeros(3)
    torch.save({"state_dict": sd}, tmp_path / "mit_b0.pth")
    res = load_mit_weights(MixVisionTransformer(), tmp_path / "mit_b0.pth")
    assert res.missing_keys == ["norm4.weight"]
    assert res.unexpected_keys == ["extra.thing"]
    assert sorted(res.ignored_keys) == ["head.bias", "head.weight"]


def test_shape_mismatch_and_unknown_format_errors(tmp_path):
    torch.save(MixVisionTransformer().state_dict(), tmp_path / "mit_b0.pth")
    b1 = equiseg.create_model("equiseg_b1", modalities=["rgb", "depth"])
    with pytest.raises(ValueError, match=r"mit_b0.pth: shape mismatch for 'patch_embed1.proj.weight'"):
        load_mit_weights(b1, tmp_path / "mit_b0.pth")
    torch.save({"foo": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="unknown weights format"):
        load_mit_weights(b1, tmp_path / "other.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth: not a readable PyTorch weights file"):
        load_mit_weights(b1, tmp_path / "junk.pth")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_mit_weights(b1, tmp_path / "missing.pth")


def test_full_model_state_round_trip_and_architecture_mismatch(tmp_path):
    from model_utils import TINY

    kw = dict(TINY)
    a = equiseg.create_model("equiseg_b0", num_classes=5, modalities=["rgb", "depth"], **kw).eval()
    torch.save(a.state_dict(), tmp_path / "model.pth")
    b = equiseg.create_model(
        "equiseg_b0", num_classes=5, modalities=["rgb", "depth"], pretrained=tmp_path / "model.pth", **kw
    ).eval()
    x = [torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64)]
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))
    with pytest.raises(ValueError, match="checkpoint is for another EQUISeg architecture"):
        equiseg.create_model(
            "equiseg_b0",
            num_classes=5,
            modalities=["rgb", "depth"],
            pretrained=tmp_path / "model.pth",
            hub="mean",
            **kw,
        )
