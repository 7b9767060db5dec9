"""MAGIC and MAGIC++ (docs/design.md §8.6): the selection picks the modalities the papers define (per sample), the
losses vanish where they must, MIM reduces to MAM where it should, and both architectures meet the
common interface (odd sizes, ``None`` inputs, a gradient in every parameter, ``encode``, the registry)."""

from __future__ import annotations

import pytest
import torch

import equiseg
from equiseg.models.magic import MAGIC, MAGICPlusPlus
from equiseg.models.modules.magic_aggregation import MAM, MIM
from equiseg.models.modules.magic_selection import (
    ASM,
    MASM,
    consistency_loss,
    gather_modalities,
    selective_labels,
)

TINY = dict(embed_dims=(8, 16, 40, 64), depths=(1, 1, 1, 1), decoder_dim=16, drop_path_rate=0.0)
MODS = ["rgb", "depth", "event", "lidar"]
K = 5


def _model(name: str, n: int = 4, **kw) -> MAGIC:
    torch.manual_seed(0)
    return equiseg.create_model(name, num_classes=K, modalities=MODS[:n], **{**TINY, **kw})


def _inputs(n: int, b: int = 2, h: int = 65, w: int = 97, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, 3, h, w, generator=g) for _ in range(n)]


def _labels(b: int = 2, h: int = 65, w: int = 97, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, K, (b, h, w), generator=g)
    y[:, :3] = 255  # some ignored pixels
    return y


def _noisy_copies(sigmas: torch.Tensor, C: int = 6, h: int = 8, w: int = 8, seed: int = 0):
    """Per sample b, modality m = target_b + sigmas[m, b]·noise: cosine to the target falls with sigma."""
    P, B = sigmas.shape
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(B, C, h, w, generator=g)
    noise = torch.randn(P, B, C, h, w, generator=g)
    return target + sigmas[..., None, None, None] * noise, target


# --- selection --------------------------------------------------------------------------------------
@pytest.mark.parametrize("selector", [ASM(1), MASM(1)])
def test_selection_picks_most_robust_and_most_fragile_per_sample(selector):
    # sample 0: modality 2 is the cleanest, modality 0 the noisiest; sample 1: 1 cleanest, 3 noisiest
    sigmas = torch.tensor([[3.0, 0.8], [1.0, 0.05], [0.05, 1.5], [0.5, 4.0]])  # P×B
    feats, target = _noisy_copies(sigmas)
    (sel,) = selector([feats], [target])
    assert sel.order.shape == (4, 2)
    assert sel.robust[0].tolist() == [2, 1]  # most similar to the aggregate = most robust
    assert sel.fragile[-1].tolist() == [0, 3]  # least similar = most fragile
    assert sel.selected.tolist() == [[2, 1], [0, 3]]
    assert sorted(sel.rest[:, 0].tolist()) == [1, 3] and sorted(sel.rest[:, 1].tolist()) == [0, 2]
    # the full ranking follows the noise level of each sample
    assert torch.equal(sel.order, sigmas.argsort(dim=0))


def test_selection_edge_counts_and_k():
    sigmas = torch.tensor([[0.1, 2.0], [2.0, 0.1]])  # two modalities: both selected, nothing left
    feats, target = _noisy_copies(sigmas)
    (sel,) = ASM(1)([feats], [target])
    assert sel.selected.tolist() == [[0, 1], [1, 0]] and sel.rest.shape == (0, 2)
    (one,) = ASM(1)([feats[:1]], [target])  # one modality: it is both the robust and the fragile one
    assert one.selected.tolist() == [[0, 0]] and one.rest.shape == (0, 2)
    sig5 = torch.tensor([[0.1], [0.4], [0.9], [1.6], [2.5]])
    feats5, t5 = _noisy_copies(sig5)
    (two,) = ASM(2)([feats5], [t5])  # k = 2: two robust, two fragile, one left
    assert two.selected[:, 0].tolist() == [0, 1, 3, 4] and two.rest[:, 0].tolist() == [2]
    with pytest.raises(ValueError, match="num_selected"):
        ASM(0)


def test_selection_per_stage_and_shared_scope():
    s1 = torch.tensor([[0.1], [1.0], [3.0]])  # stage 1: modality 0 robust
    s2 = torch.tensor([[2.0], [1.0], [0.1]])  # stage 2: modality 2 robust
    f1, t1 = _noisy_copies(s1, seed=1)
    f2, t2 = _noisy_copies(s2, seed=2)
    per_stage = ASM(1)([f1, f2], [t1, t2])
    assert per_stage[0].robust.item() == 0 and per_stage[1].robust.item() == 2
    shared = ASM(1)([f1, f2], [t1, t2], scope="shared")
    assert torch.equal(shared[0].order, shared[1].order)


