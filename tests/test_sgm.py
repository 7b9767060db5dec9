"""Self-Guided Module (SPEC §1.5, paper Eq. 3-4) against hand computations (issue 2)."""

from __future__ import annotations

import math

import pytest
import torch

from equiseg.models.sgm import class_prototypes, cosine_pairs, prototype_kl, random_pairs, sgm_loss


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


@pytest.mark.parametrize("reading", ["post_ln", "pre_ln", "pre_cmtb"])
def test_sgm_features_reading_uses_that_tensor_and_reaches_only_what_precedes_it(reading):
    from model_utils import rand_inputs, tiny_model

    torch.manual_seed(0)
    model = tiny_model(4, sgm_features=reading)
    model.eval()  # no dropout: the two computations below see the same forward pass
    x = rand_inputs(4, b=2, h=64, w=64)
    labels = torch.randint(0, 5, (2, 64, 64))
    out = model.compute_loss(x, labels, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        feats = model.encode(x, return_intermediates=True)[reading]
    ref = sgm_loss(feats, labels, 5, generator=torch.Generator().manual_seed(7))
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
