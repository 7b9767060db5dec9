"""Whole / sliding-window / multi-scale / flip inference (equiseg.engine.inference)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

import equiseg
from equiseg.engine import infer_logits, slide_windows, window_counts

K = 5


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny tensors: one intra-op thread is as fast, and avoids stalls when the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _inference_mode():
    with torch.inference_mode():
        yield


@pytest.fixture(scope="module")
def tiny() -> equiseg.EQUISeg:
    torch.manual_seed(0)
    return equiseg.create_model(
        "equiseg_b0",
        num_classes=K,
        modalities=["rgb", "depth"],
        embed_dims=(8, 16, 40, 64),
        depths=(1, 1, 1, 1),
        decoder_dim=32,
        drop_path_rate=0.0,
    ).eval()


def rand(b: int, h: int, w: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, 3, h, w, generator=g) for _ in range(2)]


def int_inputs(b: int, h: int, w: int, seed: int = 0) -> list[torch.Tensor]:
    """Small integers as floats: a per-pixel integer model then computes exactly in float32."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(-8, 9, (b, 3, h, w), generator=g).float() for _ in range(2)]


class PixelModel:
    """Stub whose logit at a pixel depends on that pixel only: a 1×1 conv of the present modalities
    (modality m weighted by m + 1), integer weights. Records the shapes it is called with."""

    def __init__(self, k: int = K, kernel: tuple[int, int] = (1, 1), min_size: int = 32, seed: int = 1):
        g = torch.Generator().manual_seed(seed)
        self.weight = torch.randint(-3, 4, (k, 3, *kernel), generator=g).float()
        self.bias = torch.randint(-3, 4, (k,), generator=g).float()
        self.min_size = min_size
        self.calls: list[list[tuple[int, ...] | None]] = []

    def __call__(self, inputs: list[torch.Tensor | None]) -> torch.Tensor:
        self.calls.append([None if x is None else tuple(x.shape) for x in inputs])
        present = [(m + 1) * x for m, x in enumerate(inputs) if x is not None]
        x = torch.stack(present).sum(0)
        assert min(x.shape[-2:]) >= self.min_size, "inputs must be padded to the minimum size"
        kh, kw = self.weight.shape[-2:]
        return F.conv2d(x, self.weight, self.bias, padding=(kh // 2, kw // 2))


def mmseg_slide(model, inputs, crop: tuple[int, int], stride: tuple[int, int]) -> torch.Tensor:
    """A plain transcription of mmseg's slide_inference (one window at a time), as the reference."""
    x0 = next(x for x in inputs if x is not None)
    b, _, h_img, w_img = x0.shape
    (h_crop, w_crop), (h_stride, w_stride) = crop, stride
    h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
    preds = torch.zeros(b, K, h_img, w_img)
    count = torch.zeros(1, 1, h_img, w_img)
    for hi in range(h_grids):
        for wi in range(w_grids):
            y1, x1 = hi * h_stride, wi * w_stride
            y2, x2 = min(y1 + h_crop, h_img), min(x1 + w_crop, w_img)
            y1, x1 = max(y2 - h_crop, 0), max(x2 - w_crop, 0)
            crops = [None if x is None else x[:, :, y1:y2, x1:x2] for x in inputs]
            preds[:, :, y1:y2, x1:x2] += model(crops)
            count[:, :, y1:y2, x1:x2] += 1
    assert (count == 0).sum() == 0
    return preds / count


# ----------------------------------------------------------------------------- window grid


@pytest.mark.parametrize("length", [1, 20, 31, 32, 45, 64, 70, 100, 1042])
@pytest.mark.parametrize(("crop", "stride"), [(32, 32), (32, 20), (64, 48), (64, 1), (1024, 768)])
def test_windows_cover_and_align(length: int, crop: int, stride: int):
    windows = slide_windows((length, 7), (crop, 7), (stride, 7))
    rows = sorted({(y0, y1) for y0, y1, _, _ in windows})
    assert rows[0][0] == 0 and rows[-1][1] == length  # starts at 0, last window aligned to the border
    assert all(y1 - y0 == min(crop, length) for y0, y1 in rows)  # all windows the same size
    assert len(rows) == len(windows)  # one column of windows: no duplicates
    counts = window_counts((length, 7), (crop, 7), (stride, 7))
    assert counts.shape == (length, 7) and counts.dtype == torch.int64
    assert int(counts.min()) >= 1  # every pixel covered
    ref = torch.zeros(length, dtype=torch.int64)
    for y0, y1 in rows:
        ref[y0:y1] += 1
    assert torch.equal(counts[:, 0], ref)


def test_count_map_is_product_of_axes():
    windows = slide_windows((70, 45), (32, 32), (20, 24))
    ref = torch.zeros(70, 45, dtype=torch.int64)
    for y0, y1, x0, x1 in windows:
        ref[y0:y1, x0:x1] += 1
    assert torch.equal(window_counts((70, 45), 32, (20, 24)), ref)
    assert len(windows) == 3 * 2 and int(ref.min()) >= 1 and int(ref.max()) == 4


def test_grid_rejects_gaps_and_bad_sizes():
    with pytest.raises(ValueError, match="must not exceed crop_size"):
        slide_windows((100, 100), 32, 50)
    with pytest.raises(ValueError, match="positive int"):
        slide_windows((100, 100), (0, 32), 16)


# ----------------------------------------------------------------------------- slide


# The tiny model runs at a few shapes only (64×64 and 32×32, batch 2): oneDNN builds its convolution
# kernels on the first call at each new shape, which costs more than the forward itself.


@pytest.mark.parametrize(("h", "w", "crop"), [(64, 64, 64), (64, 64, (128, 96))])
def test_slide_single_window_equals_whole(tiny, h: int, w: int, crop):
    x = rand(2, h, w)
    whole = infer_logits(tiny, x)
    assert torch.equal(whole, tiny(x))
    slide = infer_logits(tiny, x, mode="slide", crop_size=crop, stride=32)
    assert slide.shape == (2, K, h, w) and torch.equal(slide, whole)


@pytest.mark.parametrize(("h", "w"), [(70, 45), (64, 64), (97, 33)])
@pytest.mark.parametrize("window_batch", [1, 4])
def test_slide_overlap_per_pixel_model_equals_whole_exactly(h: int, w: int, window_batch: int):
    model = PixelModel()
    x = int_inputs(2, h, w)
    whole = infer_logits(model, x)
    slide = infer_logits(model, x, mode="slide", crop_size=32, stride=(20, 12), window_batch=window_batch)
    assert len(slide_windows((h, w), 32, (20, 12))) > 1
    assert torch.equal(slide, whole)
    n_windows = len(slide_windows((h, w), 32, (20, 12)))
    assert len(model.calls) == 1 + math.ceil(n_windows / window_batch)
    assert model.calls[1][0] == (2 * min(window_batch, n_windows), 3, 32, 32)  # windows stacked in batch


def test_slide_matches_mmseg_reference_on_tiny_model(tiny):
    x = rand(2, 70, 45, seed=3)
    ref = mmseg_slide(tiny, x, (32, 32), (24, 20))
    out1 = infer_logits(tiny, x, mode="slide", crop_size=32, stride=(24, 20), num_classes=K)
    out3 = infer_logits(tiny, x, mode="slide", crop_size=32, stride=(24, 20), window_batch=3)
    assert out1.shape == (2, K, 70, 45)
    torch.testing.assert_close(out1, ref, rtol=0, atol=0)
    torch.testing.assert_close(out3, ref, rtol=1e-5, atol=1e-5)  # other batch size: other kernels


def test_inputs_smaller_than_min_size_are_padded_and_cropped_back(tiny):
    model = PixelModel()
    x = int_inputs(2, 20, 28)
    expected = PixelModel(min_size=1)(x)
    assert torch.equal(infer_logits(model, x), expected)
    assert model.calls[-1][0] == (2, 3, 32, 32)
    # slide on a 20×60 image: 20×32 windows, each padded to 32×32
    x = int_inputs(1, 20, 60)
    out = infer_logits(model, x, mode="slide", crop_size=32, stride=16)
    assert torch.equal(out, PixelModel(min_size=1)(x))
    assert all(call[0] == (1, 3, 32, 32) for call in model.calls[-3:])
    for mode in ("whole", "slide"):
        y = infer_logits(tiny, rand(2, 20, 28), mode=mode, crop_size=16, stride=8)
        assert y.shape == (2, K, 20, 28) and bool(torch.isfinite(y).all())


# ----------------------------------------------------------------------------- flip / multi-scale


def test_flip_symmetric_model_equals_no_flip(tiny):
    model = PixelModel()  # a per-pixel model commutes with mirroring
    x = int_inputs(2, 40, 37)
    plain = infer_logits(model, x)
    flipped = infer_logits(model, x, flip=True)
    torch.testing.assert_close(flipped.softmax(1), plain.softmax(1))
    torch.testing.assert_close(flipped.exp().sum(1), torch.ones(2, 40, 37))  # log of probabilities
    y = infer_logits(tiny, rand(2, 64, 64), flip=True)
    assert y.shape == (2, K, 64, 64) and bool(torch.isfinite(y).all())


def test_flip_unflips_the_output():
    model = PixelModel(kernel=(1, 3))  # looks at horizontal neighbours: not mirror-symmetric
    x = int_inputs(1, 32, 40)
    out = infer_logits(model, x, flip=True)
    p = model(x).softmax(1)
    p_flip = model([t.flip(-1) for t in x]).flip(-1).softmax(1)
    assert not torch.allclose(p, p_flip)
    torch.testing.assert_close(out.softmax(1), (p + p_flip) / 2)


def test_single_scale_equals_whole_softmax(tiny):
    x = rand(2, 64, 64)
    out = infer_logits(tiny, x, scales=(1.0,))
    torch.testing.assert_close(out.softmax(1), tiny(x).softmax(1), rtol=0, atol=0)


def test_multi_scale_matches_manual_average():
    model = PixelModel(kernel=(3, 3))
    x = int_inputs(2, 70, 45)
    out = infer_logits(model, x, scales=(0.75, 1.0, 1.25))
    probs = []
    for s in (0.75, 1.0, 1.25):
        size = (round(70 * s), round(45 * s))
        z = model([F.interpolate(t, size=size, mode="bilinear", align_corners=False) for t in x])
        probs.append(F.interpolate(z, size=(70, 45), mode="bilinear", align_corners=False).softmax(1))
    torch.testing.assert_close(out.softmax(1), torch.stack(probs).mean(0))
    assert [c[0][-2:] for c in model.calls[:3]] == [(52, 34), (70, 45), (88, 56)]


def test_multi_scale_align_rounds_sides_up():
    model = PixelModel()
    out = infer_logits(model, int_inputs(1, 70, 45), scales=(0.75, 1.25), flip=True, align=32)
    assert out.shape == (1, K, 70, 45)
    assert [c[0][-2:] for c in model.calls] == [(64, 64), (64, 64), (96, 64), (96, 64)]


def test_multi_scale_flip_tiny_model(tiny):
    x = rand(2, 64, 64)  # scales give 48×48, 64×64, 80×80 images, all run as 32×32 windows
    out = infer_logits(tiny, x, mode="slide", scales=(0.75, 1.0, 1.25), flip=True, crop_size=32, stride=24)
    assert out.shape == (2, K, 64, 64) and out.dtype == torch.float32
    torch.testing.assert_close(out.exp().sum(1), torch.ones(2, 64, 64))


# ----------------------------------------------------------------------------- None, mode, errors


def test_none_inputs_pass_through(tiny):
    rgb = rand(2, 64, 64)[0]
    x = [rgb, None]
    assert torch.equal(infer_logits(tiny, x), tiny(x))
    assert torch.equal(infer_logits(tiny, x, mode="slide", crop_size=64, stride=32), tiny(x))
    y = infer_logits(tiny, [None, rgb], mode="slide", crop_size=32, stride=24, scales=(0.75, 1.0), flip=True)
    assert y.shape == (2, K, 64, 64)
    model = PixelModel()
    out = infer_logits(
        model, [None, rgb], mode="slide", crop_size=32, stride=24, scales=(1.0, 1.5), flip=True
    )
    assert out.shape == (2, K, 64, 64)
    assert all(call[0] is None and call[1] is not None for call in model.calls)
    assert infer_logits(model, [None, rgb]).shape == (2, K, 64, 64)


def test_model_mode_is_left_alone(tiny):
    x = rand(2, 64, 64)
    model = copy.deepcopy(tiny).train()  # a copy: train-mode BatchNorm updates its running statistics
    infer_logits(model, x, mode="slide", crop_size=32, stride=32, flip=True)
    assert all(m.training for m in model.modules())
    infer_logits(tiny, x, scales=(0.5, 1.0), flip=True)
    assert not any(m.training for m in tiny.modules())


def test_errors_name_the_problem(tiny):
    x = rand(2, 64, 64)
    with pytest.raises(ValueError, match="choose from whole, slide"):
        infer_logits(tiny, x, mode="sliding")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must not exceed crop_size"):
        infer_logits(tiny, x, mode="slide", crop_size=32, stride=48)
    with pytest.raises(ValueError, match="scales"):
        infer_logits(tiny, x, scales=())
    with pytest.raises(ValueError, match="scales"):
        infer_logits(tiny, x, scales=(0.0,))
    with pytest.raises(ValueError, match="at least one modality"):
        infer_logits(tiny, [None, None])
    with pytest.raises(ValueError, match="share batch size"):
        infer_logits(tiny, [x[0], rand(2, 64, 32)[0]])
    with pytest.raises(ValueError, match="num_classes=7"):
        infer_logits(tiny, x, num_classes=7)
    with pytest.raises(ValueError, match="window_batch"):
        infer_logits(tiny, x, mode="slide", window_batch=0)
