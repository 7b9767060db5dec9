"""Thin helpers over ``torch.distributed`` for DDP training launched with ``torchrun`` (docs/design.md §3.5).

``torchrun --standalone --nproc_per_node=K -m equiseg train ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them and joins the
process group with NCCL on CUDA and gloo on CPU. Without those variables (or with ``WORLD_SIZE=1``) it
does nothing and every helper here degrades to the single-process no-op, so the same training code runs
either way. Rank 0 logs and saves.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistInfo",
    "agree_any",
    "all_gather_objects",
    "all_reduce_sum",
    "broadcast_error",
    "barrier",
    "cleanup",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "maybe_convert_sync_bn",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job.

    Attributes:
        rank: Global rank.
        local_rank: Rank on this machine (selects the GPU).
        world_size: Number of processes.
        device: The device this process should use.
        backend: ``"nccl"``, ``"gloo"``, or ``None`` when not distributed.
    """

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str | None

    @property
    def distributed(self) -> bool:
        """Whether a process group with more than one process is in use."""
        return self.backend is not None and self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from exc


def is_distributed() -> bool:
    """Whether ``torch.distributed`` is initialised (with any world size)."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """Global rank, 0 when not distributed."""
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """Number of processes, 1 when not distributed."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on rank 0 (and in a single process): the one that logs and saves."""
    return get_rank() == 0


def init_distributed(
    device: str | torch.device | None = None,
    backend: str | None = None,
    timeout_s: float = 1800.0,
) -> DistInfo:
    """Join the process group described by torchrun's environment variables, if any.

    Args:
        device: ``"cuda"``, ``"cpu"`` or ``None`` (CUDA when available). On CUDA the process uses GPU
            ``LOCAL_RANK``.
        backend: Override the backend (default ``"nccl"`` on CUDA, ``"gloo"`` on CPU).
        timeout_s: Collective timeout.

    Returns:
        The :class:`DistInfo` of this process. When ``WORLD_SIZE`` is unset or 1, no process group is
        created and ``backend`` is ``None``. Calling it again after a successful init returns the same
        information without re-initialising.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but torch.cuda.is_available() is False")
        if dev.index is None:
            dev = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    if world_size <= 1 and not is_distributed():
        return DistInfo(rank=0, local_rank=0, world_size=1, device=dev, backend=None)
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank} is outside [0, WORLD_SIZE={world_size})")
    if backend is None:
        backend = "nccl" if dev.type == "cuda" else "gloo"
    if not is_distributed():
        for var in ("MASTER_ADDR", "MASTER_PORT"):
            if var not in os.environ:
                raise RuntimeError(
                    f"WORLD_SIZE={world_size} but {var} is not set; launch with "
                    "`torchrun --standalone --nproc_per_node=K ...`"
                )
        kwargs = {}
        if backend == "nccl":
            kwargs["device_id"] = dev  # binds the communicator to this GPU eagerly
        dist.init_process_group(
            backend=backend,
            init_method="env://",
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout_s),
            **kwargs,
        )
    return DistInfo(
        rank=dist.get_rank(),
        local_rank=local_rank,
        world_size=dist.get_world_size(),
        device=dev,
        backend=dist.get_backend(),
    )


def barrier() -> None:
    """Wait for every rank; a no-op when not distributed."""
    if is_distributed() and get_world_size() > 1:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks in place and return it; returns it unchanged when not distributed.

    The tensor must live where the backend works (CPU for gloo, the rank's GPU for NCCL).
    """
    if is_distributed() and get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def agree_any(flag: torch.Tensor) -> bool:
    """Whether ``flag`` (a 0-d bool/number tensor on this rank's device) is true on *any* rank.

    One all-reduce (MAX) plus the one host sync the caller needed anyway, so every rank takes the same
    branch after it -- e.g. all stop together on a non-finite loss instead of one rank raising while the
    others wait in the gradient all-reduce until the timeout. Single process: ``bool(flag)``.
    """
    value = flag.detach().to(torch.float32).reshape(())
    if is_distributed() and get_world_size() > 1:
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def all_gather_objects(obj: object) -> list[object]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in a single process. For rare paths
    (error reports), not the hot loop."""
    if not (is_distributed() and get_world_size() > 1):
        return [obj]
    out: list[object] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_error(message: str | None) -> str | None:
    """Share rank 0's verdict of a check only rank 0 can make (e.g. on the run folder): returns rank 0's
    ``message`` on every rank (None: the check passed). A no-op in a single process."""
    if not (is_distributed() and get_world_size() > 1):
        return message
    box = [message if get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def cleanup() -> None:
    """Leave the process group (idempotent)."""
    if is_distributed():
        dist.destroy_process_group()


def maybe_convert_sync_bn(model: nn.Module, device: str | torch.device) -> nn.Module:
    """Convert BatchNorm layers to ``SyncBatchNorm`` for multi-GPU CUDA training, else return ``model``.

    SyncBatchNorm has no CPU implementation, and with one process it only adds overhead, so CPU (gloo)
    runs and single-process runs keep plain BatchNorm. Call before wrapping the model in DDP.
    """
    if torch.device(device).type == "cuda" and is_distributed() and get_world_size() > 1:
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model
