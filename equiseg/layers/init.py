"""Weight initialisation of SegFormer, written out (no timm).

Linear: truncated normal (std 0.02), zero bias. LayerNorm/BatchNorm: weight 1, bias 0.
Conv: normal with std sqrt(2 / fan_out), ``fan_out = k_h * k_w * out_channels / groups``. The
reference implementations compute ``fan_out //= groups`` as a bare expression and drop the result,
so their depth-wise convolutions are initialised C times too small; here it is assigned.
"""

from __future__ import annotations

import math

import torch
from torch import nn


@torch.no_grad()
def trunc_normal_(tensor: torch.Tensor, std: float = 0.02, a: float = -2.0, b: float = 2.0) -> torch.Tensor:
    """Fill ``tensor`` from N(0, std²) truncated to [a, b] (absolute bounds, like timm)."""
    return nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=a, b=b)


@torch.no_grad()
def init_weights(module: nn.Module) -> None:
    """SegFormer initialisation for one module; use with ``model.apply(init_weights)``."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d, nn.GroupNorm)):
        if module.weight is not None:
            nn.init.ones_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.Conv2d, nn.Conv1d)):
        fan_out = math.prod(module.kernel_size) * module.out_channels
        fan_out = fan_out // module.groups
        module.weight.normal_(0.0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)
