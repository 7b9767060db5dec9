"""A run folder belongs to one run: the lock, the start-up checks and the clean-up of ``equiseg train``.

What :func:`open_run` guarantees before the trainer writes anything:

* **One run per folder.** ``WORK_DIR/run.lock`` is created exclusively (``O_CREAT | O_EXCL``) and holds
  the owner's pid, host, process start time and command line. A second run on the same folder stops at
  once with a message naming the folder and the running pid. A lock whose process is gone (same host,
  no such pid, or the pid now belongs to a younger process) is stale and is replaced; a lock taken on
  another host cannot be checked from here and is refused with the file to delete.
* **No silent replacement.** A folder that already holds a run (``config.yaml``, ``log.jsonl``,
  ``last.pt`` or ``best.pt``) is refused unless the run is resumed (``--resume``) or the caller asks to
  start over (``--overwrite``), which *moves* the old run aside to ``WORK_DIR.replaced-<time>/`` --
  nothing is ever deleted.
* **Resume checks the config.** A resumed run continues the checkpoint's experiment: the config it is
  started with may differ from the checkpoint's only in :data:`SAFE_RESUME_KEYS` (how long to train,
  how often to log/validate/save, how data is loaded, where it runs); any other difference is an error
  listing every offending key with both values. See :func:`check_resume_config`.
* **Leftovers of killed writes** (``.last.pt.<random>.tmp`` from a SIGKILL during
  :func:`~equiseg.engine.checkpoint.save_checkpoint`) are removed -- safe, because the lock proves that
  no other process is writing there.
* **The log continues where the checkpoint is.** On resume, records of ``log.jsonl`` after the
  checkpoint's iteration (written after the last save, before the run died) are dropped, so the
  resumed run does not duplicate them.

Under DDP only rank 0 touches the folder; the trainer broadcasts its verdict (see
:func:`equiseg.engine.distributed.agree`).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import socket
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "LOCK_NAME",
    "RUN_FILES",
    "SAFE_RESUME_KEYS",
    "RunDirError",
    "RunLock",
    "check_resume_config",
    "holds_run",
    "move_run_aside",
    "remove_partial_writes",
    "truncate_log",
]

LOCK_NAME = "run.lock"
# Files whose presence means "a run lives here" (written by every training run).
RUN_FILES = ("config.yaml", "log.jsonl", "last.pt", "best.pt")
# Config keys a resumed run may change (dotted). Everything else defines the experiment: the network,
# the data and its augmentation, the optimiser and schedule shape, the seed, the validation protocol
# that picks ``best.pt``. Changing those mid-run would train something no config describes.
#   train.max_iters / train.epochs  length of the run: the poly schedule is recomputed for the new
#                                   length from the current iteration on (the past is not replayed)
#   train.val_interval / log_interval / checkpoint_interval   how often to validate / log / save
#   train.tensorboard                                          whether to log to TensorBoard too
#   train.device / data.num_workers / eval.window_batch        where and how fast it runs
#   model.pretrained / model.pretrained_strict                 unused on resume (weights come from
#                                                              the checkpoint)
#   work_dir                                                   given by the folder being resumed
SAFE_RESUME_KEYS = (
    "train.max_iters",
    "train.epochs",
    "train.val_interval",
    "train.log_interval",
    "train.checkpoint_interval",
    "train.tensorboard",
    "train.device",
    "data.num_workers",
    "eval.window_batch",
    "eval.num_panels",
    "eval.precision",
    "model.pretrained",
    "model.pretrained_strict",
    "work_dir",
)
# ``.<name>.<12 hex>.tmp``: the temporary files of save_checkpoint
_PARTIAL = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")


class RunDirError(ValueError):
    """The run folder cannot be used as asked; the message names the folder and what to do."""


# ----------------------------------------------------------------------------------------------- lock


def _process_start(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot (Linux ``/proc``), or None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        return int(fields[19])  # field 22 of stat(5); fields[0] is field 3
    except (IndexError, ValueError):
        return None


def _pid_alive(pid: int, start: int | None) -> bool:
    """Whether ``pid`` runs and is the same process that took the lock (not a reused pid)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True
    if start is not None:
        now = _process_start(pid)
        if now is not None and now != start:
            return False  # the pid was reused by a process started later
    return True


