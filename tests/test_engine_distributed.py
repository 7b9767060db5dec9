"""Distributed helpers: a real 2-process gloo job all-reduces SegMetrics (docs/design.md §5: matrix all-reduced)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from equiseg.engine import (
    SegMetrics,
    all_reduce_sum,
    barrier,
    cleanup,
    get_rank,
    get_world_size,
    init_distributed,
    is_distributed,
    is_main_process,
    maybe_convert_sync_bn,
)

K = 6
WORLD = 2


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Eight deterministic (pred, target) batches, with some ignored pixels."""
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(8):
        target = torch.randint(0, K + 1, (2, 9, 11), generator=g)
        target[target == K] = 255
        pred = torch.randint(0, K, (2, 9, 11), generator=g)
        out.append((pred, target))
    return out


def _worker(rank: int, port: int, out_dir: str) -> None:
    # What torchrun would set.
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    info = init_distributed(device="cpu", timeout_s=60)
    try:
        assert info.backend == "gloo" and info.distributed and info.world_size == WORLD
        assert info.rank == rank == get_rank() and get_world_size() == WORLD
        assert is_main_process() == (rank == 0) == info.is_main
        assert init_distributed(device="cpu") == info  # idempotent

        metrics = SegMetrics(K)
        for pred, target in _batches()[rank::WORLD]:  # each rank scores its shard
            metrics.update(pred, target)
        local = metrics.matrix.clone()
        metrics.all_reduce()
        try:
            metrics.all_reduce()
            raise AssertionError("a second all_reduce must be refused")
        except RuntimeError:
            pass

        total = all_reduce_sum(torch.tensor([rank + 1.0]))
        bn_model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
        assert maybe_convert_sync_bn(bn_model, "cpu") is bn_model  # no SyncBatchNorm on CPU
        barrier()
        torch.save(
            {
                "local": local,
                "reduced": metrics.matrix.clone(),
                "result": metrics.compute("reference"),
                "sum": total,
            },
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        cleanup()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_two_process_gloo_all_reduce_equals_single_process(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)

    single = SegMetrics(K)
    for pred, target in _batches():
        single.update(pred, target)

    outs = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    assert not torch.equal(outs[0]["local"], single.matrix)  # each rank alone saw only half
    assert torch.equal(outs[0]["local"] + outs[1]["local"], single.matrix)
    for out in outs:
        assert torch.equal(out["reduced"], single.matrix)
        assert out["result"] == single.compute("reference")
        assert out["sum"].tolist() == [3.0]  # 1 + 2


def test_single_process_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    info = init_distributed(device="cpu")
    assert info.world_size == 1 and info.rank == 0 and info.backend is None and not info.distributed
    assert not is_distributed() and get_rank() == 0 and get_world_size() == 1 and is_main_process()
    t = torch.tensor([2.0])
    assert all_reduce_sum(t) is t and t.tolist() == [2.0]
    barrier()
    cleanup()
    model = nn.BatchNorm2d(3)
    assert maybe_convert_sync_bn(model, "cpu") is model


def test_bad_environment_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        init_distributed(device="cpu")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(RuntimeError, match="MASTER_ADDR"):
        init_distributed(device="cpu")
