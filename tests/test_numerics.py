"""Numerics under mixed precision: the SGM and the losses stay fp32 and finite under fp16 autocast."""

import torch
from model_utils import rand_inputs, tiny_model

from equiseg.models.losses import cross_entropy, ohem_cross_entropy
from equiseg.models.sgm import sgm_loss

# stage-1 grid of a 1024² crop at batch 2: 2×256×256 = 131072 pixels summed per prototype
P, B, C, H, W = 4, 2, 32, 256, 256


def _big_feats(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(P, B, C, H, W, generator=g) * 3 + 2]


def _big_labels(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (B, H, W), generator=g)
    labels[:, :8] = 255  # some ignored rows
    return labels


def test_fp16_prototype_sum_overflows():
    """The failure mode is real: an fp16 sum over one class's pixels (mean ~2) passes fp16's 65504."""
    feats = _big_feats()[0][0, :, 0].reshape(-1)  # one modality, one channel: 131072 values, mean ~2
    assert feats.sum().item() > torch.finfo(torch.float16).max
    onehot = torch.ones(feats.numel(), 1)
    with torch.autocast("cpu", dtype=torch.float16):
        sums = onehot.T @ feats[:, None]  # what class_prototypes' matmul did under autocast
    assert sums.dtype == torch.float16
    assert not torch.isfinite(sums).all()


def test_sgm_loss_fp32_under_fp16_autocast():
    feats, labels = _big_feats(), _big_labels()
    ref = sgm_loss(feats, labels, 3, generator=torch.Generator().manual_seed(1))
    leaf = feats[0].clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.float16):
        out = sgm_loss([leaf], labels, 3, generator=torch.Generator().manual_seed(1))
    assert out.dtype == torch.float32
    assert torch.isfinite(out) and out > 0
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=0)
    out.backward()
    assert torch.isfinite(leaf.grad).all() and leaf.grad.abs().sum() > 0


def test_sgm_pixel_ablation_and_fp16_inputs_under_autocast():
    """fp16 features (as an fp16 encoder would give) and the pixel-KL ablation are computed in fp32 too."""
    g = torch.Generator().manual_seed(0)
    feats = [(torch.randn(2, 2, 8, 16, 16, generator=g) * 3 + 2).half()]
    labels = torch.randint(0, 3, (2, 16, 16), generator=g)
    for prototype in (True, False):
        with torch.autocast("cpu", dtype=torch.float16):
            out = sgm_loss(feats, labels, 3, prototype=prototype, generator=torch.Generator().manual_seed(0))
        ref = sgm_loss(
            [feats[0].float()], labels, 3, prototype=prototype, generator=torch.Generator().manual_seed(0)
        )
        assert out.dtype == torch.float32 and torch.isfinite(out)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-7)
    with torch.autocast("cpu", dtype=torch.float16):
        assert sgm_loss([feats[0][:1]], labels, 3).dtype == torch.float32  # one modality: fp32 zero


def test_losses_fp32_under_autocast():
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(2, 5, 32, 32, generator=g) * 4).half()
    labels = torch.randint(0, 5, (2, 32, 32), generator=g)
    for fn in (cross_entropy, ohem_cross_entropy):
        with torch.autocast("cpu", dtype=torch.float16):
            out = fn(logits, labels)
        assert out.dtype == torch.float32 and torch.isfinite(out)
        torch.testing.assert_close(out, fn(logits.float(), labels))


def test_tiny_model_compute_loss_under_fp16_autocast():
    model = tiny_model(2)
    inputs = rand_inputs(2, b=2, h=64, w=64)
    labels = torch.randint(0, 5, (2, 64, 64))
    with torch.autocast("cpu", dtype=torch.float16):
        out = model.compute_loss(inputs, labels, generator=torch.Generator().manual_seed(0))
    assert out.loss_sgm.dtype == torch.float32 and out.loss_ce.dtype == torch.float32
    assert torch.isfinite(out.loss_sgm) and out.loss_sgm > 0
    assert torch.isfinite(out.loss)
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
