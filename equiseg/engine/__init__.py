"""Training and evaluation engine: metrics, optimiser and schedule, checkpoints, distributed helpers."""

from equiseg.engine.checkpoint import (
    CheckpointError,
    CorruptCheckpointError,
    DiskFullError,
    UnsafeCheckpointError,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from equiseg.engine.distributed import (
    DistInfo,
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
from equiseg.engine.metrics import CONVENTIONS, SegMetrics
from equiseg.engine.optim import WarmupPolyLR, build_optimizer, lr_at, param_groups
from equiseg.engine.seeding import seed_everything

__all__ = [
    "CONVENTIONS",
    "CheckpointError",
    "CorruptCheckpointError",
    "DiskFullError",
    "DistInfo",
    "SegMetrics",
    "UnsafeCheckpointError",
    "WarmupPolyLR",
    "all_reduce_sum",
    "barrier",
    "build_optimizer",
    "capture_rng_state",
    "cleanup",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "load_checkpoint",
    "lr_at",
    "maybe_convert_sync_bn",
    "param_groups",
    "restore_rng_state",
    "save_checkpoint",
    "seed_everything",
]
from equiseg.engine.inference import INFERENCE_MODES, infer_logits, slide_windows, window_counts  # noqa: E402
from equiseg.engine.rundir import RunDirError, RunLock  # noqa: E402

__all__ += ["INFERENCE_MODES", "RunDirError", "RunLock", "infer_logits", "slide_windows", "window_counts"]