def test_masm_ranks_by_structure_at_several_scales():
    """A checkerboard perturbation vanishes when pooled, a constant offset does not: over the full map
    the offset copy is closer to the target, MASM's pooled grids reverse that."""
    g = torch.Generator().manual_seed(0)
    C, h, w = 6, 8, 8
    target = torch.randn(1, C, h, w, generator=g)
    checker = ((torch.arange(h)[:, None] + torch.arange(w)[None]) % 2 * 2 - 1).float()  # ±1, zero-mean
    offset = torch.randn(1, C, 1, 1, generator=g)
    offset = offset / offset.pow(2).mean().sqrt()
    feats = torch.stack([target + 1.0 * checker, target + 0.5 * offset])  # 2×1×C×h×w
    assert ASM(1)([feats], [target])[0].robust.item() == 1
    assert MASM(1, grids=(1, 2, 4))([feats], [target])[0].robust.item() == 0
    assert torch.allclose(MASM(1, grids=()).similarity(feats, target), ASM(1).similarity(feats, target))


def test_gather_modalities_is_per_sample():
    feats = torch.arange(3 * 2, dtype=torch.float32).view(3, 2, 1, 1, 1).expand(3, 2, 2, 2, 2)
    picked = gather_modalities(feats, torch.tensor([[2, 0], [1, 1]]))
    assert picked.shape == (2, 2, 2, 2, 2)
    assert picked[:, :, 0, 0, 0].tolist() == [[4.0, 1.0], [2.0, 3.0]]  # value = 2·modality + sample


# --- losses -----------------------------------------------------------------------------------------
def test_consistency_loss_zero_for_identical_and_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    salient = torch.randn(2, 8, 6, 7, generator=g)
    labels = torch.randint(0, K, (2, 12, 14), generator=g)
    same = torch.randn(1, 2, 8, 6, 7, generator=g).expand(3, -1, -1, -1, -1)
    assert consistency_loss(same, salient, labels, K).abs().item() < 1e-6
    differ = torch.randn(3, 2, 8, 6, 7, generator=g)
    assert consistency_loss(differ, salient, labels, K).item() > 1e-3
    # fewer than two remaining modalities, or no labelled pixel: exactly 0, never NaN
    assert consistency_loss(differ[:1], salient, labels, K).item() == 0.0
    ignored = torch.full_like(labels, 255)
    out = consistency_loss(differ, salient, ignored, K)
    assert torch.isfinite(out) and out.item() == 0.0


def test_consistency_loss_is_the_papers_js_for_two():
    torch.manual_seed(0)
    rest, salient = torch.randn(2, 1, 4, 3, 3), torch.randn(1, 4, 3, 3)
    labels = torch.tensor([[[0, 0, 1], [1, 2, 2], [0, 1, 2]]])
    tau = 0.5
    protos = []
    for f in (rest[0, 0], rest[1, 0], salient[0]):
        protos.append(torch.stack([f[:, labels[0] == c].mean(1) for c in range(3)]))
    c1, c2 = (torch.softmax(torch.cosine_similarity(p, protos[2], dim=-1) / tau, -1) for p in protos[:2])
    m = (c1 + c2) / 2
    expected = (c1 * (c1 / m).log() + c2 * (c2 / m).log()).sum()
    assert torch.allclose(consistency_loss(rest, salient, labels, 3, temperature=tau), expected, atol=1e-6)


def test_selective_labels_keeps_only_agreeing_pixels():
    labels = torch.tensor([[[0, 1], [2, 255]]])
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 0, 0, 0] = logits[0, 2, 0, 1] = logits[0, 2, 1, 0] = logits[0, 1, 1, 1] = 5.0
    assert selective_labels(logits, labels).tolist() == [[[0, 255], [2, 255]]]


def test_identical_modalities_give_zero_consistency_loss():
    model = _model("magic_b0")
    x = _inputs(1)[0]
    out = model.compute_loss([x, x, x, x], _labels())
    assert out.terms["loss_consistency"].abs().item() < 1e-5
    assert out.terms["loss_select"].item() > 0


def test_total_loss_is_weighted_sum_of_unweighted_terms():
    model = _model("magicpp_b0", magic_lambda_select=2.0, magic_beta_consistency=3.0)
    out = model.compute_loss(_inputs(4), _labels())
    assert set(out.terms) == {"loss_select", "loss_consistency"}
    expected = out.loss_ce + 2.0 * out.terms["loss_select"] + 3.0 * out.terms["loss_consistency"]
    assert torch.allclose(out.loss, expected)
    assert out.terms["loss_consistency"].item() > 0 and out.loss_sgm.item() == 0


# --- aggregation ------------------------------------------------------------------------------------
def test_mim_reduces_to_mam_for_one_modality_and_fuses_convexly():
    torch.manual_seed(0)
    mim, mam = MIM(8), MAM(8)
    mam.load_state_dict({k: v for k, v in mim.state_dict().items() if k in mam.state_dict()})
    mim.eval(), mam.eval()
    one = torch.randn(1, 2, 8, 5, 6)
    assert torch.allclose(mim(one), mam(one), atol=1e-6)
    y = torch.randn(3, 2, 8, 5, 6)
    wts = mim.guidance(y)
    assert wts.shape == y.shape and torch.allclose(wts.sum(0), torch.ones(2, 8, 5, 6))
    fused = mim.fuse(y)
    assert (fused <= y.amax(0) + 1e-6).all() and (fused >= y.amin(0) - 1e-6).all()
    assert torch.allclose(mam.fuse(y), y.mean(0))


