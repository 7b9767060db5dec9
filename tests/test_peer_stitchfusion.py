"""StitchFusion (equiseg/models/stitchfusion.py) against the public reference and its own claims.

Parity fixtures (tests/fixtures/reference/make_stitchfusion.py, LiBingyu01/StitchFusion run in eval
mode on 3 modalities): ``stitchfusion_model`` -- the repository's model file (every_one adapters in every
stage, FeatureCross); ``stitchfusion_tips`` -- the released DeLiVER layout (adapters in stages 3-4, sum
fusion), every_two and shared adapters. ``reference_compat=True`` must reproduce them; the default
model must differ, and be invariant to reordering the modalities (with their weights) where the release
is not.
"""

from __future__ import annotations

import copy
import json
import re
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

import equiseg
from equiseg.layers import DropPath
from equiseg.models import load_reference_checkpoint, model_config
from equiseg.models.backbones import MixVisionTransformer, mit_kwargs
from equiseg.models.modules.adapters import PairAdapters, pair_plan
from equiseg.models.modules.feature_cross import FeatureCross
from equiseg.models.weights import load_pretrained

FIX = Path(__file__).parent / "fixtures" / "reference"
TINY = dict(embed_dims=(8, 16, 40, 64), depths=(1, 1, 1, 1), decoder_dim=16)
MODS = ("rgb", "depth", "event")
# the tips fixture's layouts as model fields
LAYOUTS = {
    "release": dict(stitch_adapter="every_one", stitch_adapter_stages=(False, False, True, True)),
    "every_two": dict(stitch_adapter="every_two"),
    "shared": dict(stitch_adapter="shared"),
}


# --- fixtures -----------------------------------------------------------------------------------------
def _read(name: str) -> tuple[dict[str, torch.Tensor], dict]:
    path = FIX / name
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    return load_file(str(path)), meta


@pytest.fixture(scope="module")
def model_fixture():
    return _read("stitchfusion_model.safetensors")


@pytest.fixture(scope="module")
def tips_fixture():
    return _read("stitchfusion_tips.safetensors")


def _floats(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}


def _case(fixture, variant: str):
    """(release state dict, inputs, reference logits at the input size, config, model fields)."""
    tensors, meta = fixture
    cfg = json.loads(meta["config"])[variant]
    if variant == "model":
        sd = {k[len("model.ref.") :]: v for k, v in tensors.items() if k.startswith("model.ref.")}
        fields = {}
    else:  # the tips variants share their MiT and head weights
        sd = {k[len("tips.ref.") :]: v for k, v in tensors.items() if k.startswith("tips.ref.")}
        sd.update({k[len(variant) + 5 :]: v for k, v in tensors.items() if k.startswith(f"{variant}.ref.")})
        fields = dict(LAYOUTS[variant], stitch_fusion="sum")
    inputs = [tensors[f"input.{i}"].float() for i in range(len(cfg["modalities"]))]
    size = inputs[0].shape[-2:]
    # the reference's own last step: bilinear upsampling of its head's output
    logits = F.interpolate(tensors[f"{variant}.head_logits"], size=size, mode="bilinear", align_corners=False)
    return _floats(sd), inputs, logits, cfg, fields


def _build(cfg: dict, fields: dict, modalities=None, **kw) -> equiseg.models.SegModel:
    torch.manual_seed(0)
    return equiseg.create_model(
        "stitchfusion_b0",
        num_classes=cfg["num_classes"],
        modalities=modalities or cfg["modalities"],
        embed_dims=tuple(cfg["embed_dims"]),
        depths=tuple(cfg["depths"]),
        decoder_dim=cfg["decoder_dim"],
        **fields,
        **kw,
    )


