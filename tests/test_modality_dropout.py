"""Modality dropout (``train.modality_dropout``): the keep patterns, the fills, the config, and what the
training-only losses see of the dropped inputs (EQUISeg's SGM, MAGIC's selection)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from equiseg.config import ModalityDropoutConfig, load_experiment
from equiseg.engine.modality_dropout import ModalityDropout, draw_keep, size_weights
from equiseg.models import create_model
from equiseg.models.modules.magic_selection import ASM, consistency_loss
from equiseg.models.sgm import _kept_pairs, sgm_loss

MODS = ["rgb", "depth", "event", "lidar"]
TINY = {"embed_dims": [8, 16, 40, 64], "depths": [1, 1, 1, 1], "decoder_dim": 16}


# --------------------------------------------------------------------------------------------- patterns
@pytest.mark.parametrize("mode", ["subset", "independent"])
def test_patterns_are_never_empty_and_have_the_right_shape(mode):
    g = torch.Generator().manual_seed(0)
    for num in (1, 2, 4, 7):
        keep = draw_keep(mode, 500, num, 0.9, g)
        assert keep.shape == (500, num) and keep.dtype == torch.bool
        assert keep.any(1).all()


def test_subset_sizes_are_uniform_and_subsets_uniform_given_the_size():
    n, num = 60_000, 4
    keep = draw_keep("subset", n, num, generator=torch.Generator().manual_seed(1))
    sizes = keep.sum(1)
    freq = torch.bincount(sizes, minlength=num + 1)[1:].double() / n
    assert torch.allclose(freq, torch.full((num,), 1 / num, dtype=torch.float64), atol=0.01), freq
    # given size 2, each of the 6 pairs equally likely
    two = keep[sizes == 2]
    codes = (two.long() * torch.tensor([1, 2, 4, 8])).sum(1)
    counts = torch.bincount(codes, minlength=16)[[3, 5, 6, 9, 10, 12]].double()
    assert torch.allclose(counts / counts.sum(), torch.full((6,), 1 / 6, dtype=torch.float64), atol=0.015)


def test_independent_drops_are_the_binomial_conditioned_on_one_kept():
    n, num, p = 60_000, 3, 0.6
    keep = draw_keep("independent", n, num, p, torch.Generator().manual_seed(2))
    sizes = torch.bincount(keep.sum(1), minlength=num + 1)[1:].double() / n
    expected = torch.tensor([math.comb(num, k) * (1 - p) ** k * p ** (num - k) for k in range(1, num + 1)])
    expected = expected / expected.sum()
    assert torch.allclose(sizes, expected.double(), atol=0.01), (sizes, expected)
    # each modality kept with probability (1 - p) / (1 - p^N), all alike
    marginal = keep.double().mean(0)
    assert torch.allclose(
        marginal, torch.full((num,), (1 - p) / (1 - p**num), dtype=torch.float64), atol=0.01
    )
    # p = 0 keeps everything
    assert draw_keep("independent", 100, num, 0.0, torch.Generator().manual_seed(0)).all()
    assert torch.allclose(size_weights("subset", 5), torch.ones(5, dtype=torch.float64))


def test_patterns_are_seeded_by_the_run_not_the_global_rng():
    cfg = ModalityDropoutConfig(mode="subset")
    xs = [torch.randn(6, 3, 8, 8) for _ in range(4)]
    a = ModalityDropout(cfg, seed=3)
    state = torch.random.get_rng_state()
    _, k1 = a(xs, iteration=5, micro=1)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global stream is untouched
    torch.manual_seed(123)
    _, k2 = ModalityDropout(cfg, seed=3)(xs, iteration=5, micro=1)  # a resumed run: a fresh object
    assert torch.equal(k1, k2)
    others = [
        ModalityDropout(cfg, seed=3)(xs, iteration=6, micro=1)[1],
        ModalityDropout(cfg, seed=3)(xs, iteration=5, micro=0)[1],
        ModalityDropout(cfg, seed=3, rank=1)(xs, iteration=5, micro=1)[1],
        ModalityDropout(cfg, seed=4)(xs, iteration=5, micro=1)[1],
    ]
    # 6 samples × 4 modalities: a coincidence of all four is (far) below 1e-6
    assert all(not torch.equal(k1, k) for k in others)


def test_zero_fill_zeroes_the_dropped_inputs_per_sample():
    xs = [torch.randn(5, 3, 8, 8) + 3 for _ in range(4)]
    out, keep = ModalityDropout(ModalityDropoutConfig(mode="subset"), seed=0)(xs, 0)
    assert keep.shape == (5, 4)
    for n in range(4):
        assert out[n].shape == xs[n].shape
        assert torch.equal(out[n][keep[:, n]], xs[n][keep[:, n]])
        assert (out[n][~keep[:, n]] == 0).all()


def test_absent_fill_gives_none_for_the_whole_micro_batch():
    xs = [torch.randn(2, 3, 8, 8) for _ in range(4)]
    drop = ModalityDropout(ModalityDropoutConfig(mode="independent", p=0.7, fill="absent"), seed=0)
    seen = set()
    for it in range(50):
        out, keep = drop(xs, it)
        assert keep is None
        present = tuple(x is not None for x in out)
        assert any(present)
        assert all(o is x for o, x in zip(out, xs) if o is not None)
        seen.add(present)
    assert len(seen) > 4


def test_off_and_single_modality_change_nothing():
    xs = [torch.randn(2, 3, 8, 8) for _ in range(4)]
    out, keep = ModalityDropout(ModalityDropoutConfig(), seed=0)(xs, 0)
    assert keep is None and all(o is x for o, x in zip(out, xs))
    out, keep = ModalityDropout(ModalityDropoutConfig(mode="subset"), seed=0)(xs[:1], 0)
    assert keep is None and out[0] is xs[0]


def test_absent_fill_is_refused_by_name_for_a_model_without_absent_inputs():
    class NoAbsent(torch.nn.Module):
        accepts_absent = False

    with pytest.raises(
        ValueError, match=r"train.modality_dropout.fill: absent .*NoAbsent does not.*fill: zero"
    ):
        ModalityDropout(ModalityDropoutConfig(mode="subset", fill="absent"), seed=0, model=NoAbsent())
    ModalityDropout(ModalityDropoutConfig(mode="subset", fill="zero"), seed=0, model=NoAbsent())


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.modality_dropout.mode=sometimes", r"^train.modality_dropout.mode: 'sometimes' is not one of"),
        ("train.modality_dropout.p=1", r"^train.modality_dropout.p: expected a number in \[0, 1\), got 1"),
        ("train.modality_dropout.p=-0.5", r"^train.modality_dropout.p: expected a number in \[0, 1\)"),
        ("train.modality_dropout.fill=nan", r"^train.modality_dropout.fill: 'nan' is not one of"),
        ("train.modality_dropout.rate=0.5", r"^unknown config key 'train.modality_dropout.rate'"),
        ("train.accumulate_steps=0", r"^train.accumulate_steps: expected an integer >= 1, got 0$"),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_key(override, message):
    with pytest.raises(ValueError, match=message) as e:
        load_experiment(None, [override])
    assert "\n" not in str(e.value)


def test_config_round_trips_and_direct_construction_is_checked():
    cfg = load_experiment(None, ["train.modality_dropout.mode=independent", "train.modality_dropout.p=0.25"])
    again = load_experiment(cfg.to_dict())
    assert again.train.modality_dropout == ModalityDropoutConfig("independent", 0.25, "zero")
    with pytest.raises(ValueError, match=r"^train.modality_dropout.mode: expected one of none \| subset"):
        ModalityDropoutConfig(mode="often")


# ------------------------------------------------------------------------------------------------ SGM
def _stage_feats(P: int, B: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(P, B, c, s, s, generator=g).requires_grad_()
        for c, s in [(8, 16), (16, 8), (24, 4), (32, 2)]
    ]


def _labels(B: int, K: int) -> torch.Tensor:
    labels = torch.randint(0, K, (B, 32, 32), generator=torch.Generator().manual_seed(5))
    labels[0, :6] = 255
    labels[1][labels[1] == 2] = 0  # a class absent from one sample
    return labels


COMBOS = list(itertools.product(["spec", "reference"], [True, False], ["random", "cosine"]))


@pytest.mark.parametrize("convention, prototype, pairing", COMBOS)
def test_sgm_with_every_modality_kept_equals_the_unmasked_loss(convention, prototype, pairing):
    P, B, K = 4, 3, 5
    feats, labels = _stage_feats(P, B), _labels(B, K)
    kw = dict(prototype=prototype, pairing=pairing, convention=convention)
    a = sgm_loss(feats, labels, K, generator=torch.Generator().manual_seed(7), **kw)
    b = sgm_loss(
        feats, labels, K, generator=torch.Generator().manual_seed(7), keep=torch.ones(P, B, dtype=bool), **kw
    )
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("convention, prototype, pairing", COMBOS)
def test_sgm_sees_nothing_of_the_dropped_features(convention, prototype, pairing):
    """Whatever a dropped (modality, sample) feature holds, the loss is the same and its gradient 0."""
    P, B, K = 4, 3, 5
    keep = torch.tensor([[1, 1, 0], [1, 0, 1], [0, 1, 1], [0, 0, 1]], dtype=torch.bool)  # P×B
    feats, labels = _stage_feats(P, B), _labels(B, K)
    kw = dict(prototype=prototype, pairing=pairing, convention=convention, keep=keep)
    loss = sgm_loss(feats, labels, K, generator=torch.Generator().manual_seed(7), **kw)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    for f in feats:
        assert (f.grad[~keep] == 0).all() and f.grad[keep].abs().sum() > 0
    other = [f.detach().clone() for f in feats]
    for f in other:
        f[~keep] = torch.randn_like(f[~keep]) * 10
    again = sgm_loss(other, labels, K, generator=torch.Generator().manual_seed(7), **kw)
    assert torch.allclose(loss, again, rtol=1e-6)


def test_sgm_spec_prototypes_are_taken_over_the_samples_that_kept_both():
    """A loop-written reference of the "spec" convention under ``keep``."""
    P, B, K = 4, 3, 5
    keep = torch.tensor([[1, 1, 0], [1, 0, 1], [1, 1, 1], [0, 0, 0]], dtype=torch.bool)
    feats, labels = _stage_feats(P, B, seed=1), _labels(B, K)
    got = sgm_loss(feats, labels, K, generator=torch.Generator().manual_seed(3), keep=keep)
    teachers, students, valid = _kept_pairs(keep, torch.Generator().manual_seed(3))
    assert valid.tolist() == [True, False]  # 3 modalities kept somewhere: one pair, modality 3 never
    want = 0.0
    for f in feats:
        _, _, C, h, w = f.shape
        lab = torch.nn.functional.interpolate(labels[:, None].float(), size=(h, w), mode="nearest")[
            :, 0
        ].long()
        for t, s, ok in zip(teachers.tolist(), students.tolist(), valid.tolist()):
            if not ok:
                continue
            both = [b for b in range(B) if keep[t, b] and keep[s, b]]
            kl_c = []
            protos = {}
            for m in (t, s):
                rows = []
                for c in range(K):
                    pix = [f[m, b][:, lab[b] == c] for b in both]
                    pix = torch.cat(pix, 1) if pix else torch.zeros(C, 0)
                    rows.append(pix.mean(1) if pix.shape[1] else None)
                protos[m] = rows
            present = [c for c in range(K) if protos[t][c] is not None]
            pt = torch.stack([protos[t][c] for c in present], 1).detach()  # C×K'
            ps = torch.stack([protos[s][c] for c in present], 1)
            lt, ls = pt.log_softmax(1), ps.log_softmax(1)
            kl_c = (lt.exp() * (lt - ls)).sum(1)
            want = want + kl_c.mean()
    assert torch.allclose(got, want, rtol=1e-5)


def test_sgm_pairs_only_kept_modalities():
    keep = torch.tensor([[0, 0], [1, 0], [0, 0], [0, 1]], dtype=torch.bool)  # 1 and 3 kept, never together
    for seed in range(20):
        t, s, valid = _kept_pairs(keep, torch.Generator().manual_seed(seed))
        assert valid.tolist() == [True, False] and {int(t[0]), int(s[0])} == {1, 3}
    feats, labels = _stage_feats(4, 2), _labels(2, 5)
    # the only pair was never kept by one sample: nothing to compare, no NaN
    loss = sgm_loss(feats, labels, 5, keep=keep, generator=torch.Generator().manual_seed(0))
    assert loss == 0


# ---------------------------------------------------------------------------------------------- models
def _model(name: str, **kw):
    torch.manual_seed(0)
    m = create_model(name, num_classes=5, modalities=MODS, **TINY, **kw)
    return m.train()


@pytest.mark.parametrize("name", ["equiseg_b0", "magic_b0", "magicpp_b0", "cmnext_b0"])
def test_compute_loss_with_keep(name):
    model = _model(name)
    xs = [torch.randn(3, 3, 64, 64) for _ in MODS]
    labels = torch.randint(0, 5, (3, 64, 64))
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def loss(inputs, keep):
        model.load_state_dict(state)  # BN running stats as before
        torch.manual_seed(1)  # drop-path
        return model(inputs, labels=labels, generator=torch.Generator().manual_seed(1), keep=keep)

    plain, all_kept = loss(xs, None), loss(xs, torch.ones(3, 4, dtype=torch.bool))
    for k, v in plain.as_dict().items():
        assert torch.allclose(v, all_kept.as_dict()[k], rtol=1e-5, atol=1e-6), k
    keep = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 1], [0, 1, 1, 1]], dtype=torch.bool)
    zeroed = [x * keep[:, n, None, None, None] for n, x in enumerate(xs)]
    out = loss(zeroed, keep)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    with pytest.raises(ValueError, match=r"keep must be a B×N tensor \(3×4"):
        loss(xs, torch.ones(4, 3, dtype=torch.bool))


def test_magic_selection_ranks_only_kept_modalities():
    P, B = 4, 5
    keep = torch.tensor(
        [[1, 1, 0, 0, 1], [0, 1, 1, 0, 1], [0, 1, 1, 1, 1], [0, 0, 1, 1, 1]], dtype=torch.bool
    )
    feats = [torch.randn(P, B, 8, 4, 4)]
    fused = [torch.randn(B, 8, 4, 4)]
    fused[0][0] = feats[0][3, 0] * 5  # the dropped modality of sample 0 is the most similar one
    (sel,) = ASM(1)(feats, fused, keep=keep)
    idx, valid = sel.selected_slots()
    rest, rest_valid = sel.rest_slots()
    n = keep.sum(0)
    for b in range(B):
        chosen = idx[valid[:, b], b].tolist()
        others = rest[rest_valid[:, b], b].tolist()
        assert all(keep[m, b] for m in chosen + others)  # never a dropped modality
        assert sorted(chosen + others) == sorted(torch.nonzero(keep[:, b])[:, 0].tolist())  # every kept one
        assert len(chosen) == min(2, int(n[b]))
    # every modality kept: the slots are the plain selection
    (plain,) = ASM(1)(feats, fused)
    (full,) = ASM(1)(feats, fused, keep=torch.ones(P, B, dtype=torch.bool))
    assert torch.equal(full.selected_slots()[0], plain.selected) and full.selected_slots()[1].all()
    assert torch.equal(full.rest_slots()[0], plain.rest) and full.rest_slots()[1].all()


def test_consistency_loss_ignores_invalid_entries():
    R, B, K = 3, 2, 4
    rest = torch.randn(R, B, 8, 4, 4)
    salient = torch.randn(B, 8, 4, 4)
    labels = torch.randint(0, K, (B, 4, 4))
    weight = torch.tensor([[1, 1], [1, 0], [0, 1]], dtype=torch.bool)
    a = consistency_loss(rest, salient, labels, K, weight=weight)
    noisy = rest.clone()
    noisy[~weight] = torch.randn_like(noisy[~weight]) * 10
    assert torch.allclose(a, consistency_loss(noisy, salient, labels, K, weight=weight))
    # sample 0 = entries 0, 1 only
    alone = consistency_loss(rest[:2, :1], salient[:1], labels[:1], K)
    only0 = consistency_loss(rest[:, :1], salient[:1], labels[:1], K, weight=weight[:, :1])
    assert torch.allclose(alone, only0, rtol=1e-6)
    assert torch.allclose(
        consistency_loss(rest, salient, labels, K),
        consistency_loss(rest, salient, labels, K, weight=torch.ones(R, B, dtype=torch.bool)),
        rtol=1e-6,
    )


# ------------------------------------------------------------------------------------------ ablate/study
def test_modality_dropout_is_an_ablation_and_study_table():
    from equiseg.tasks.ablate import row_config, row_model_overrides, row_train_overrides, table_rows
    from equiseg.tasks.study import METRICS, check_study_lists

    base = load_experiment({"model": {"name": "equiseg_b0"}})
    rows = table_rows("modality_dropout")
    assert [r.id for r in rows] == ["no_dropout", "subset", "independent"]
    configs = [row_config(base, r, "w") for r in rows]
    assert [c.train.modality_dropout.mode for c in configs] == ["none", "subset", "independent"]
    assert all(c.train.modality_dropout.fill == "zero" for c in configs)
    assert configs[2].train.modality_dropout.p == 0.5
    # the model is the full model in every row; only the training changes
    assert all(c.model_config(25) == configs[0].model_config(25) for c in configs)
    assert all(row_model_overrides(r) == {} for r in rows)
    assert row_train_overrides(rows[1]) == {"modality_dropout": {"mode": "subset", "fill": "zero"}}
    assert METRICS["modality_dropout"] == ("mIoU", "emm_avg")
    assert check_study_lists(["modality_dropout"], ["equiseg_b0"], ["scratch"], None, [1, 2, 3])[0] == [
        "modality_dropout"
    ]
