"""EQUISeg model: shapes, equal batched encoding, cross-modal interaction, ablations, None inputs,
bad input, registry and config."""

from __future__ import annotations

import pytest
import torch
from model_utils import MODS4, TINY, rand_inputs, tiny_model

import equiseg
from equiseg.config import ModelConfig
from equiseg.models import EQUISeg, MixVisionTransformer, SegFormerHead


@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("hw", [(64, 96), (65, 97), (33, 50)])
def test_b0_shapes(n, hw):
    model = equiseg.create_model("equiseg_b0", num_classes=7, modalities=MODS4[:n]).eval()
    x = rand_inputs(n, b=2, h=hw[0], w=hw[1])
    with torch.no_grad():
        logits = model(x)
        feats = model.encode(x)
    assert logits.shape == (2, 7, *hw)
    assert torch.isfinite(logits).all()
    h, w = -(-hw[0] // 4), -(-hw[1] // 4)  # 7×7/4 patch embedding: ceil(H/4)
    for f, c in zip(feats, (32, 64, 160, 256)):
        assert f.shape == (n, 2, c, h, w)
        h, w = -(-h // 2), -(-w // 2)  # 3×3/2 embeddings: ceil halving


def test_train_mode_logits_at_input_resolution():
    model = tiny_model(3).train()
    assert model(rand_inputs(3, h=64, w=80)).shape == (2, 5, 64, 80)


def test_encoder_parameter_counts():
    # docs/design.md §1.2: encoder parameters B0 3.32M, B1 13.15M, B2 24.20M
    for name, expected in [("equiseg_b0", 3.32), ("equiseg_b1", 13.15), ("equiseg_b2", 24.20)]:
        m = equiseg.create_model(name, modalities=["rgb", "depth"])
        n = sum(p.numel() for p in m.backbone.parameters()) / 1e6
        assert abs(n - expected) < 0.01, (name, n)


@pytest.mark.parametrize("n", [2, 4])
def test_every_parameter_gets_a_gradient(n):
    model = tiny_model(n).train()
    x = rand_inputs(n)
    labels = torch.randint(0, 5, (2, 64, 64))
    out = model.compute_loss(x, labels, generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    dead = [k for k, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not dead, dead
    zero = [k for k, p in model.named_parameters() if p.grad.abs().sum() == 0]
    assert not zero, zero


def test_all_variants_build():
    assert [m for m in equiseg.list_models() if m.startswith("equiseg_")] == [
        f"equiseg_b{i}" for i in range(6)
    ]
    depths = {"equiseg_b3": (3, 4, 18, 3), "equiseg_b4": (3, 8, 27, 3), "equiseg_b5": (3, 6, 40, 3)}
    for name, d in depths.items():
        cfg = equiseg.models.model_config(name)
        assert cfg.depths == d and cfg.embed_dims == (64, 128, 320, 512) and cfg.decoder_dim == 768


# --- equal encoding ----------------------------------------------------------------------------------


def test_shared_batched_encoding_equals_per_modality_branches():
    """The batched N·B path equals running each modality through its own (identical) MiT."""
    shared = tiny_model(3).eval()
    separate = tiny_model(3, share_encoder=False).eval()
    sd = {k: v for k, v in shared.state_dict().items() if not k.startswith("backbone.")}
    for i in range(3):
        sd.update(
            {f"backbones.{i}.{k[9:]}": v for k, v in shared.state_dict().items() if k.startswith("backbone.")}
        )
    separate.load_state_dict(sd)
    x = rand_inputs(3)
    with torch.no_grad():
        for a, b in zip(shared.encode(x), separate.encode(x)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert sum(p.numel() for p in separate.parameters()) > sum(p.numel() for p in shared.parameters())


def test_batched_mit_equals_each_modality_alone():
    """Batched MiT layers give per-sample results equal to running each modality alone."""
    mit = MixVisionTransformer(**{k: v for k, v in TINY.items() if k != "decoder_dim"}).eval()
    x = rand_inputs(3, b=2)
    with torch.no_grad():
        batched = mit(torch.cat(x))
        for i, xi in enumerate(x):
            for a, b in zip(mit(xi), batched):
                torch.testing.assert_close(a, b[2 * i : 2 * i + 2], rtol=1e-5, atol=1e-5)


# --- cross-modal interaction --------------------------------------------------------------------------


def test_changing_one_modality_changes_another_branch():
    model = tiny_model(3).eval()
    x = rand_inputs(3)
    x2 = [x[0], x[1] + torch.randn_like(x[1]), x[2]]
    with torch.no_grad():
        f, g = model.encode(x), model.encode(x2)
    assert not torch.allclose(f[1][0], g[1][0], atol=1e-4)  # branch 1 (rgb), stage 2


def test_without_fusion_branches_are_independent():
    """Control for the test above: a per-modality loop without CMTB leaves other branches untouched."""
    model = tiny_model(1).eval()
    x = rand_inputs(1)
    with torch.no_grad():
        a = model.encode(x)
        b = model.encode([x[0].clone()])
    for s in range(4):
        torch.testing.assert_close(a[s], b[s])


def test_single_modality_is_plain_segformer():
    model = tiny_model(1).eval()
    assert model.fusions is None
    x = rand_inputs(1)
    with torch.no_grad():
        feats = model.backbone.forward_features(x[0])
        ref = model.head(feats)
        ref = torch.nn.functional.interpolate(ref, size=(64, 64), mode="bilinear", align_corners=False)
        torch.testing.assert_close(model(x), ref)
    out = model.compute_loss(x, torch.randint(0, 5, (2, 64, 64)))
    assert out.loss_sgm.item() == 0.0


def _naive_cmtb(cmtb, tokens, H, W, P):
    """Reference CMTB computed per primary with explicit loops (no leave-one-out trick)."""
    PB, L, C = tokens.shape
    B = PB // P
    maps = [tokens[p * B : (p + 1) * B].transpose(1, 2).reshape(B, C, H, W) for p in range(P)]
    hub = cmtb.hub
    outs = []
    for n in range(P):
        cands = []
        for m in range(P):
            if m == n:
                continue
            if hub.mode == "mean":
                cands.append(maps[m])
                continue
            dw = torch.nn.functional.conv2d(
                maps[m],
                hub.score_dw.weight[m * C : (m + 1) * C],
                hub.score_dw.bias[m * C : (m + 1) * C],
                padding=1,
                groups=C,
            )
            s = torch.sigmoid(
                torch.nn.functional.conv2d(dw, hub.score_pw.weight[m : m + 1], hub.score_pw.bias[m : m + 1])
            )
            cands.append(s * maps[m] + maps[m])
        stack = torch.stack(cands)
        outs.append(stack.mean(0) if hub.mode == "mean" else stack.max(0).values)
    hub_out = torch.cat(outs)  # (P·B)×C×H×W
    aux = cmtb.ppx(hub_out).flatten(2).transpose(1, 2)
    fc = cmtb.cross_attn(tokens, H, W, context=aux)
    return tokens + fc


@pytest.mark.parametrize("mode", ["selfquery", "mean"])
@pytest.mark.parametrize("P", [2, 3, 4])
def test_cmtb_equals_naive_per_primary_loop(mode, P):
    from equiseg.models import CMTB

    torch.manual_seed(P)
    cmtb = CMTB(16, 2, 2, P, hub=mode).eval()
    with torch.no_grad():
        for p in cmtb.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # make score nets and layer scales non-trivial
        H, W, B = 6, 5, 2
        tokens = torch.randn(P * B, H * W, 16)
        torch.testing.assert_close(
            cmtb(tokens, H, W, P), _naive_cmtb(cmtb, tokens, H, W, P), rtol=1e-5, atol=1e-5
        )


def test_hub_primary_does_not_see_itself():
    from equiseg.models import SelfQueryHub

    hub = SelfQueryHub(4, 3)
    x = torch.randn(3, 2, 5, 5, 4)  # P×B×H×W×C
    y = x.clone()
    y[0] += 10.0  # a huge primary 0 would win every max if it were not left out
    torch.testing.assert_close(hub(x)[0], hub(y)[0])
    assert not torch.allclose(hub(x)[1], hub(y)[1])


@pytest.mark.parametrize("P", [2, 3, 4, 5])
def test_leave_one_out_max_equals_the_brute_force_and_topk(P):
    from equiseg.models.modules.hub import leave_one_out_max

    z = torch.randn(P, 2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    got = leave_one_out_max(z)  # the custom backward (z needs a gradient)
    brute = torch.stack([torch.cat([z[:n], z[n + 1 :]]).amax(0) for n in range(P)])
    assert torch.equal(got, brute)
    with torch.no_grad():
        assert torch.equal(leave_one_out_max(z), brute)  # the plain path
    top = z.topk(2, dim=0)  # the former implementation: runner-up where the max is the primary's own
    primary = torch.arange(P).view(P, 1, 1, 1, 1)
    assert torch.equal(got, torch.where(top.indices[0] == primary, top.values[1], top.values[0]))
    g = torch.randn_like(got)
    (ours,) = torch.autograd.grad(got, z, g)
    (ref,) = torch.autograd.grad(brute, z, g)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)  # no ties among random values
    assert torch.autograd.gradcheck(leave_one_out_max, (z[:, :1, :2, :2, :2].detach().requires_grad_(),))


# --- missing modalities --------------------------------------------------------------------------------


def test_none_inputs_work_and_differ():
    model = tiny_model(4).eval()
    x = rand_inputs(4)
    with torch.no_grad():
        full = model(x)
        part = model([x[0], None, x[2], None])
        only = model([None, None, None, x[3]])
        zero = model([x[0], torch.zeros_like(x[1]), x[2], torch.zeros_like(x[3])])
    assert part.shape == full.shape == only.shape
    assert not torch.allclose(full, part, atol=1e-4)
    assert not torch.allclose(part, zero, atol=1e-4)  # None is not the same as zero-filling
    feats = model.encode([x[0], None, x[2], None])
    assert feats[0].shape[0] == 2


def test_none_training_step_and_single_present_keeps_f_prime():
    model = tiny_model(3).train()
    x = rand_inputs(3)
    out = model.compute_loss([None, x[1], None], torch.randint(0, 5, (2, 64, 64)))
    assert out.loss_sgm.item() == 0.0
    out.loss.backward()
    # with only one modality present, each stage is MiT + stage norm: equal to a 1-modality model
    single = tiny_model(1).eval()
    single.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("fusions.")})
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model([None, x[1], None]), single([x[1]]))


def test_hub_uses_only_present_score_nets():
    """With modality 0 missing, the result equals a model built without it whose score nets are the rest."""
    model = tiny_model(3).eval()
    x = rand_inputs(3)
    with torch.no_grad():
        a = model.encode([None, x[1], x[2]])
        # permuting which score net belongs to the absent modality must not matter
        for f in model.fusions:
            C = f.hub.dim
            f.hub.score_dw.weight[:C].normal_()
            f.hub.score_pw.weight[0].normal_()
        b = model.encode([None, x[1], x[2]])
    for s in range(4):
        torch.testing.assert_close(a[s], b[s])


# --- ablation switches -----------------------------------------------------------------------------------


def _params(m):
    return {k: tuple(v.shape) for k, v in m.state_dict().items()}


def test_ablation_switches_change_structure_or_output():
    base = tiny_model(4)
    x = rand_inputs(4)
    labels = torch.randint(0, 5, (2, 64, 64))
    for kw in [dict(hub="mean"), dict(cross_attention=False), dict(share_encoder=False)]:
        m = tiny_model(4, **kw)
        assert _params(m) != _params(base), kw
        m.train().compute_loss(x, labels).loss.backward()
    # residual=False has the same parameters; the output differs with the same weights
    res = tiny_model(4, residual=False)
    assert _params(res) == _params(base)
    res.load_state_dict(base.state_dict())
    base.eval(), res.eval()
    with torch.no_grad():
        assert not torch.allclose(base(x), res(x), atol=1e-4)
    res.train().compute_loss(x, labels).loss.backward()
    # loss switches: same weights, different loss terms
    base.train()
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    torch.manual_seed(0)
    ref = base.compute_loss(x, labels, g())
    variants = {
        "sgm": dict(sgm=False),
        "prototype": dict(prototype=False),
        "pairing": dict(pairing="cosine"),
        "lambda": dict(lambda_sgm=1.0),
        "loss": dict(loss="ohem"),
    }
    for name, kw in variants.items():
        m = tiny_model(4, **kw)
        m.load_state_dict(base.state_dict())
        m.train()
        torch.manual_seed(0)
        out = m.compute_loss(x, labels, g())
        out.loss.backward()
        assert not torch.allclose(out.loss, ref.loss), name
    off = tiny_model(4, sgm=False)
    assert off.compute_loss(x, labels).loss_sgm.item() == 0.0


# --- bad input ---------------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors():
    model = tiny_model(3)
    x = rand_inputs(3)
    with pytest.raises(ValueError, match=r"expected 3 inputs \(rgb, depth, event\)"):
        model(x[:2])
    with pytest.raises(ValueError, match=r"'depth' must have shape B×3×H×W.*\(2, 1, 64, 64\)"):
        model([x[0], torch.randn(2, 1, 64, 64), x[2]])
    with pytest.raises(ValueError, match=r"'event' has shape \(2, 3, 64, 32\) but 'rgb' has"):
        model([x[0], x[1], torch.randn(2, 3, 64, 32)])
    with pytest.raises(ValueError, match="all 3 modalities"):
        model([None, None, None])
    with pytest.raises(ValueError, match="at least 32"):
        model([torch.randn(1, 3, 16, 16)] * 3)
    with pytest.raises(ValueError, match="labels must have shape"):
        model.compute_loss(x, torch.zeros(2, 32, 32, dtype=torch.long))
    unknown = r"unknown model 'equiseg_b9' \(did you mean 'equiseg_b\d'\?\); models are .*one of cmnext, cmx, equiseg"
    with pytest.raises(ValueError, match=unknown):
        equiseg.create_model("equiseg_b9")
    with pytest.raises(ValueError, match=r"unknown override 'lamda_sgm'.*did you mean 'lambda_sgm'"):
        equiseg.create_model("equiseg_b0", lamda_sgm=3)
    with pytest.raises(ValueError, match=r"hub: 'max' is not one of 'selfquery', 'mean'"):
        equiseg.create_model("equiseg_b0", hub="max")


# --- config ------------------------------------------------------------------------------------------------


def test_config_yaml_round_trip(tmp_path):
    cfg = equiseg.models.model_config(
        "equiseg_b2", num_classes=19, modalities=["a", "b"], hub="mean", lambda_sgm=40
    )
    cfg.to_yaml(tmp_path / "m.yaml")
    back = ModelConfig.from_yaml(tmp_path / "m.yaml")
    assert back == cfg
    assert isinstance(back.embed_dims, tuple)
    (tmp_path / "bad.yaml").write_text("embed_dim: [1, 2]\n")
    with pytest.raises(ValueError, match="did you mean 'embed_dims'"):
        ModelConfig.from_yaml(tmp_path / "bad.yaml")
    m = EQUISeg(back)
    assert m.modalities == ("a", "b")


def test_box_mean_equals_avg_pool():
    from equiseg.models.modules.ppx import box_mean

    x = torch.randn(2, 3, 13, 9)
    for k in (3, 7, 11):
        ref = torch.nn.functional.avg_pool2d(x, k, 1, k // 2, count_include_pad=False)
        torch.testing.assert_close(box_mean(x, k), ref, rtol=1e-5, atol=1e-6)


def test_head_fast_order_equals_segformer_order():
    head = SegFormerHead((8, 16, 40, 64), 32, 5).eval()
    with torch.no_grad():
        for p in head.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        feats = [torch.randn(2, c, 16 // 2**i, 12 // 2**i) for i, c in enumerate((8, 16, 40, 64))]
        torch.testing.assert_close(head(feats), head.forward_reference(feats), rtol=1e-4, atol=1e-5)


def test_head_shapes():
    head = SegFormerHead((8, 16, 40, 64), 32, 5)
    feats = [torch.randn(2, c, 16 // 2**i, 12 // 2**i) for i, c in enumerate((8, 16, 40, 64))]
    assert head(feats).shape == (2, 5, 16, 12)


def test_ppx_is_cmnext_mspa_block_exactly():
    """PPX against a literal transcription of docs/design.md §1.5 step 2 with the same weights (train and eval BN)."""
    import torch.nn.functional as F

    from equiseg.models.modules.ppx import PPX

    torch.manual_seed(0)
    ppx = PPX(12, mlp_ratio=8.0, layer_scale=0.3)
    with torch.no_grad():  # non-trivial BN statistics and layer scales so every term matters
        for bn in (ppx.norm1, ppx.norm2):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 1.5)
            bn.weight.normal_(1, 0.2)
            bn.bias.normal_()
        ppx.layer_scale1.uniform_(0.2, 0.8)
        ppx.layer_scale2.uniform_(0.2, 0.8)
    x = torch.randn(2, 12, 13, 17)

    def literal(x: torch.Tensor, old: bool = False) -> torch.Tensor:
        """docs/design.md §1.5 step 2; ``old``: the earlier deviation (gate on u = y + pools, MLP on the gated x)."""

        def bn(m, t):
            return F.batch_norm(t, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)

        def pooling_attention(z):
            y = F.conv2d(z, ppx.mixer.dwconv.weight, ppx.mixer.dwconv.bias, padding=3, groups=z.shape[1])
            pools = sum(F.avg_pool2d(y, k, 1, k // 2, count_include_pad=False) for k in (3, 7, 11))
            u = y + pools
            gate = torch.sigmoid(F.conv2d(u, ppx.mixer.gate.weight, ppx.mixer.gate.bias))
            return gate * u + u if old else gate * z + z

        def mlp(t):
            m = ppx.mlp
            h = F.conv2d(t, m.fc1.weight, m.fc1.bias)
            h = F.gelu(F.conv2d(h, m.dwconv.weight, m.dwconv.bias, padding=1, groups=h.shape[1]))
            return F.conv2d(h, m.fc2.weight, m.fc2.bias)

        ls1, ls2 = ppx.layer_scale1.view(-1, 1, 1), ppx.layer_scale2.view(-1, 1, 1)
        x = x + ls1 * pooling_attention(bn(ppx.norm1, x))
        pooled = x.mean((2, 3))[:, None, :]  # B×1×C: eca over channels
        eca = torch.sigmoid(F.conv1d(pooled, ppx.channel_gate.conv.weight, padding=1))[:, 0, :, None, None]
        if old:
            x = eca * x
            return x + ls2 * mlp(bn(ppx.norm2, x))
        return eca * x + ls2 * mlp(bn(ppx.norm2, x))  # the MLP reads the pre-gate x; no "x +"

    ppx.eval()
    with torch.no_grad():
        assert torch.allclose(ppx(x), literal(x), atol=1e-5, rtol=1e-5)
        # the earlier (wrong) reading is a different function of the same weights
        assert not torch.allclose(ppx(x), literal(x, old=True), atol=1e-2)