def _loaded(sd, cfg, fields, tmp_path: Path, compat: bool, modalities=None):
    model = _build(cfg, fields, modalities, reference_compat=compat)
    path = tmp_path / "release.pth"
    torch.save(sd, path)
    with warnings.catch_warnings():  # the corrected model warns that the release was trained without it
        warnings.simplefilter("ignore")
        load_reference_checkpoint(model, path)
    return model.eval()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def _permuted(sd: dict[str, torch.Tensor], perm: list[int], mode: str) -> dict[str, torch.Tensor]:
    """The release state dict of the same network with its modalities reordered (new k = old perm[k]):
    per-pair adapter names renumbered, the FeatureCross fusion's column blocks reordered."""
    inv = {old: new for new, old in enumerate(perm)}
    out = {}
    for k, v in sd.items():
        m = re.fullmatch(r"(.*\.adap_t_(?:att|mlp))(\d)(\d)(\..*)", k)
        if m:
            i, j = inv[int(m[2]) - 1], inv[int(m[3]) - 1]
            if mode == "every_one":
                i, j = sorted((i, j))
            k = f"{m[1]}{i + 1}{j + 1}{m[4]}"
        elif re.fullmatch(r"backbone\.feature_cross\.liner_fusion_layers\.\d\.weight", k):
            C = v.shape[0]
            v = v.view(C, len(perm), C)[:, perm].reshape(C, -1)
        out[k] = v
    return out


# --- parity with the reference ---------------------------------------------------------------------------
def test_fixture_metadata(model_fixture, tips_fixture):
    for _, meta in (model_fixture, tips_fixture):
        assert meta["reference_repo"] == "LiBingyu01/StitchFusion"
        assert re.fullmatch(r"[0-9a-f]{40}", meta["reference_commit"]), meta["reference_commit"]


@pytest.mark.parametrize("variant", ["model", "release", "every_two", "shared"])
def test_reference_parity(variant, model_fixture, tips_fixture, tmp_path):
    fixture = model_fixture if variant == "model" else tips_fixture
    sd, inputs, ref, cfg, fields = _case(fixture, variant)
    compat = _loaded(sd, cfg, fields, tmp_path, compat=True)
    with torch.no_grad():
        out = compat(inputs)
    assert out.shape == ref.shape
    assert _rel(out, ref) < 1e-4
    # the corrected model differs (the adapters read the features before the update)
    fixed = _loaded(sd, cfg, fields, tmp_path, compat=False)
    with torch.no_grad():
        assert _rel(fixed(inputs), ref) > 1e-2


@pytest.mark.parametrize(
    ("variant", "perm"), [("model", [2, 0, 1]), ("every_two", [1, 0, 2]), ("shared", [0, 2, 1])]
)
def test_default_is_order_free_compat_is_not(variant, perm, model_fixture, tips_fixture, tmp_path):
    """Reordering the modalities together with their weights leaves the corrected model's output
    unchanged; the release's (alias: adapters read already-updated features) changes."""
    fixture = model_fixture if variant == "model" else tips_fixture
    sd, inputs, ref, cfg, fields = _case(fixture, variant)
    mode = fields.get("stitch_adapter", "every_one")
    sd_p = _permuted(sd, perm, mode)
    x_p = [inputs[i] for i in perm]
    mods_p = [cfg["modalities"][i] for i in perm]
    with torch.no_grad():
        for compat in (False, True):
            a = _loaded(sd, cfg, fields, tmp_path, compat)(inputs)
            b = _loaded(sd_p, cfg, fields, tmp_path, compat, modalities=mods_p)(x_p)
            if compat:
                assert _rel(b, a) > 1e-3, "the release's result should depend on the modality order"
            else:
                assert _rel(b, a) < 1e-5


def test_corrected_model_warns_on_release_weights(model_fixture, tmp_path):
    sd, _, _, cfg, fields = _case(model_fixture, "model")
    model = _build(cfg, fields)
    torch.save(sd, tmp_path / "r.pth")
    with pytest.warns(UserWarning, match="reference_compat"):
        load_reference_checkpoint(model, tmp_path / "r.pth")


