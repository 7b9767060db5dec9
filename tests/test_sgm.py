"""Self-Guided Module (docs/design.md §2, paper Eq. 3-4) against hand computations."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from equiseg.models.sgm import (
    class_prototypes,
    cosine_pairs,
    prototype_kl,
    random_pairs,
    sample_prototypes,
    sgm_loss,
)

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "reference" / "robustseg_sgm.safetensors"


def test_prototypes_equal_hand_computation():
    # P=1 modality, B=1, C=2 channels, 2×2 grid; labels [[0, 1], [1, 255]], 3 classes
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    g = torch.tensor([[10.0, 20.0], [30.0, 40.0]])
    feats = torch.stack([f, g])[None, None]  # 1×1×2×2×2
    labels = torch.tensor([[[0, 1], [1, 255]]])
    protos, present = class_prototypes(feats, labels, num_classes=3)
    # class 0: pixel (0,0) -> (1, 10); class 1: pixels (0,1),(1,0) -> ((2+3)/2, (20+30)/2); class 2 absent
    expected = torch.tensor([[1.0, 2.5, 0.0], [10.0, 25.0, 0.0]])
    torch.testing.assert_close(protos[0], expected)
    assert present.tolist() == [True, True, False]


def test_prototypes_resize_labels_nearest():
    feats = torch.arange(4.0).view(1, 1, 1, 2, 2)
    labels = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2], [2, 2, 2, 2]]])
    protos, present = class_prototypes(feats, labels, num_classes=3)
    torch.testing.assert_close(protos[0, 0], torch.tensor([0.0, 1.0, 2.5]))


def test_kl_zero_for_identical_positive_otherwise_and_hand_value():
    t = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 5.0]]])  # 1 pair, C=2, K=3
    present = torch.tensor([True, True, False])  # class 2 absent: ignored entirely
    assert prototype_kl(t, t.clone(), present).abs().item() < 1e-7
    s = torch.tensor([[[2.0, 1.0, -7.0], [0.0, 1.0, 9.0]]])

    # channel 0: p_t = softmax(1,2), p_s = softmax(2,1); channel 1: p_t = (.5,.5), p_s = softmax(0,1)
    def kl(a, b):
        pa = [math.exp(x) / sum(math.exp(y) for y in a) for x in a]
        pb = [math.exp(x) / sum(math.exp(y) for y in b) for x in b]
        return sum(p * math.log(p / q) for p, q in zip(pa, pb))

    expected = (kl([1, 2], [2, 1]) + kl([0, 0], [0, 1])) / 2
    got = prototype_kl(t, s, present)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    assert got.item() > 0


def test_teacher_gets_no_gradient_student_does():
    feats = [torch.randn(2, 2, 4, 4, 4, requires_grad=True)]
    labels = torch.randint(0, 3, (2, 8, 8))
    leaf = feats[0]
    loss = sgm_loss(feats, labels, 3, generator=torch.Generator().manual_seed(0))
    loss.backward()
    t, s = random_pairs(2, torch.Generator().manual_seed(0))
    assert leaf.grad[t].abs().sum() == 0
    assert leaf.grad[s].abs().sum() > 0


def test_pairing_odd_drops_one_and_is_reproducible():
    t, s = random_pairs(5, torch.Generator().manual_seed(3))
    assert len(t) == len(s) == 2
    assert len(set(t.tolist()) | set(s.tolist())) == 4
    t2, s2 = random_pairs(5, torch.Generator().manual_seed(3))
    assert t.tolist() == t2.tolist() and s.tolist() == s2.tolist()
    dropped = {
        (set(range(5)) - set(torch.cat(random_pairs(5, torch.Generator().manual_seed(k))).tolist())).pop()
        for k in range(40)
    }
    assert dropped == set(range(5))  # the dropped modality is random, not always the last
    t4, s4 = random_pairs(4, torch.Generator().manual_seed(0))
    assert sorted(torch.cat([t4, s4]).tolist()) == [0, 1, 2, 3]


def test_sgm_loss_n1_zero_and_reproducible_with_generator():
    labels = torch.randint(0, 4, (2, 16, 16))
    one = [torch.randn(1, 2, 8, 4, 4)]
    assert sgm_loss(one, labels, 4).item() == 0.0
    feats = [torch.randn(4, 2, 8, 4, 4), torch.randn(4, 2, 16, 2, 2)]
    a = sgm_loss(feats, labels, 4, generator=torch.Generator().manual_seed(7))
    b = sgm_loss(feats, labels, 4, generator=torch.Generator().manual_seed(7))
    assert a.item() == b.item()
    values = {
        round(sgm_loss(feats, labels, 4, generator=torch.Generator().manual_seed(k)).item(), 6)
        for k in range(10)
    }
    assert len(values) > 1  # different pairings give different losses


def test_sgm_loss_is_sum_over_stages_and_pairs():
    labels = torch.randint(0, 3, (1, 8, 8))
    feats = [torch.randn(4, 1, 6, 4, 4), torch.randn(4, 1, 6, 2, 2)]
    loss = sgm_loss(feats, labels, 3, generator=torch.Generator().manual_seed(2))
    t, s = random_pairs(4, torch.Generator().manual_seed(2))
    expected = 0.0
    for f in feats:
        protos, present = class_prototypes(f, labels, 3)
        for ti, si in zip(t, s):
            expected += prototype_kl(protos[ti][None], protos[si][None], present).item()
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_cosine_pairing_picks_most_similar():
    base = torch.randn(1, 6, 3)
    protos = torch.cat([base, -base, base + 0.01 * torch.randn_like(base), torch.randn(1, 6, 3)])
    present = torch.ones(3, dtype=torch.bool)
    for k in range(10):
        t, s = cosine_pairs([protos], [present], torch.Generator().manual_seed(k))
        for ti, si in zip(t.tolist(), s.tolist()):
            if ti in (0, 2) and {0, 2} - {ti} - set(t.tolist()):
                assert si == ({0, 2} - {ti}).pop()  # the near-copy is chosen when still free


def test_pixel_kl_variant_and_absent_classes_no_nan():
    labels = torch.full((1, 8, 8), 255)
    labels[0, :4] = 1  # one class present only
    feats = [torch.randn(2, 1, 4, 4, 4, requires_grad=True)]
    loss = sgm_loss(feats, labels, 5, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(feats[0].grad).all()
    assert loss.item() == pytest.approx(0.0, abs=1e-6)  # a single present class: both softmaxes are 1
    px = sgm_loss(feats, labels, 5, prototype=False, generator=torch.Generator().manual_seed(0))
    assert px.item() > 0


@pytest.mark.parametrize("convention", ["spec", "reference"])
@pytest.mark.parametrize("reading", ["post_ln", "pre_ln", "pre_cmtb"])
def test_sgm_features_reading_uses_that_tensor_and_reaches_only_what_precedes_it(reading, convention):
    from model_utils import rand_inputs, tiny_model

    torch.manual_seed(0)
    model = tiny_model(4, sgm_features=reading, sgm_convention=convention)
    model.eval()  # no dropout: the two computations below see the same forward pass
    x = rand_inputs(4, b=2, h=64, w=64)
    labels = torch.randint(0, 5, (2, 64, 64))
    out = model.compute_loss(x, labels, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        feats = model.encode(x, return_intermediates=True)[reading]
    ref = sgm_loss(feats, labels, 5, convention=convention, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(out.loss_sgm.detach(), ref)
    assert out.loss_sgm > 0

    model.zero_grad()
    out.loss_sgm.backward()

    def touched(prefix: str) -> bool:
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(prefix)]
        return any(g is not None and g.abs().sum() > 0 for g in grads)

    assert touched("backbone.block1")  # every reading reaches the MiT blocks
    # the last stage's CMTB only when the prototypes are taken after it (earlier CMTBs feed later
    # stages' f'); the stage-4 LayerNorm only when they are taken after it
    assert touched("fusions.0")
    assert touched("fusions.3") == (reading != "pre_cmtb")
    assert touched("backbone.norm4") == (reading == "post_ln")


# ---------------------------------------------------------------------------------------------------
# The "reference" convention (RobustSeg's arithmetic)


def test_reference_matches_robustseg_own_loss_and_gradient():
    """Parity with RobustSeg's ``PCUMD`` run on the same features, labels and pairs (the fixture is made
    by ``tests/fixtures/reference/make_robustseg_sgm.py`` from the public code)."""
    from safetensors.torch import load_file

    fx = load_file(str(FIXTURE))
    meta = json.loads(safe_open_meta(FIXTURE)["config"])
    t, s = random_pairs(meta["P"], torch.Generator().manual_seed(meta["pair_seed"]))
    assert t.tolist() == fx["teachers"].tolist() and s.tolist() == fx["students"].tolist()
    leaves = [fx[f"stage{j}"].clone().requires_grad_(True) for j in range(4)]
    loss = sgm_loss(
        leaves, fx["labels"], meta["K"], convention="reference",
        generator=torch.Generator().manual_seed(meta["pair_seed"]),
    )  # fmt: skip
    torch.testing.assert_close(loss.detach(), fx["loss"][0], rtol=1e-5, atol=1e-8)
    loss.backward()
    for j, leaf in enumerate(leaves):
        ref = fx[f"grad.stage{j}"]
        assert ref.abs().sum() > 0  # every stage's students receive a gradient
        torch.testing.assert_close(leaf.grad, ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())


def safe_open_meta(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return dict(f.metadata())


def test_sample_prototypes_divide_the_class_sum_twice_per_sample():
    # B=2, C=1, 2×2 grid, K=3; sample 0 labels [[0, 1], [1, 255]], sample 1 all class 2
    feats = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]], [[[5.0, 6.0], [7.0, 8.0]]]])[None]  # 1×2×1×2×2
    labels = torch.tensor([[[0, 1], [1, 255]], [[2, 2], [2, 2]]])
    protos = sample_prototypes(feats, labels, 3)  # 1×2×3×1
    # sample 0: class 0 -> 1/1/1; class 1 -> (2+3)/2/2; class 2 absent -> 0; sample 1: class 2 -> 26/4/4
    expected = torch.tensor([[[1.0], [1.25], [0.0]], [[0.0], [0.0], [26 / 16]]])
    torch.testing.assert_close(protos[0], expected)


def _kl_mean(student_logits: torch.Tensor, teacher_logits: torch.Tensor, dim: int) -> torch.Tensor:
    """``nn.KLDivLoss(reduction="mean")`` on log-softmax / softmax along ``dim``, clamped at 0."""
    kl = torch.nn.KLDivLoss(reduction="mean")
    return kl(F.log_softmax(student_logits, dim=dim), F.softmax(teacher_logits, dim=dim)).clamp(min=0)


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides the total loss")  # the reference uses 'mean'
@pytest.mark.parametrize("pairing", ["random", "cosine"])
@pytest.mark.parametrize("prototype", [True, False])
def test_reference_equals_a_loop_over_samples_classes_and_pairs(prototype, pairing):
    """The vectorised convention against a loop written from its definition (module docstring)."""
    torch.manual_seed(3)
    P, B, K = 5, 3, 4  # odd P: one modality sits out
    feats = [torch.randn(P, B, c, h, w) for c, (h, w) in ((6, (8, 8)), (10, (4, 4)))]
    labels = torch.randint(0, K, (B, 16, 16))
    labels[1, :8] = 255
    got = sgm_loss(feats, labels, K, convention="reference", prototype=prototype, pairing=pairing,
                   generator=torch.Generator().manual_seed(11))  # fmt: skip

    def protos_loop(f: torch.Tensor) -> torch.Tensor:  # P×B×K×C, one class and sample at a time
        out = torch.zeros(P, B, K, f.shape[2])
        lab = F.interpolate(labels[:, None].float(), size=f.shape[-2:], mode="nearest")[:, 0].long()
        for b in range(B):
            for k in range(K):
                mask = lab[b] == k
                if mask.any():
                    out[:, b, k] = f[:, b][:, :, mask].mean(-1) / mask.sum()
        return out

    protos = [protos_loop(f) for f in feats]
    if pairing == "cosine":
        t, s = cosine_pairs(protos, None, torch.Generator().manual_seed(11))
    else:
        t, s = random_pairs(P, torch.Generator().manual_seed(11))
    expected = 0.0
    for i, f in enumerate(feats):
        for ti, si in zip(t.tolist(), s.tolist()):
            for b in range(B):
                if prototype:
                    expected += _kl_mean(protos[i][si, b], protos[i][ti, b], dim=0).item()
                else:
                    expected += _kl_mean(f[si, b], f[ti, b], dim=0).item()
    assert got.item() == pytest.approx(expected / B, rel=1e-5)


def test_reference_is_far_weaker_than_spec_on_the_same_features():
    """The arithmetic difference the issue measured: per-sample, divided-twice prototypes and a mean
    over K·C give a much smaller loss than the batch prototypes of the literal reading."""
    torch.manual_seed(0)
    feats = [torch.randn(4, 2, c, h, h) for c, h in ((32, 32), (64, 16), (160, 8), (256, 4))]
    labels = torch.randint(0, 16, (2, 128, 128))
    spec = sgm_loss(feats, labels, 25, generator=torch.Generator().manual_seed(0))
    ref = sgm_loss(feats, labels, 25, convention="reference", generator=torch.Generator().manual_seed(0))
    assert 0 < ref < spec / 10  # 0.021 vs 1.14 here; on real features the gap is larger (docs)


def test_unknown_convention_is_refused_by_name():
    with pytest.raises(ValueError, match="convention must be one of spec, reference, got 'robust'"):
        sgm_loss([torch.randn(2, 1, 2, 2, 2)], torch.zeros(1, 2, 2, dtype=torch.long), 2, convention="robust")
