"""Run records: the small trace a finished ``ablate`` / ``compare`` / ``study`` run leaves, so that a study
too long for one sitting is finished over several and nothing finished is computed twice.

A record is a copy of the run's own result (``row.json`` of ``ablate``, ``result.json`` of ``compare``),
its resolved ``config.yaml``, its training log (``log.jsonl``) and the JSON of its robustness benchmark
and contribution analysis -- never a checkpoint (kilobytes, meant to be committed). Records live in a
folder tree chosen by the caller (``--records DIR``) that mirrors the runs' own folders under ``--out``.

**Training and scoring.** A run's resolved config says how it was trained and how it was scored; the
scoring part is :data:`SCORING_KEYS` (the val split and its resize, per-case tables, the ``eval``
section: inference mode, scales, flip, precision, metric convention). Together with the number of val
samples scored and the precision that actually ran it is the run's *scoring* (:func:`scoring_of`). A
finished run is reused only when both its training config (``work_dir`` aside, read through today's
schema: see :func:`equiseg.engine.rundir.config_differences`) and its scoring are the ones asked for,
so one table never mixes numbers computed two ways:

* :func:`finished_record` -- the run's own folder: a run trained another way is an error (use another
  output folder); one trained the same way but scored another way is reported as stale, and the
  caller re-scores its checkpoint instead of training it again.
* :func:`find_record` -- a record tree (no checkpoints): only a record matching in both is taken; the
  caller says so (``reused_from``).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from equiseg.engine.rundir import config_differences
from equiseg.utils import read_json_record

__all__ = [
    "RECORD_NAMES",
    "SCORING_KEYS",
    "FinishedRun",
    "check_run_folder",
    "find_record",
    "finished_record",
    "machine_info",
    "run_checkpoint",
    "save_record",
    "scoring_differences",
    "scoring_of",
    "set_aside",
]

# the file that makes a folder a record, and the key of its evaluation-sample count
RECORD_NAMES = {"row.json": "num_eval_samples", "result.json": "num_samples"}
# Keys of a resolved config that say only how a trained network is scored: a run differing from the
# one asked for in these alone is the same training, re-scored rather than retrained.
SCORING_KEYS = ("data.val_split", "data.val_short_side", "data.val_align", "data.cases", "eval")
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


def scoring_of(cfg: Any, num_samples: int | None) -> dict[str, Any]:
    """How a run under ``cfg`` is scored on ``num_samples`` val samples: ``split``, ``num_samples``,
    ``val_resize``, ``inference`` (:func:`~equiseg.engine.inference.inference_record`), the requested
    ``precision`` and the metric ``convention``."""
    from equiseg.engine.inference import inference_record

    return {
        "split": cfg.data.val_split,
        "num_samples": num_samples,
        "val_resize": {"short_side": cfg.data.val_short_side, "align": cfg.data.val_align},
        "inference": inference_record(cfg.eval),
        "precision": cfg.eval.precision,
        "convention": cfg.eval.convention,
    }


def scoring_differences(
    rec: Mapping[str, Any], name: str, cfg: Any, num_samples: int, device: Any = None
) -> list[str]:
    """How record ``rec`` (file ``name``) was scored otherwise than ``cfg`` on ``num_samples`` samples
    asks: one ``"what: recorded, asked"`` entry per difference; empty when it can be reused as it is.

    Besides the config's scoring keys, the precision that ran (``rec["precision"]``) must be one
    ``cfg.eval.precision`` gives here: with ``auto``, a machine without fast bf16 gives fp32 (where
    bf16 is fast, the model's own probe decides, which needs the model: either is accepted). Records
    written before runs recorded their precision are judged by their config alone."""
    from equiseg.config import load_experiment
    from equiseg.engine.precision import resolve_precision

    try:
        saved = load_experiment(dict(rec.get("config") or {}))
    except (ValueError, TypeError, KeyError):
        return ["config: unreadable"]
    have = scoring_of(saved, rec.get(RECORD_NAMES[name]))
    want = scoring_of(cfg, num_samples)
    diffs = [f"{key}: {have[key]} recorded, {want[key]} asked" for key in want if have[key] != want[key]]
    ran = rec.get("precision")
    if ran is not None and not diffs:
        asked = cfg.eval.precision
        here = asked if asked != "auto" else resolve_precision("auto", device or "cpu")
        if ran != here and not (asked == "auto" and here == "bf16"):
            diffs.append(f"precision that ran: {ran} recorded, {here} here")
    return diffs


@dataclass
class FinishedRun:
    """A finished run found in its own folder: its ``record`` and how its scoring differs from the one
    asked for (``stale``; empty: reuse it as it is)."""

    record: dict[str, Any]
    stale: list[str] = field(default_factory=list)


def finished_record(path: Path, cfg: Any, num_samples: int, *, device: Any = None) -> FinishedRun | None:
    """The finished run whose record is ``path`` (``row.json`` of ``ablate``, ``result.json`` of
    ``compare``), None when there is none.

    Raises:
        ValueError: the record cannot be read (naming the file), or the run was trained with another
            config than ``cfg`` (the differing keys named): a study never mixes runs of two settings.
    """
    path = Path(path)
    if not path.is_file():
        return None
    rec = read_json_record(path, required_keys=("config",))
    differ = config_differences(rec.get("config"), cfg, ignore=("work_dir", *SCORING_KEYS))
    if differ:
        shown = ", ".join(differ[:8]) + (" ..." if len(differ) > 8 else "")
        raise ValueError(
            f"{path}: this run was trained with another config (differing: {shown}); use another output "
            f"folder, or move {path.parent} away to train it anew"
        )
    return FinishedRun(rec, scoring_differences(rec, path.name, cfg, num_samples, device))


def find_record(
    roots: Iterable[str | Path], cfg: Any, num_samples: int, name: str, *, device: Any = None
) -> dict[str, Any] | None:
    """The first record ``name`` under ``roots`` (searched recursively, in sorted order) trained with
    ``cfg`` (``work_dir`` aside) and scored as ``cfg`` asks on ``num_samples`` samples (see
    :func:`scoring_differences`); it carries ``reused_from`` (the record's folder). Records that are
    themselves reuses are skipped (no chains)."""
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        for path in sorted(root.rglob(name)):
            try:
                rec = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue  # a record being written, or not ours: never reuse what cannot be read
            if not isinstance(rec, dict) or rec.get("reused_from"):
                continue
            if config_differences(rec.get("config"), cfg, ignore=("work_dir", *SCORING_KEYS)):
                continue
            if not scoring_differences(rec, name, cfg, num_samples, device):
                return {**rec, "reused_from": str(path.parent)}
    return None


def run_checkpoint(work: Path) -> Path | None:
    """The checkpoint a run in ``work`` is scored with: ``best.pt`` (best validation mIoU, the practice
    of published numbers), else ``last.pt``; None when there is neither."""
    for name in ("best.pt", "last.pt"):
        if (Path(work) / name).is_file():
            return Path(work) / name
    return None


def check_run_folder(
    work: Path, name: str, cfg: Any, num_samples: int, *, reuse: bool, device: Any = None
) -> None:
    """Check a run folder of ``ablate`` / ``compare`` before anything trains, so that a conflict stops
    the command at once rather than after the runs before it.

    With ``reuse`` (``compare``; ``ablate --resume``; ``study``) a finished run there (its record
    ``name``) must have been trained with ``cfg`` (:func:`finished_record`), and an unfinished one
    (``last.pt``) with a config a resume may continue (its ``config.yaml`` differs at most in
    :data:`~equiseg.engine.rundir.SAFE_RESUME_KEYS`, as the trainer checks). Without it, the folder may
    hold neither a finished run nor an unfinished one with a checkpoint: reusing, continuing or
    replacing it would be a choice nobody made. A folder holding only the start of a run that died
    before its first checkpoint (``config.yaml``, ``log.jsonl``) is fine either way: the run starts
    afresh and those files are moved aside (``<folder>.replaced-<time>/``), never deleted.

    Raises:
        ValueError: naming the folder and what to do.
    """
    from equiseg.config import load_yaml
    from equiseg.engine.rundir import SAFE_RESUME_KEYS, RunDirError

    work = Path(work)
    if reuse:
        if (
            finished_record(work / name, cfg, num_samples, device=device) is None
            and (work / "last.pt").is_file()
        ):
            # an unfinished run will be resumed: its config must be one a resume may continue
            try:
                saved = load_yaml(work / "config.yaml")
            except (OSError, ValueError):
                return  # the trainer's own check on the checkpoint decides
            differ = config_differences(saved, cfg, ignore=SAFE_RESUME_KEYS)
            if differ:
                shown = ", ".join(differ[:8]) + (" ..." if len(differ) > 8 else "")
                raise RunDirError(
                    f"{work} holds an unfinished run (last.pt) trained with another config (differing: "
                    f"{shown}); use another output folder, or move {work} away to train it anew"
                )
        return
    held = [f for f in (name, "last.pt", "best.pt") if (work / f).is_file()]
    if held:
        raise RunDirError(
            f"{work} already holds a run ({', '.join(held)}); pass --resume to reuse a finished run or "
            "continue an unfinished one, or choose another --out"
        )


def set_aside(path: Path) -> Path:
    """Rename file ``path`` to ``<stem>.replaced-<time><suffix>`` beside it (never deleted) and return
    the new path: the old record of a run that is re-scored or trained anew."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    dest = path.with_name(f"{path.stem}.replaced-{stamp}{path.suffix}")
    n = 1
    while dest.exists():
        n += 1
        dest = path.with_name(f"{path.stem}.replaced-{stamp}-{n}{path.suffix}")
    os.rename(path, dest)
    return dest