# --- released keys, strictly --------------------------------------------------------------------------
def test_unmapped_release_key_is_named(model_fixture, tmp_path):
    sd, _, _, cfg, fields = _case(model_fixture, "model")
    model = _build(cfg, fields, reference_compat=True)
    for extra in ("backbone.block1.0.bogus.weight", "decode_head.extra.bias"):
        bad = dict(sd, **{extra: torch.zeros(3)})
        torch.save(bad, tmp_path / "bad.pth")
        with pytest.raises(ValueError, match=re.escape(extra)):
            load_reference_checkpoint(model, tmp_path / "bad.pth")
    # an adapter of a pair the model does not have (a 4th modality)
    extra = "backbone.block1.0.adap_t_att14.adapter_down.weight"
    bad = dict(sd, **{extra: torch.zeros(8, 8)})
    with pytest.raises(ValueError, match=re.escape(extra)):
        model.reference_state_dict(bad)
    # a missing tensor is an error too
    short = {k: v for k, v in sd.items() if k != "decode_head.linear_pred.bias"}
    torch.save(short, tmp_path / "short.pth")
    with pytest.raises(ValueError, match="linear_pred"):
        load_reference_checkpoint(model, tmp_path / "short.pth")


def test_release_layout_mismatch_names_the_fields(tips_fixture):
    """The released DeLiVER layout (adapters in stages 3-4, no FeatureCross) into the model file's layout:
    the error says which fields to set (StitchFusion issues #3/#4)."""
    sd, _, _, cfg, _ = _case(tips_fixture, "release")
    model = _build(cfg, {}, reference_compat=True)
    with pytest.raises(ValueError) as e:
        model.reference_state_dict(sd)
    msg = str(e.value)
    assert "stitch_adapter_stages=(False, False, True, True)" in msg and "stitch_fusion='sum'" in msg
    sd2, _, _, cfg2, _ = _case(tips_fixture, "every_two")
    with pytest.raises(ValueError, match="stitch_adapter='every_two'"):
        _build(cfg2, dict(stitch_fusion="sum"), reference_compat=True).reference_state_dict(sd2)


# --- the adapters: vectorised == the per-pair definition ---------------------------------------------------
def _pair_index(mode: str, M: int, src: int, dst: int) -> int:
    """The release's naming, independently: every_one {i<j}, every_two (src, dst), shared 0."""
    if mode == "shared":
        return 0
    if mode == "every_one":
        pairs = [(i, j) for i in range(M) for j in range(M) if i < j]
        return pairs.index((min(src, dst), max(src, dst)))
    return [(i, j) for i in range(M) for j in range(M) if i != j].index((src, dst))


def _one_adapter(ad: PairAdapters, a: int, x: torch.Tensor) -> torch.Tensor:
    h = F.linear(x, ad.down_weight[a], ad.down_bias[a])
    h = F.gelu(F.linear(h, ad.mid_weight[a], ad.mid_bias[a]))
    return F.linear(h, ad.up_weight[a], ad.up_bias[a])


def _random_adapters(C: int, M: int, mode: str) -> PairAdapters:
    ad = PairAdapters(C, M, mode, hidden=8, dropout=0.0)
    with torch.no_grad():
        for p in ad.parameters():
            p.normal_(0, 0.3)
    return ad


