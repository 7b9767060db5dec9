"""Joint transforms (docs/design.md §3.3, §3.4): shared geometry, nearest labels, padding, RGB-only photometry, seeding.

The outputs of the pre-OpenCV transforms for fixed generators are frozen in
``tests/fixtures/transform_outputs.npz`` (written by ``tests/fixtures/make_transform_outputs.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from equiseg.data import (
    DELIVER_NORM_STATS,
    MUSES_NORM_STATS,
    NormStats,
    build_train_transform,
    build_val_transform,
)
from equiseg.data.transforms import color_jitter, gaussian_blur, resize_crop_pad

MODS = ("rgb", "depth", "event", "lidar")


def coordinate_inputs(h: int, w: int, n: int = 4) -> list[torch.Tensor]:
    """Inputs whose channels encode (x, y, x + y): values identify the source position."""
    y, x = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    base = torch.stack([x, y, x + y])
    return [base.clone() for _ in range(n)]


def block_label(h: int, w: int, block: int = 4) -> torch.Tensor:
    """Labels constant on block×block squares, a different id per block (< 255)."""
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return ((y // block) * ((w + block - 1) // block) + x // block) % 250


def _raw(outs: list[torch.Tensor], mods=MODS, stats=DELIVER_NORM_STATS) -> list[torch.Tensor]:
    return [stats[m].invert(o) for m, o in zip(mods, outs, strict=True)]


def _geometry_only(**kw):
    kw = {"jitter_prob": 0.0, "blur_prob": 0.0, **kw}
    return build_train_transform(kw.pop("crop", 24), MODS, DELIVER_NORM_STATS, **kw)


def test_geometry_identical_across_modalities_and_label():
    h, w = 30, 40
    inputs = coordinate_inputs(h, w)
    label = block_label(h, w)
    t = _geometry_only(seed=0, crop=(24, 28))
    for _ in range(12):
        outs, lab = t(inputs, label)
        raw = _raw(outs)
        assert all(tuple(o.shape) == (3, 24, 28) for o in outs) and tuple(lab.shape) == (24, 28)
        for r in raw[1:]:
            torch.testing.assert_close(r, raw[0], atol=1e-4, rtol=0)
        # The bilinear inputs carry the exact source coordinate (x, y) of every output pixel; the
        # label must be the source label at that coordinate rounded (ties up: nearest-exact).
        valid = lab != 255
        xs, ys = raw[0][0][valid], raw[0][1][valid]
        near_y = (ys + 0.5 + 1e-3).floor().long().clamp(0, h - 1)
        near_x = (xs + 0.5 + 1e-3).floor().long().clamp(0, w - 1)
        assert torch.equal(label[near_y, near_x], lab[valid])


@pytest.mark.parametrize(
    ("resized", "crop", "offset", "flip"),
    [
        ((30, 40), (30, 40), (0, 0), False),
        ((45, 60), (24, 28), (7, 19), True),
        ((17, 23), (24, 28), (0, 0), True),
    ],
)
def test_resize_crop_pad_matches_interpolate(resized, crop, offset, flip):
    torch.manual_seed(0)
    h, w = 30, 40
    x = torch.rand(3, h, w) * 255
    label = torch.randint(0, 19, (h, w))
    outs, lab = resize_crop_pad([x, x.to(torch.uint8)], label, resized, crop, offset, flip)
    ref = F.interpolate(x[None], size=resized, mode="bilinear", align_corners=False)[0]
    ref8 = F.interpolate(x.to(torch.uint8)[None].float(), size=resized, mode="bilinear", align_corners=False)[
        0
    ]
    ref_lab = F.interpolate(label[None, None].float(), size=resized, mode="nearest-exact")[0, 0].long()
    if flip:
        ref, ref8, ref_lab = ref.flip(-1), ref8.flip(-1), ref_lab.flip(-1)
    y0, x0 = offset
    ref, ref8, ref_lab = ref[:, y0 : y0 + crop[0], x0 : x0 + crop[1]], ref8[:, y0:, x0:], ref_lab[y0:, x0:]
    ph, pw = ref.shape[1:]
    torch.testing.assert_close(outs[0][:, :ph, :pw], ref, atol=1e-3, rtol=0)
    # uint8 inputs go through OpenCV's 8-bit resize: rounded, within one grey level
    torch.testing.assert_close(outs[1][:, :ph, :pw], ref8[:, : crop[0], : crop[1]], atol=1.0, rtol=0)
    assert torch.equal(lab[:ph, :pw], ref_lab[: crop[0], : crop[1]])
    # padding: inputs 0, label 255 (bottom and right)
    assert bool((outs[0][:, ph:] == 0).all()) and bool((outs[0][:, :, pw:] == 0).all())
    assert bool((lab[ph:] == 255).all()) and bool((lab[:, pw:] == 255).all())


def test_bilinear_within_one_grey_level_for_any_size():
    # Random noise (the worst case for resampling error), random in/out sizes, up and down.
    g = torch.Generator().manual_seed(0)
    for _ in range(40):
        h, w, nh, nw = torch.randint(3, 70, (4,), generator=g).tolist()
        x8 = torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
        xf = torch.rand(3, h, w, generator=g) * 100
        outs, _ = resize_crop_pad([x8, xf], torch.zeros(h, w, dtype=torch.int64), (nh, nw))
        for out, x, tol in ((outs[0], x8, 1.0), (outs[1], xf, 1e-3)):
            ref = F.interpolate(x[None].float(), size=(nh, nw), mode="bilinear", align_corners=False)[0]
            assert float((out - ref).abs().max()) < tol


def test_label_is_nearest_not_interpolated():
    h, w = 16, 16
    label = torch.zeros(h, w, dtype=torch.int64)
    label[:, 8:] = 10
    label[4, 4] = 3
    t = _geometry_only(seed=1, crop=20)
    for _ in range(10):
        _, lab = t(coordinate_inputs(h, w), label)
        assert set(lab.unique().tolist()) <= {0, 3, 10, 255}


def test_padding_values_when_image_is_small():
    # ratio 0.5: a 30×40 image is rescaled to short side 0.5·24 = 12 -> 12×16, padded to 24×24.
    t = _geometry_only(seed=0, crop=24, scale_range=(0.5, 0.5), flip_prob=0.0)
    inputs = [x + 1 for x in coordinate_inputs(30, 40)]  # no raw zeros inside the image
    outs, lab = t(inputs, block_label(30, 40))
    raw = _raw(outs)
    assert tuple(lab.shape) == (24, 24)
    for r in raw:
        assert torch.allclose(r[:, 12:], torch.zeros(()), atol=1e-4) and torch.allclose(
            r[:, :, 16:], torch.zeros(()), atol=1e-4
        )
        assert bool((r[:, :12, :16] > 0.5).all())
    assert (
        bool((lab[12:] == 255).all())
        and bool((lab[:, 16:] == 255).all())
        and bool((lab[:12, :16] != 255).all())
    )
    # normalised RGB padding is -mean/std: the raw 0 (black) of the reference, not the mean colour
    torch.testing.assert_close(
        outs[0][:, 20, 20], -torch.tensor([0.485, 0.456, 0.406]) / torch.tensor([0.229, 0.224, 0.225])
    )


def test_photometric_ops_touch_rgb_only():
    torch.manual_seed(0)
    inputs = [torch.randint(0, 256, (3, 20, 20), dtype=torch.uint8) for _ in MODS]
    label = torch.zeros(20, 20, dtype=torch.int64)
    common = {"flip_prob": 0.0, "scale_range": (1.0, 1.0), "crop": 20}  # geometry = identity
    plain = _geometry_only(seed=0, **common)(inputs, label)[0]
    for m, o in zip(MODS, plain, strict=True):
        torch.testing.assert_close(o, DELIVER_NORM_STATS[m].apply(inputs[MODS.index(m)]))
    for kw in ({"jitter_prob": 1.0}, {"blur_prob": 1.0}):
        outs = _geometry_only(seed=0, **common, **kw)(inputs, label)[0]
        assert not torch.allclose(outs[0], plain[0], atol=1e-3)  # RGB changed
        for o, p in zip(outs[1:], plain[1:], strict=True):
            assert torch.equal(o, p)  # depth, event, lidar untouched
    # on MUSES the RGB modality is frame_camera
    muses = ("frame_camera", "lidar")
    t = build_train_transform(
        20,
        muses,
        MUSES_NORM_STATS,
        jitter_prob=1.0,
        blur_prob=0.0,
        flip_prob=0.0,
        scale_range=(1.0, 1.0),
        seed=0,
    )
    lidar = torch.rand(3, 20, 20) * 50
    outs, _ = t([inputs[0], lidar], label)
    torch.testing.assert_close(outs[1], MUSES_NORM_STATS["lidar"].apply(lidar))
    assert not torch.allclose(outs[0], MUSES_NORM_STATS["frame_camera"].apply(inputs[0]), atol=1e-3)


def test_color_jitter_and_blur_definitions():
    x = torch.tensor([[[10.0, 200.0]], [[20.0, 100.0]], [[30.0, 50.0]]])  # 3×1×2
    torch.testing.assert_close(color_jitter(x, 1.0, 1.0, 1.0, 255.0), x)
    torch.testing.assert_close(
        color_jitter(x, 2.0, 1.0, 1.0, 255.0)[0, 0], torch.tensor([20.0, 255.0])
    )  # clamped
    gray = 0.2989 * x[0] + 0.587 * x[1] + 0.114 * x[2]
    torch.testing.assert_close(color_jitter(x, 1.0, 1.0, 0.0, 255.0), gray.expand(3, 1, 2))
    torch.testing.assert_close(color_jitter(x, 1.0, 0.0, 1.0, 255.0), gray.mean().expand(3, 1, 2))
    img = torch.zeros(1, 5, 5)
    img[0, 2, 2] = 1.0
    k = gaussian_blur(img, 3)[0]
    g = torch.exp(-torch.tensor([1.0, 0.0, 1.0]) / (2 * 0.8**2))
    g = g / g.sum()
    torch.testing.assert_close(k[1:4, 1:4], g[:, None] * g[None, :])
    assert float(k.sum()) == pytest.approx(1.0)


def test_deterministic_for_a_seed():
    inputs = [torch.randint(0, 256, (3, 30, 40), dtype=torch.uint8) for _ in MODS]
    label = block_label(30, 40)

    def run(seed):
        t = build_train_transform(24, MODS, DELIVER_NORM_STATS, seed=seed, jitter_prob=0.5, blur_prob=0.5)
        return [t(inputs, label) for _ in range(6)]

    a, b, c = run(5), run(5), run(6)
    for (xa, la), (xb, lb) in zip(a, b, strict=True):
        assert torch.equal(la, lb) and all(torch.equal(p, q) for p, q in zip(xa, xb, strict=True))
    assert any(not torch.equal(xa[0], xc[0]) for (xa, _), (xc, _) in zip(a, c, strict=True))
    # seed=None follows torch's seed
    torch.manual_seed(11)
    t1 = build_train_transform(24, MODS, DELIVER_NORM_STATS)
    r1 = t1(inputs, label)
    torch.manual_seed(11)
    r2 = build_train_transform(24, MODS, DELIVER_NORM_STATS)(inputs, label)
    assert torch.equal(r1[1], r2[1]) and torch.equal(r1[0][0], r2[0][0])


class _Repeat(Dataset):
    def __init__(self, transform, n=8):
        self.transform, self.n = transform, n
        self.inputs = [coordinate_inputs(20, 20)[0].to(torch.uint8)]
        self.label = block_label(20, 20)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.transform(self.inputs, self.label)


def test_dataloader_workers_differ_and_runs_repeat():
    t = build_train_transform(16, ("rgb",), DELIVER_NORM_STATS, seed=3)
    t(_Repeat(t).inputs, _Repeat(t).label)  # a call in the main process must not leak into workers

    def run():
        torch.manual_seed(123)
        loader = DataLoader(_Repeat(t), batch_size=1, num_workers=2)
        return [x[0][0] for x, _ in loader]

    first, second = run(), run()
    assert all(torch.equal(p, q) for p, q in zip(first, second, strict=True))
    # identical samples; worker 0 serves 0, 2, 4, 6 and worker 1 serves 1, 3, 5, 7: streams differ
    w0, w1 = first[0::2], first[1::2]
    assert not all(torch.equal(p, q) for p, q in zip(w0, w1, strict=True))
    assert len({tuple(x.flatten()[:50].tolist()) for x in first}) > 4


def test_val_transform_sizes_and_values():
    stats = DELIVER_NORM_STATS
    t = build_val_transform(MODS, stats)
    assert t.output_size(1042, 1042) == (1024, 1024)
    assert t.output_size(1080, 1920) == (1024, 1824)  # short side 1024, long side 1820 -> 1824
    small = build_val_transform(MODS, stats, short_side=32)
    inputs = coordinate_inputs(16, 24)
    label = block_label(16, 24)
    outs, lab = small(inputs, label)
    assert tuple(outs[0].shape) == (3, 32, 64) and tuple(lab.shape) == (32, 64)
    ref = F.interpolate(inputs[1][None], size=(32, 64), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(stats["depth"].invert(outs[1]), ref, atol=1e-3, rtol=0)
    assert set(lab.unique().tolist()) <= set(label.unique().tolist())
    keep = build_val_transform(MODS, stats, short_side=32, resize_label=False)
    assert tuple(keep(inputs, label)[1].shape) == (16, 24)
    ident = build_val_transform(MODS, stats, short_side=None)
    outs, lab = ident(inputs, label)
    torch.testing.assert_close(outs[0], stats["rgb"].apply(inputs[0]))
    assert torch.equal(lab, label)


def test_bad_inputs():
    t = build_train_transform(8, MODS, DELIVER_NORM_STATS)
    inputs = coordinate_inputs(10, 12)
    label = block_label(10, 12)
    with pytest.raises(ValueError, match="built for 4 modalities"):
        t(inputs[:3], label)
    with pytest.raises(ValueError, match=r"'event' has shape \(3, 10, 11\), expected 3×10×12"):
        t(inputs[:2] + [inputs[2][:, :, :11]] + inputs[3:], label)
    with pytest.raises(ValueError, match="'lidar' is None"):
        t(inputs[:3] + [None], label)
    with pytest.raises(ValueError, match=r"no normalisation statistics for modalities \['radar'\]"):
        build_train_transform(8, ("rgb", "radar"), DELIVER_NORM_STATS)
    with pytest.raises(ValueError, match="crop_size"):
        build_train_transform((8,), MODS, DELIVER_NORM_STATS)
    t = build_val_transform(("x",), {"x": {"mean": [0, 0, 0], "std": [1, 1, 1], "scale": 2}})
    assert t.norm_stats["x"] == NormStats(scale=2.0)


def test_crop_without_rescale_is_exact():
    x = torch.randint(0, 256, (3, 10, 12), dtype=torch.uint8)
    label = torch.randint(0, 19, (10, 12))
    outs, lab = resize_crop_pad([x], label, (10, 12), (8, 8), (1, 3), flip=True)
    assert torch.equal(outs[0], x.flip(-1)[:, 1:9, 3:11].float())
    assert torch.equal(lab, label.flip(-1)[1:9, 3:11])


_FROZEN = Path(__file__).parent / "fixtures" / "transform_outputs.npz"
_FROZEN_MODS = {
    "deliver": ("rgb", "depth", "event", "lidar"),
    "muses": ("frame_camera", "lidar", "event_camera"),
}
_FROZEN_STATS = {"deliver": DELIVER_NORM_STATS, "muses": MUSES_NORM_STATS}


def _frozen_calls():
    with np.load(_FROZEN) as z:
        return sorted(k.rsplit("/", 1)[0] for k in z.files if k.endswith("/params"))


@pytest.mark.parametrize("call", _frozen_calls())
def test_outputs_match_the_replaced_transforms(call):
    """Labels identical, 8-bit inputs within one grey level, float inputs within 1e-3, same generator."""
    with np.load(_FROZEN) as z:
        frozen = {k: z[k] for k in z.files}
    params = json.loads(str(frozen[f"{call}/params"]))
    ds, crop = params["dataset"], (20, 24)
    mods, stats = _FROZEN_MODS[ds], _FROZEN_STATS[ds]
    inputs = [torch.from_numpy(frozen[f"inputs/{ds}/{k}"]) for k in range(len(mods))]
    label = torch.from_numpy(frozen[f"inputs/{ds}/label"].astype(np.int64))
    if params["kind"] == "train":
        t = build_train_transform(crop, mods, stats, **params["kw"])
        outs, lab = t(inputs, label, generator=torch.Generator().manual_seed(params["seed"]))
    else:
        outs, lab = build_val_transform(mods, stats, **params["kw"])(inputs, label)
    np.testing.assert_array_equal(lab.numpy(), frozen[f"{call}/label"].astype(np.int64))
    for k, (m, out, x) in enumerate(zip(mods, outs, inputs, strict=True)):
        old = torch.from_numpy(frozen[f"{call}/x{k}"].astype(np.float32))
        new = stats[m].invert(out)
        # one grey level for 8-bit inputs (+ the float16 storage's rounding, <= 1/16), 1e-3 for floats
        tol = 1.0 + 2**-4 if x.dtype == torch.uint8 else 1e-3
        assert new.shape == old.shape
        assert float((new - old).abs().max()) <= tol, f"{call} modality {m}"
