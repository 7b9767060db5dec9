"""Run records: the small trace a finished ``ablate`` / ``compare`` / ``study`` run leaves, so that a study
too long for one sitting is finished over several and nothing finished is computed twice.

A record is a copy of the run's own result (``row.json`` of ``ablate``, ``result.json`` of ``compare``),
its resolved ``config.yaml``, its training log (``log.jsonl``) and the JSON of its robustness benchmark
and contribution analysis -- never a checkpoint (kilobytes, meant to be committed). Records live in a
folder tree chosen by the caller (``--records DIR``) that mirrors the runs' own folders under ``--out``.

Before a run is trained, :func:`find_record` looks through the records for one whose resolved config
equals the run's (``work_dir`` aside, read through today's schema: see
:func:`equiseg.engine.rundir.config_matches`) and that was scored on the same number of samples; the
caller then uses it instead of training (and says so: ``reused_from``).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from equiseg.engine.rundir import config_matches

__all__ = ["RECORD_NAMES", "find_record", "machine_info", "save_record"]

# the file that makes a folder a record, and the key of its evaluation-sample count
RECORD_NAMES = {"row.json": "num_eval_samples", "result.json": "num_samples"}
_SMALL_FILES = ("config.yaml", "log.jsonl", "robustness/*.json", "analysis/*.json")


def machine_info() -> dict[str, Any]:
    """Where a run was measured: CPU model, cores, torch threads and version, CUDA device if used."""
    from equiseg.engine.precision import cpu_model_name

    info: dict[str, Any] = {
        "cpu": cpu_model_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
    return info


def save_record(work: str | Path, dest: str | Path, name: str) -> Path:
    """Copy run folder ``work``'s record file ``name`` and its small JSON/log files to ``dest``."""
    work, dest = Path(work), Path(dest)
    if name not in RECORD_NAMES:
        raise ValueError(f"record file must be one of {', '.join(RECORD_NAMES)}, got {name!r}")
    source = json.loads((work / name).read_text()).get("reused_from")
    if source and Path(source).resolve() == dest.resolve():
        return dest / name  # the run was taken from this very record: keep the record, not the reuse
    dest.mkdir(parents=True, exist_ok=True)
    for pattern in _SMALL_FILES:
        for src in sorted(work.glob(pattern)):
            target = dest / src.relative_to(work)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
    # the record file last: a folder holding it is complete
    shutil.copyfile(work / name, dest / name)
    return dest / name


def find_record(
    roots: Iterable[str | Path], cfg: Any, num_samples: int, name: str
) -> dict[str, Any] | None:
    """The first record ``name`` under ``roots`` (searched recursively, in sorted order) made with
    ``cfg`` (``work_dir`` aside) and scored on ``num_samples`` samples; it carries ``reused_from`` (the
    record's folder). Records that are themselves reuses are skipped (no chains)."""
    key = RECORD_NAMES[name]
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        for path in sorted(root.rglob(name)):
            try:
                rec = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue  # a record being written, or not ours: never reuse what cannot be read
            if rec.get("reused_from") or rec.get(key) != num_samples:
                continue
            if config_matches(rec.get("config"), cfg, ignore=("work_dir",)):
                return {**rec, "reused_from": str(path.parent)}
    return None
