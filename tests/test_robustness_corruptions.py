"""Corruptions of the robustness benchmark (docs/design.md §6.1): RMM drop rates, NM densities and std, seeding."""

from __future__ import annotations

import math

import pytest
import torch

from equiseg.robustness import (
    NM_LEVELS,
    Variant,
    apply_emm,
    apply_nm,
    apply_rmm,
    corrupt_inputs,
    find_event_index,
    missing_sets,
    random_drop,
    salt_and_pepper,
    variant_generator,
)

SHAPE = (3, 64, 64)  # one sample, M = 12288 elements per modality


def _inputs(n: int = 3, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, *SHAPE, generator=g) for _ in range(n)]


def test_missing_sets_cover_every_nonempty_present_set() -> None:
    for n in (1, 2, 3, 4):
        sets = missing_sets(n)
        assert len(sets) == 2**n - 1 == len(set(sets))
        assert sets[0] == ()  # none missing first
        assert all(len(s) < n for s in sets)  # never all missing
    assert missing_sets(3) == [(), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2)]


def test_event_index_by_name() -> None:
    assert find_event_index(["rgb", "depth", "event", "lidar"]) == 2
    assert find_event_index(["frame_camera", "lidar", "radar", "event_camera"]) == 3
    assert find_event_index(["rgb", "depth"]) is None


def test_emm_zero_fills_or_drops_only_the_missing() -> None:
    xs = _inputs()
    out = apply_emm(xs, (0, 2))
    assert torch.count_nonzero(out[0]) == 0 and torch.count_nonzero(out[2]) == 0
    assert out[1] is xs[1]  # present modalities pass through uncopied
    assert apply_emm(xs, (1,), model_aware=True) == [xs[0], None, xs[2]]


@pytest.mark.parametrize("rate", [0.25, 0.5, 0.75])
def test_rmm_drops_expected_fraction_only_in_missing(rate: float) -> None:
    xs = _inputs()  # randn: no element is 0 to begin with
    out = apply_rmm(xs, (0, 2), rate, torch.Generator().manual_seed(1))
    for i in (0, 2):
        dropped = out[i] == 0
        assert abs(dropped.float().mean().item() - rate) < 0.01
        assert torch.equal(out[i][~dropped], xs[i][~dropped])  # survivors unchanged
        # channels are dropped independently, not one H×W mask repeated over C
        assert not torch.equal(dropped[0, 0], dropped[0, 1])
    assert out[1] is xs[1]
    assert torch.count_nonzero(xs[0]) == xs[0].numel()  # input not modified


def test_random_drop_edge_rates() -> None:
    x = torch.randn(*SHAPE)
    assert torch.equal(random_drop(x, 0.0), x)
    assert torch.count_nonzero(random_drop(x, 1.0)) == 0


def _with_far_extremes(seed: int) -> torch.Tensor:
    """Uniform in [-1, 1] with one element at +100 and one at -100, so that salt-and-pepper hits stay
    recognisable (|value| > 50) after Gaussian noise of std <= 0.5."""
    x = torch.rand(1, *SHAPE, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    x[0, 0, 0, 0], x[0, 2, 63, 63] = 100.0, -100.0
    return x


@pytest.mark.parametrize("level", ["low", "mid", "high"])
def test_nm_densities_and_std_and_event_exception(level: str) -> None:
    lvl = NM_LEVELS[level]
    xs = [_with_far_extremes(s) for s in range(3)]  # rgb, depth, event
    out = apply_nm(xs, level, torch.Generator().manual_seed(7), event_index=2)
    # ceil(d·M/2) salt and as many pepper positions, uniform with replacement: the expected fraction of
    # distinct elements hit is 1 - (1 - 1/M)^(d·M) ≈ 1 - exp(-d): 0.0488 / 0.0952 / 0.1813.
    expected_hit = 1 - math.exp(-lvl.salt_pepper)
    for i, (x, y) in enumerate(zip(xs, out, strict=True)):
        salt, pepper = y > 50, y < -50
        hit = salt | pepper
        assert abs(hit.float().mean().item() - expected_hit) < 0.01
        # half salt, half pepper (pepper overwrites coinciding salt: a slight excess of pepper)
        assert abs(salt.float().mean().item() - pepper.float().mean().item()) < 0.015
        resid = (y - x)[~hit]
        if i == 2:  # event: salt-and-pepper only, extremes exactly the clean max / min
            assert torch.count_nonzero(resid) == 0
            assert torch.all(y[salt] == 100.0) and torch.all(y[pepper] == -100.0)
        else:
            assert abs(resid.std().item() / lvl.gaussian_std - 1) < 0.05
            assert abs(resid.mean().item()) < 0.05 * lvl.gaussian_std + 0.01
            assert torch.allclose(y[salt], torch.tensor(100.0), atol=6 * lvl.gaussian_std)


def test_salt_and_pepper_uses_each_samples_own_extremes() -> None:
    x = torch.stack([torch.rand(*SHAPE), torch.rand(*SHAPE) * 10 - 20])  # two samples, different ranges
    y = salt_and_pepper(x, 0.2, torch.Generator().manual_seed(0))
    for b in range(2):
        changed = y[b] != x[b]
        vals = y[b][changed]
        assert torch.all((vals == x[b].max()) | (vals == x[b].min()))
        assert changed.any()


def test_same_seed_same_corruption_other_seed_or_sample_different() -> None:
    xs = _inputs()
    for v in (Variant("rmm", (0, 1), rate=0.5), Variant("nm", level="mid")):
        a = corrupt_inputs(v, xs, seed=0, sample_index=3, event_index=2)
        b = corrupt_inputs(v, xs, seed=0, sample_index=3, event_index=2)
        c = corrupt_inputs(v, xs, seed=1, sample_index=3, event_index=2)
        d = corrupt_inputs(v, xs, seed=0, sample_index=4, event_index=2)
        assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
        assert not torch.equal(a[0], c[0]) and not torch.equal(a[0], d[0])
    # the generator depends on the variant too (two rates do not share their masks)
    g1 = variant_generator(0, 0, Variant("rmm", (0,), rate=0.25).key)
    g2 = variant_generator(0, 0, Variant("rmm", (0,), rate=0.5).key)
    assert not torch.equal(torch.rand(8, generator=g1), torch.rand(8, generator=g2))