@dataclass
class RunLock:
    """An exclusive lock on a run folder (``run.lock`` holding pid, host, start time, command).

    Use as a context manager or call :meth:`acquire` / :meth:`release`. :meth:`release` removes the
    file only if it is still this process's lock.
    """

    folder: Path
    held: bool = False

    @property
    def path(self) -> Path:
        return self.folder / LOCK_NAME

    def _record(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "process_start": _process_start(os.getpid()),
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": " ".join(sys.argv),
        }

    def _read(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def acquire(self) -> RunLock:
        if self.folder.exists() and not self.folder.is_dir():
            raise RunDirError(
                f"work dir {self.folder} is a file, expected a folder (it is created if missing)"
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                self._handle_existing()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self._record(), f)
                f.flush()
                os.fsync(f.fileno())
            self.held = True
            return self
        raise RunDirError(f"{self.folder}: could not take the run lock {self.path} (it keeps reappearing)")

    def _handle_existing(self) -> None:
        """Refuse a live lock; move a stale one out of the way (then the caller retries)."""
        info = self._read()
        if info is None:
            # Being written right now (a run starting this instant), or torn by a crash long ago.
            try:
                age = time.time() - self.path.stat().st_mtime
            except FileNotFoundError:
                return
            if age < 10:
                time.sleep(0.2)
                info = self._read()
                if info is None:
                    raise RunDirError(
                        f"{self.folder} is being opened by another run right now (lock file {self.path}); "
                        "use another --work-dir"
                    )
        if info is not None:
            pid, host = int(info.get("pid", -1)), str(info.get("host", "?"))
            if host != socket.gethostname():
                raise RunDirError(
                    f"{self.folder} is locked by a run on host {host} (pid {pid}, started "
                    f"{info.get('started', '?')}); if no run is active there, delete {self.path}"
                )
            if _pid_alive(pid, info.get("process_start")):
                raise RunDirError(
                    f"{self.folder} is in use by another run: pid {pid} on {host}, started "
                    f"{info.get('started', '?')} ({info.get('command', '?')}); wait for it to finish, "
                    "or train into another --work-dir"
                )
        # Stale: rename to a unique name first, so two starters cannot both delete a fresh lock.
        stale = self.folder / f".{LOCK_NAME}.stale-{os.getpid()}-{time.monotonic_ns()}"
        try:
            os.rename(self.path, stale)
        except FileNotFoundError:
            return
        stale.unlink(missing_ok=True)

    def release(self) -> None:
        if not self.held:
            return
        info = self._read()
        if info is not None and info.get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# ----------------------------------------------------------------------------------- folder contents


def holds_run(folder: Path) -> list[str]:
    """The names of :data:`RUN_FILES` present in ``folder`` (empty: no run lives there)."""
    return [name for name in RUN_FILES if (folder / name).exists()]


def move_run_aside(folder: Path) -> Path:
    """Move everything in ``folder`` but the lock to a new sibling ``<folder>.replaced-<time>``."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    dest = folder.with_name(f"{folder.name}.replaced-{stamp}")
    n = 1
    while dest.exists():
        n += 1
        dest = folder.with_name(f"{folder.name}.replaced-{stamp}-{n}")
    dest.mkdir(parents=True)
    for entry in folder.iterdir():
        if entry.name != LOCK_NAME:
            os.rename(entry, dest / entry.name)
    return dest


def remove_partial_writes(folder: Path) -> tuple[int, int]:
    """Delete ``.<name>.<hex>.tmp`` leftovers of killed checkpoint writes; returns (files, bytes)."""
    count = size = 0
    for entry in folder.iterdir():
        if entry.is_file() and _PARTIAL.match(entry.name):
            try:
                size += entry.stat().st_size
                entry.unlink()
                count += 1
            except FileNotFoundError:
                pass
    return count, size


def truncate_log(path: Path, iteration: int) -> int:
    """Keep the records of ``log.jsonl`` up to ``iteration`` (and any torn last line is dropped).

    Returns the number of records dropped. The file is rewritten atomically.
    """
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            dropped += 1  # a line torn by the kill
            continue
        if isinstance(rec, dict) and isinstance(rec.get("iter"), int) and rec["iter"] > iteration:
            dropped += 1
            continue
        kept.append(line)
    if dropped:
        tmp = path.with_name(f".{path.name}.truncate.tmp")
        tmp.write_text("".join(f"{line}\n" for line in kept))
        os.replace(tmp, path)
    return dropped


# ------------------------------------------------------------------------------------- resume config


def _flatten(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in data.items():
        where = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{where}.")
        else:
            yield where, value


def check_resume_config(new: Mapping[str, Any], saved: Mapping[str, Any], checkpoint: Path) -> list[str]:
    """Compare the config a run is resumed with to the checkpoint's (both as ``to_dict`` dicts).

    Returns the differing keys that :data:`SAFE_RESUME_KEYS` allows (they take effect).

    Raises:
        RunDirError: another architecture (``checkpoint is X, config asks for Y``), or any other key
            outside :data:`SAFE_RESUME_KEYS` differs (every one listed with both values).
    """
    new_name = new.get("model", {}).get("name")
    old_name = saved.get("model", {}).get("name")
    if new_name != old_name:
        raise RunDirError(
            f"--resume {checkpoint}: checkpoint is {old_name}, config asks for {new_name}; resume with the "
            "config of that run (its config.yaml), or train the new model into another --work-dir"
        )
    a, b = dict(_flatten(new)), dict(_flatten(saved))
    differing = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    unsafe = [k for k in differing if k not in SAFE_RESUME_KEYS]
    if unsafe:
        shown = "; ".join(f"{k}: checkpoint {b.get(k)!r}, now {a.get(k)!r}" for k in unsafe)
        raise RunDirError(
            f"--resume {checkpoint}: the config differs from the checkpoint's in keys that cannot change "
            f"mid-run ({shown}); a resume may only change {', '.join(SAFE_RESUME_KEYS)}. Resume with the "
            "run's own config.yaml, or start a new run in another --work-dir"
        )
    return differing


def config_differences(saved: Mapping[str, Any] | None, cfg: Any, ignore: tuple[str, ...] = ()) -> list[str]:
    """The dotted keys in which a config saved with a run (in its ``result.json`` / ``row.json``, or
    its ``config.yaml``) differs from ``cfg`` (empty: the same experiment). The saved one is read through today's schema
    first: a key added to the schema since (with its default) does not make an old run differ.
    ``ignore``: keys not compared, top-level (``work_dir``) or dotted (``data.val_split``) -- a
    section's name ignores the whole section. A saved config that is missing or no longer loads
    differs in ``["config"]``."""
    from equiseg.config import load_experiment
    from equiseg.utils import to_jsonable

    if not isinstance(saved, Mapping):
        return ["config"]
    try:
        old = load_experiment(dict(saved)).to_dict()
    except (ValueError, TypeError, KeyError):
        return ["config"]

    def flat(d: Mapping[str, Any]) -> dict[str, Any]:
        plain = json.loads(json.dumps(to_jsonable(d)))
        return {k: v for k, v in _flatten(plain) if not any(k == i or k.startswith(f"{i}.") for i in ignore)}

    a, b = flat(old), flat(cfg.to_dict())
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def config_matches(saved: Mapping[str, Any] | None, cfg: Any, ignore: tuple[str, ...] = ()) -> bool:
    """Whether a config saved with a finished run is ``cfg`` (see :func:`config_differences`), so the
    run can be reused."""
    return not config_differences(saved, cfg, ignore)
