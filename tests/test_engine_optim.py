"""AdamW param groups and the warm-up + poly schedule (docs/design.md §3.1) against hand-computed values."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from equiseg.engine import WarmupPolyLR, build_optimizer, lr_at

# Schedule used below: base_lr 1, T = 110 iterations, W = 10 warm-up iterations, r = 0.1, p = 0.9.
SCHED = {"max_iters": 110, "warmup_iters": 10, "warmup_ratio": 0.1, "power": 0.9}
HAND = {
    0: 0.1,  # warm-up start: r · lr = 0.1
    5: 0.55,  # 0.1 + 0.9 · 5/10 = 0.55
    9: 0.91,  # 0.1 + 0.9 · 9/10 = 0.91
    10: 1.0,  # end of warm-up: (1 - 0/100)^0.9 = 1
    35: 0.7718895,  # (1 - 25/100)^0.9 = 0.75^0.9 = exp(0.9 · -0.287682) = exp(-0.258914) = 0.771890
    60: 0.5358867,  # (1 - 50/100)^0.9 = 0.5^0.9 = exp(0.9 · -0.693147) = exp(-0.623832) = 0.535887
    109: 0.0158489,  # (1 - 99/100)^0.9 = 0.01^0.9 = 10^-1.8 = 0.0158489
    110: 0.0,  # end: (1 - 100/100)^0.9 = 0
    500: 0.0,  # past the end: stays at min_lr
}


@pytest.mark.parametrize(("it", "expected"), sorted(HAND.items()))
def test_lr_at_hand_values(it: int, expected: float) -> None:
    assert lr_at(it, base_lr=1.0, **SCHED) == pytest.approx(expected, abs=1e-7)


def test_lr_at_paper_recipe_and_min_lr() -> None:
    # Paper recipe base 6e-5: first iteration 6e-6.
    assert lr_at(0, base_lr=6e-5, **SCHED) == pytest.approx(6e-6, rel=1e-12)
    # With min_lr 0.01: 0.01 + (1 - 0.01) · 0.5^0.9 = 0.01 + 0.99 · 0.5358867 = 0.5405278
    assert lr_at(60, base_lr=1.0, min_lr=0.01, **SCHED) == pytest.approx(0.5405278, abs=1e-7)
    assert lr_at(110, base_lr=1.0, min_lr=0.01, **SCHED) == pytest.approx(0.01)
    # No warm-up: plain poly from base_lr. (1 - 50/100)^1 = 0.5
    assert lr_at(50, base_lr=1.0, max_iters=100, warmup_iters=0, power=1.0) == pytest.approx(0.5)


def test_lr_at_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        lr_at(-1, base_lr=1.0, **SCHED)
    with pytest.raises(ValueError):
        lr_at(0, base_lr=1.0, max_iters=10, warmup_iters=10)


def test_scheduler_matches_lr_at_per_group_and_resumes() -> None:
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD([{"params": [model.weight], "lr": 1.0}, {"params": [model.bias], "lr": 0.25}])
    sched = WarmupPolyLR(opt, **SCHED)
    seen = []
    for it in range(120):
        lrs = [g["lr"] for g in opt.param_groups]
        assert lrs == [lr_at(it, base_lr=b, **SCHED) for b in (1.0, 0.25)], it
        seen.append(lrs[0])
        opt.step()
        sched.step()
        if it == 36:
            # weights_only round trip of the state, into a fresh optimiser + scheduler
            buf = io.BytesIO()
            torch.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, buf)
            buf.seek(0)
            state = torch.load(buf, weights_only=True)
    assert seen[0] == pytest.approx(0.1) and seen[10] == 1.0 and seen[110] == 0.0

    model2 = nn.Linear(3, 2)
    opt2 = torch.optim.SGD([{"params": [model2.weight], "lr": 1.0}, {"params": [model2.bias], "lr": 0.25}])
    sched2 = WarmupPolyLR(opt2, **SCHED)
    opt2.load_state_dict(state["opt"])
    sched2.load_state_dict(state["sched"])
    assert sched2.last_epoch == 37
    assert [g["lr"] for g in opt2.param_groups] == [lr_at(37, base_lr=b, **SCHED) for b in (1.0, 0.25)]
    opt2.step()
    sched2.step()
    assert opt2.param_groups[0]["lr"] == lr_at(38, base_lr=1.0, **SCHED)


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.ln = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 4)
        self.layer_scale = nn.Parameter(1e-2 * torch.ones(8))  # (C,) layer-scale vector
        self.pos_embed = nn.Parameter(torch.zeros(4, 8))  # 2-D, forced to no decay by name
        self.frozen = nn.Parameter(torch.zeros(4, 4), requires_grad=False)


def test_param_groups_no_decay_on_1d() -> None:
    model = _Tiny()
    opt = build_optimizer(model, lr=6e-5, weight_decay=0.01, no_decay_keys=("pos_embed",))
    assert isinstance(opt, torch.optim.AdamW)
    groups = {g["name"]: g for g in opt.param_groups}
    assert set(groups["decay"]["param_names"]) == {"conv.weight", "fc.weight"}
    assert set(groups["no_decay"]["param_names"]) == {
        "conv.bias",
        "bn.weight",
        "bn.bias",
        "ln.weight",
        "ln.bias",
        "fc.bias",
        "layer_scale",
        "pos_embed",
    }
    assert groups["decay"]["weight_decay"] == 0.01
    assert groups["no_decay"]["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in groups["decay"]["params"])
    for g in opt.param_groups:
        assert g["lr"] == 6e-5 and g["betas"] == (0.9, 0.999)
    # every trainable parameter exactly once; the frozen one nowhere
    in_opt = [p for g in opt.param_groups for p in g["params"]]
    assert len(in_opt) == len({id(p) for p in in_opt}) == 10
    assert all(p is not model.frozen for p in in_opt)


def test_no_decay_group_really_not_decayed() -> None:
    model = _Tiny()
    opt = build_optimizer(model, lr=0.1, weight_decay=0.5)
    ls, w = model.layer_scale.detach().clone(), model.fc.weight.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p) if p.requires_grad else None
    opt.step()  # zero gradients: only decoupled weight decay can move a parameter
    assert torch.equal(model.layer_scale, ls)
    assert torch.allclose(model.fc.weight, w * (1 - 0.1 * 0.5))