@pytest.mark.parametrize("mode", ["every_one", "every_two", "shared"])
@pytest.mark.parametrize("present", [[0, 1, 2, 3], [0, 2, 3], [1, 3]])
def test_adapters_match_per_pair_loop(mode, present):
    torch.manual_seed(0)
    M, B, L, C = 4, 2, 5, 12
    ad = _random_adapters(C, M, mode)
    P = len(present)
    n = torch.randn(P, B * L, C)
    plan = pair_plan(mode, M, present, n.device)
    out = ad(n, plan, B)
    want = torch.zeros_like(n)
    for qi, q in enumerate(present):
        for pi, p in enumerate(present):
            if p != q:
                want[qi] += _one_adapter(ad, _pair_index(mode, M, p, q), n[pi])
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    # the release's order: sources in turn, each reading its already-updated features
    norm = torch.nn.LayerNorm(C)
    z = torch.randn(P, B * L, C)
    seq = ad.sequential(z, norm, plan, B)
    zs = list(z.clone())
    for pi, p in enumerate(present):
        src = norm(zs[pi])
        for qi, q in enumerate(present):
            if p != q:
                zs[qi] = zs[qi] + _one_adapter(ad, _pair_index(mode, M, p, q), src)
    torch.testing.assert_close(seq, torch.stack(zs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["every_one", "every_two"])
def test_adapters_drop_path_per_contribution(mode):
    """In training, each contribution (source, target, sample) gets its own drop-path mask, bias included,
    as each adapter call of the release does."""
    torch.manual_seed(1)
    M, B, L, C = 3, 4, 3, 6
    ad = _random_adapters(C, M, mode).train()
    dp = DropPath(0.5).train()
    present = list(range(M))
    plan = pair_plan(mode, M, present, torch.device("cpu"))
    n = torch.randn(M, B * L, C)
    torch.manual_seed(7)
    out = ad(n, plan, B, dp)
    torch.manual_seed(7)
    mask = dp(torch.ones(M * (M - 1) * B, 1)).view(M, M - 1, B)  # source, target slot, sample
    assert 0 < (mask == 0).sum() < mask.numel()
    want = torch.zeros(M, B, L, C)
    for p in range(M):
        for k, q in enumerate(x for x in range(M) if x != p):
            c = _one_adapter(ad, _pair_index(mode, M, p, q), n[p]).view(B, L, C)
            want[q] += c * mask[p, k].view(B, 1, 1)
    torch.testing.assert_close(out, want.view(M, B * L, C), rtol=1e-5, atol=1e-5)
    # sequential: one mask per source, drawn in turn
    norm = torch.nn.LayerNorm(C)
    z = torch.randn(M, B * L, C)
    torch.manual_seed(9)
    seq = ad.sequential(z, norm, plan, B, dp)
    torch.manual_seed(9)
    zs = list(z.clone())
    for p in range(M):
        m = dp(torch.ones((M - 1) * B, 1)).view(M - 1, B)
        src = norm(zs[p])
        for k, q in enumerate(x for x in range(M) if x != p):
            c = _one_adapter(ad, _pair_index(mode, M, p, q), src).view(B, L, C)
            zs[q] = zs[q] + (c * m[k].view(B, 1, 1)).view(B * L, C)
    torch.testing.assert_close(seq, torch.stack(zs), rtol=1e-5, atol=1e-5)


# --- FeatureCross: merged computation == the literal layers ------------------------------------------------
def _feature_cross_literal(fc: FeatureCross, feats: torch.Tensor) -> torch.Tensor:
    x = torch.cat(list(feats), dim=1)  # B×(M·C)×h×w, modality-major channels
    B, _, h, w = x.shape
    C = fc.dim

    def to_map(t):
        return t.transpose(1, 2).reshape(B, C, h, w)

    s = fc.fuse(x.flatten(2).transpose(1, 2))  # B×N×C
    u = fc.bn1(fc.pw1(to_map(fc.fc1(s))))
    v = u + fc.dw3(u) + fc.dw5(u) + fc.dw7(u)
    y = fc.fc2(F.gelu(fc.bn2(fc.pw2(v))).flatten(2).transpose(1, 2))
    if fc.se_reduce is None:
        gate = torch.full((B, C), 0.5)
    else:
        gate = torch.sigmoid(fc.se_expand(F.relu(fc.se_reduce(to_map(s).mean((2, 3))))))
    return to_map(y + s * gate.unsqueeze(1))


@pytest.mark.parametrize("C", [8, 16, 48])
@pytest.mark.parametrize("train", [False, True])
def test_feature_cross_matches_literal_layers(C, train):
    torch.manual_seed(C)
    M, B, h, w = 3, 2, 5, 7
    fc = FeatureCross(C, M)
    with torch.no_grad():
        for p in fc.parameters():
            p.normal_(0, 0.3)
        for bn in (fc.bn1, fc.bn2):
            bn.running_mean.normal_(0, 0.3)
            bn.running_var.uniform_(0.5, 1.5)
    assert (fc.se_reduce is None) == (C < 16)
    fc.train(train)
    ref = copy.deepcopy(fc)
    feats = torch.randn(M, B, C, h, w)
    torch.testing.assert_close(fc(feats), _feature_cross_literal(ref, feats), rtol=1e-4, atol=1e-4)
    # absent modalities: the same as zero-filled slots
    fc.eval()
    got = fc(feats[[0, 2]], [0, 2])
    zeroed = feats.clone()
    zeroed[1] = 0
    torch.testing.assert_close(got, fc(zeroed), rtol=1e-5, atol=1e-5)


# --- the model: variants, training, shapes, None inputs -------------------------------------------------------
def _tiny(**kw):
    torch.manual_seed(0)
    return equiseg.create_model("stitchfusion_b0", num_classes=5, modalities=MODS, **{**TINY, **kw})


@pytest.mark.parametrize("mode", ["every_one", "every_two", "shared"])
@pytest.mark.parametrize("compat", [False, True])
def test_variants_train(mode, compat):
    """One compute_loss step reaches every parameter. The SE gate's ReLU units may all be off at
    initialisation (a property of the architecture: its hidden width is C // 16, one unit at C = 16), and
    then its two layers rightly get zero gradients; that is checked against the recorded activations."""
    model = _tiny(stitch_adapter=mode, reference_compat=compat, drop_path_rate=0.0).train()
    labels = torch.randint(0, 5, (2, 64, 64))
    labels[:, :3] = 255
    g = torch.Generator().manual_seed(0)
    x = [torch.randn(2, 3, 64, 64, generator=g) for _ in MODS]
    active = {}
    for s, fc in enumerate(model.fusions):
        if fc.se_reduce is not None:
            fc.se_reduce.register_forward_hook(
                lambda m, a, out, s=s: active.__setitem__(s, bool((out > 0).any()))
            )
    out = model.compute_loss(x, labels)
    assert torch.isfinite(out.loss) and out.logits.shape == (2, 5, 64, 64)
    out.loss.backward()
    dead = []
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        m = re.fullmatch(r"fusions\.(\d)\.se_(?:reduce|expand)\.weight", name)
        if m and not active[int(m[1])]:
            assert not p.grad.any(), name  # no active unit: no gradient, as it should be
        elif not p.grad.abs().sum() > 0:
            dead.append(name)
    assert not dead, dead[:5]
    n_adapters = {"every_one": 3, "every_two": 6, "shared": 1}[mode]
    assert model.adapters[0][0]["attn"].down_weight.shape[0] == n_adapters
    # with stochastic depth the adapters' masks are drawn too
    model = _tiny(stitch_adapter=mode, reference_compat=compat, drop_path_rate=0.3).train()
    assert torch.isfinite(model.compute_loss(x, labels).loss)


def test_registered_variants():
    for size, dim in (("b0", 256), ("b1", 256), ("b2", 512), ("b3", 512), ("b4", 512), ("b5", 512)):
        cfg = model_config(f"stitchfusion_{size}")
        assert cfg.arch == "stitchfusion" and cfg.decoder_dim == dim
        assert cfg.loss == "ohem" and cfg.ln_eps == 1e-5
        assert cfg.stitch_adapter == "every_one" and cfg.stitch_adapter_dim == 8
    with pytest.raises(ValueError, match="stitch_adapter"):
        model_config("stitchfusion_b0", stitch_adapter="every_three")
    with pytest.raises(ValueError, match="share_encoder"):
        _tiny(share_encoder=False)


def test_odd_size_shapes_and_encode():
    for compat in (False, True):
        model = _tiny(reference_compat=compat, stitch_adapter_dim=4).eval()
        x = [torch.randn(2, 3, 65, 97) for _ in MODS]
        with torch.no_grad():
            assert model(x).shape == (2, 5, 65, 97)
            feats = model.encode(x)
        sizes = [(17, 25), (9, 13), (5, 7), (3, 4)]
        assert [tuple(f.shape) for f in feats] == [(3, 2, c, *s) for c, s in zip(TINY["embed_dims"], sizes)]
    assert model.adapters[0][0]["attn"].down_weight.shape == (3, 4, 8)


def test_none_inputs():
    """Absent modalities: left out of the adapters (the present ones exchange only among themselves),
    zeros in the FeatureCross's slots; a lone modality is the plain MiT."""
    model = _tiny().eval()
    with torch.no_grad():
        for p in model.parameters():  # adapters of a visible size
            p.add_(0.05 * torch.randn_like(p))
    x = [torch.randn(2, 3, 64, 64) for _ in MODS]
    part = [x[0], None, x[2]]
    with torch.no_grad():
        out = model(part)
        feats = model.encode(part)
        assert out.shape == (2, 5, 64, 64) and torch.isfinite(out).all()
        assert [f.shape[0] for f in feats] == [2] * 4
        # FeatureCross sees zeros in the absent slot
        fused = []
        for fc, f in zip(model.fusions, feats):
            full = torch.zeros(3, *f.shape[1:])
            full[[0, 2]] = f
            fused.append(fc(full))
        want = F.interpolate(model.head(fused), size=(64, 64), mode="bilinear", align_corners=False)
        torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
        # the present pair's features are those of a 2-modality model holding that pair's adapters
        two = equiseg.create_model(
            "stitchfusion_b0", num_classes=5, modalities=("rgb", "event"), **TINY
        ).eval()
        sd = {k: v for k, v in model.state_dict().items() if not k.startswith(("adapters.", "fusions."))}
        pair = model.adapters[0][0]["attn"].pairs.index((0, 2))
        sd.update({k: v[pair : pair + 1] for k, v in model.state_dict().items() if k.startswith("adapters.")})
        sd.update({k: v for k, v in two.state_dict().items() if k.startswith("fusions.")})
        two.load_state_dict(sd)
        for a, b in zip(feats, two.encode([x[0], x[2]])):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        # one present modality: no adapters, the plain MiT's stage features
        lone = model.encode([None, x[1], None])
        for a, b in zip(lone, model.backbone.forward_features(x[1])):
            torch.testing.assert_close(a[0], b, rtol=1e-5, atol=1e-5)
        # the release's order with an absent modality runs over the present ones
        compat = _tiny(reference_compat=True).eval()
        compat.load_state_dict(model.state_dict())
        assert torch.isfinite(compat(part)).all()
    with pytest.raises(ValueError, match="at least one"):
        model([None, None, None])


def test_sum_fusion_and_adapter_stages():
    model = _tiny(stitch_fusion="sum", stitch_adapter_stages=(False, False, True, True)).eval()
    assert model.fusions is None
    assert [len(a) for a in model.adapters] == [0, 0, 1, 1]
    x = [torch.randn(1, 3, 64, 64) for _ in MODS]
    with torch.no_grad():
        feats = model.encode(x)
        want = F.interpolate(
            model.head([f.sum(0) for f in feats]), size=(64, 64), mode="bilinear", align_corners=False
        )
        torch.testing.assert_close(model(x), want)
        # stages without adapters are the plain MiT per modality
        lone = model.backbone.forward_features(x[1])
        torch.testing.assert_close(feats[1][1], lone[1], rtol=1e-5, atol=1e-5)


def test_mit_weights_initialise_the_shared_encoder(tmp_path):
    model = _tiny()
    cfg = model.cfg
    torch.manual_seed(3)
    mit = MixVisionTransformer(**mit_kwargs(cfg))
    torch.save(mit.state_dict(), tmp_path / "mit.pth")
    report = load_pretrained(model, tmp_path / "mit.pth")
    assert report.coverage == 1.0
    for k, v in mit.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[k], v), k
