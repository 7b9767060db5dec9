"""Cost of a model, measured the same way everywhere (``compare``, ``benchmarks/``): parameters, FLOPs of
one forward pass, wall time and throughput.

FLOPs come from ``torch.utils.flop_counter`` plus the CPU flash-attention kernel, which torch 2.13's
registry does not know (so attention would count as free on CPU). A training step is usually quoted as
3× the forward, since the same counter mis-counts grouped-convolution backward (docs/design.md §10).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

__all__ = ["count_params", "forward_flops", "images_per_second", "sync", "timeit"]


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


_EXTRA_OPS = {}
if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
    _EXTRA_OPS[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = _sdpa_cpu_flops


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def forward_flops(model: Callable, inputs: Sequence[torch.Tensor | None]) -> int:
    """FLOPs (multiply-add = 2) of one eval-mode forward pass on ``inputs``."""
    if isinstance(model, nn.Module):
        model.eval()
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_EXTRA_OPS) as fc:
        model(list(inputs))
    return int(fc.get_total_flops())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in ms (``warmup`` calls first, synchronised on CUDA)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    return 1e3 * times[len(times) // 2]


def images_per_second(
    model: nn.Module, inputs: Sequence[torch.Tensor | None], repeats: int = 3, warmup: int = 1
) -> float:
    """Eval-mode inference throughput on ``inputs`` (batch ``B``): ``B / median forward time``."""
    model.eval()
    device = next(iter(model.parameters())).device
    batch = next(x for x in inputs if x is not None).shape[0]
    with torch.inference_mode():
        ms = timeit(lambda: model(list(inputs)), device, repeats, warmup)
    return batch / (ms / 1e3)