# --- the architectures ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["magic_b0", "magicpp_b0"])
def test_forward_odd_size_none_and_encode(name):
    model = _model(name).eval()
    xs = _inputs(4)
    with torch.no_grad():
        assert model(xs).shape == (2, K, 65, 97)
        part = model([xs[0], None, None, xs[3]])
        assert part.shape == (2, K, 65, 97) and torch.isfinite(part).all()
        alone = model([None, None, xs[2], None])
        assert alone.shape == (2, K, 65, 97)
        feats = model.encode([xs[0], None, xs[2], xs[3]])
    sizes = [(17, 25), (9, 13), (5, 7), (3, 4)]
    assert [tuple(f.shape) for f in feats] == [
        (3, 2, c, h, w) for c, (h, w) in zip(TINY["embed_dims"], sizes)
    ]
    assert model.has_modality_features
    # the encoded features of a modality do not depend on which others are present (no exchange)
    with torch.no_grad():
        full = model.encode(xs)
    assert torch.allclose(full[3][0], feats[3][0], atol=1e-5)


@pytest.mark.parametrize("name", ["magic_b0", "magicpp_b0"])
def test_every_parameter_gets_a_gradient(name):
    model = _model(name).train()
    out = model.compute_loss(_inputs(4), _labels())
    assert torch.isfinite(out.loss)
    out.loss.backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert dead == []


@pytest.mark.parametrize("name", ["magic_b0", "magicpp_b0"])
def test_none_inputs_in_training(name):
    model = _model(name).train()
    xs = _inputs(4)
    out = model.compute_loss([None, xs[1], None, xs[3]], _labels())  # two present: both selected
    assert torch.isfinite(out.loss) and out.terms["loss_consistency"].item() == 0.0
    out = model.compute_loss([None, None, xs[2], None], _labels())  # one present
    assert torch.isfinite(out.loss)
    out.loss.backward()


def test_inference_uses_the_aggregate_only():
    model = _model("magic_b0").eval()
    xs = _inputs(4, h=64, w=64)
    with torch.no_grad():
        before = model(xs)
        for p in model.aggregate_selected.parameters():
            p.add_(torch.randn_like(p))
        assert torch.equal(model(xs), before)


def test_magicpp_shares_magic_and_replaces_its_modules():
    pp = _model("magicpp_b0")
    assert isinstance(pp, MAGICPlusPlus) and isinstance(pp, MAGIC)
    assert all(isinstance(m, MIM) for m in [*pp.aggregate, *pp.aggregate_selected])
    assert isinstance(pp.selector, MASM)
    plain = _model("magic_b0")
    assert all(type(m) is MAM for m in plain.aggregate) and type(plain.selector) is ASM


@pytest.mark.parametrize("name", ["magic_b0", "magicpp_b0"])
def test_create_model_defaults(name):
    model = equiseg.create_model(name, num_classes=5, modalities=["rgb", "depth", "event"])
    cfg = model.cfg
    assert cfg.arch == name.split("_")[0] and cfg.decoder_dim == 256 and cfg.embed_dims == (32, 64, 160, 256)
    assert model.encoders == [model.backbone]
    for size in ("b1", "b2", "b5"):
        assert equiseg.models.model_config(f"{name[:-3]}_{size}").decoder_dim == 256
    model.eval()
    with torch.no_grad():
        assert model(_inputs(3, b=1, h=64, w=64)).shape == (1, 5, 64, 64)


def test_config_errors():
    with pytest.raises(ValueError, match="share_encoder"):
        _model("magic_b0", share_encoder=False)
    with pytest.raises(ValueError, match="magic_rank_scope"):
        _model("magic_b0", magic_rank_scope="global")
    with pytest.raises(ValueError, match="magic_temperature"):
        _model("magicpp_b0", magic_temperature=0.0)


def test_imagenet_mit_weights_load_into_the_shared_backbone(tmp_path):
    from equiseg.models.backbones import MixVisionTransformer
    from equiseg.models.weights import load_mit_weights

    torch.manual_seed(1)
    mit = MixVisionTransformer(embed_dims=TINY["embed_dims"], depths=TINY["depths"])
    torch.save(mit.state_dict(), tmp_path / "mit.pth")
    model = _model("magicpp_b0")
    report = load_mit_weights(model, tmp_path / "mit.pth")
    assert report.coverage == 1.0 and not report.missing_keys
    assert torch.equal(model.backbone.block4[0].attn.q.weight, mit.block4[0].attn.q.weight)
