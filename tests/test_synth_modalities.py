"""Synthetic scenes: modalities of unequal information; conditions and failures do what they say (docs/design.md §9)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from equiseg.data import DeLiVER
from equiseg.data.synth import ROAD, ROADLINE, SKY, deliver_case, generate, render_sample, sample_rng


def _features(x: torch.Tensor) -> torch.Tensor:
    """Per-pixel features of a 3×H×W uint8 image: the value and its 5×5 mean → (H·W, 6)."""
    x = x.float() / 255
    local = F.avg_pool2d(x[None], 5, 1, 2, count_include_pad=False)[0]
    return torch.cat([x, local]).flatten(1).T


def _pixels(root, split: str, case: str, modality: str) -> tuple[torch.Tensor, torch.Tensor]:
    ds = DeLiVER(root, split, modalities=(modality,), case=case)
    feats, labels = zip(
        *((_features(x[0]), y.flatten()) for x, y in (ds[i] for i in range(len(ds)))), strict=True
    )
    return torch.cat(feats), torch.cat(labels)


def _nearest_class_mean(root, case: str, modality: str, classes: tuple[int, ...] | None = None) -> float:
    """Mean per-class accuracy on val of a nearest-class-mean classifier fit on train."""
    xt, yt = _pixels(root, "train", case, modality)
    xv, yv = _pixels(root, "val", case, modality)
    if classes is not None:
        kt, kv = torch.isin(yt, torch.tensor(classes)), torch.isin(yv, torch.tensor(classes))
        xt, yt, xv, yv = xt[kt], yt[kt], xv[kv], yv[kv]
    mu, sd = xt.mean(0), xt.std(0) + 1e-6
    xt, xv = (xt - mu) / sd, (xv - mu) / sd
    present = [c for c in yt.unique().tolist() if (yv == c).any()]
    means = torch.stack([xt[yt == c].mean(0) for c in present])
    pred = torch.tensor(present)[torch.cdist(xv, means).argmin(1)]
    return float(np.mean([(pred[yv == c] == c).float().mean().item() for c in present]))


@pytest.fixture(scope="module")
def sun_night(tmp_path_factory):
    root = tmp_path_factory.mktemp("sun_night")
    generate(
        root,
        splits={"train": 40, "val": 20},
        size=(64, 64),
        seed=0,
        conditions=["sun", "night"],
        failures=[],
        progress=False,
    )
    return root


def test_rgb_by_day_beats_rgb_by_night(sun_night):
    sun = _nearest_class_mean(sun_night, "sun", "rgb")
    night = _nearest_class_mean(sun_night, "night", "rgb")
    assert sun > night + 0.05, (sun, night)


def test_depth_separates_sky_from_road_but_not_lane_lines(sun_night):
    for case in ("sun", "night"):  # depth does not care about light
        assert _nearest_class_mean(sun_night, case, "depth", (SKY, ROAD)) > 0.98
        assert _nearest_class_mean(sun_night, case, "depth", (ROAD, ROADLINE)) < 0.65
    assert _nearest_class_mean(sun_night, "sun", "rgb", (ROAD, ROADLINE)) > 0.7  # paint is visible


def _render(case: str, failure: str | None = None, index: int = 0, size: int = 96):
    return render_sample(sample_rng(0, "val", index), (size, size), deliver_case(case, failure))


def test_events_and_lidar_are_sparse_rgb_and_depth_dense():
    for i, case in enumerate(("sun", "cloud", "rain", "fog", "night")):
        s = _render(case, index=i, size=128)
        pos, neg = s.events
        assert 0.005 < ((pos + neg) > 0).mean() < 0.35
        lidar = np.zeros((128, 128), bool)
        lidar[s.lidar.rows, s.lidar.cols] = True
        assert 0.01 < lidar.mean() < 0.12
        assert np.isfinite(s.depth).mean() > 0.3  # everything but the sky has a depth
        assert s.rgb.std() > 5


def test_conditions_change_only_the_appearance():
    ref = _render("cloud")
    for case in ("sun", "fog", "rain", "night"):
        s = _render(case)
        assert np.array_equal(s.label, ref.label) and np.array_equal(s.depth, ref.depth)  # same street
    assert _render("night").rgb.mean() < 0.6 * ref.rgb.mean()
    fog = _render("fog")
    far = np.isfinite(ref.depth) & (ref.depth > 40)
    if far.any():  # far objects fade into the fog
        assert fog.rgb[far].std() < 0.6 * ref.rgb[far].std()


def test_failures_degrade_their_sensor_only():
    clean = _render("sun", index=3)
    for failure in ("motionblur", "overexposure", "underexposure", "lidarjitter", "eventlowres"):
        s = _render("sun", failure, index=3)
        assert np.array_equal(s.label, clean.label) and np.array_equal(s.depth, clean.depth)
    assert _render("sun", "overexposure", index=3).rgb.mean() > clean.rgb.mean() + 30
    assert _render("sun", "underexposure", index=3).rgb.mean() < clean.rgb.mean() - 30

    def sharpness(img: np.ndarray) -> float:  # horizontal detail, 2×2-averaged against pixel noise
        g = img.astype(np.float32).mean(-1)
        g = g.reshape(g.shape[0] // 2, 2, g.shape[1] // 2, 2).mean((1, 3))
        return float(np.abs(np.diff(g, axis=1)).mean())

    assert sharpness(_render("sun", "motionblur", index=3).rgb) < 0.85 * sharpness(clean.rgb)
    pos, _ = _render("sun", "eventlowres", index=3).events
    assert pos.shape == (96 // 4, 96 // 4)

    def on_lines(p) -> set:
        return set(zip(p.rows.tolist(), p.cols.tolist(), strict=True))

    lines = on_lines(clean.lidar)
    jittered = on_lines(_render("sun", "lidarjitter", index=3).lidar)
    assert len(on_lines(_render("sun", index=3).lidar) - lines) == 0
    assert len(jittered - lines) > 0.4 * len(jittered)  # most returns moved off the scan lines
