"""Checkpoint files: safe, atomic writing and ``weights_only`` reading, below every layer that uses them.

The models read weights files (:func:`equiseg.models.weights.read_state_dict`) and the engine writes
and reads training checkpoints; both use this module, which imports nothing of the package but
:mod:`equiseg.utils`. :mod:`equiseg.engine.checkpoint` re-exports every name, so the engine's spelling
keeps working.

Writing: :func:`save_checkpoint` writes to a temporary file in the destination folder, flushes and
``fsync``\\ s it, then ``os.replace``\\ s it over the destination (an atomic rename on POSIX and Windows)
and ``fsync``\\ s the folder. A process killed at any point — even by SIGKILL mid-write — leaves either
the previous checkpoint or the new one, never a torn file.

Reading: :func:`load_checkpoint` uses ``torch.load(weights_only=True)`` only, so loading a file can
never execute code from it. A file that holds pickled objects beyond tensors and plain containers is
refused with :class:`UnsafeCheckpointError`; a truncated or corrupt one raises
:class:`CorruptCheckpointError`. Both name the file. Before unpickling, the zip archive's CRC-32s are
checked, which catches flipped bytes inside tensor data that ``torch.load`` itself does not notice.

Safetensors files (the weights of an ``equiseg export`` folder, Hugging Face weights, released state
dicts saved that way) are read by :func:`load_safetensors`, with the same kind of one-line errors.

Checkpoints must therefore hold plain types only: tensors, numbers, strings, bytes, ``None``, lists,
tuples and dicts (``torch.dtype``/``torch.device``/``torch.Size`` are allowed too).
:func:`save_checkpoint` checks this before writing and names the offending entry.
"""

from __future__ import annotations

import errno
import os
import pickle
import re
import secrets
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from equiseg.utils import disk_full_cause

__all__ = [
    "CheckpointError",
    "CorruptCheckpointError",
    "DiskFullError",
    "UnsafeCheckpointError",
    "load_checkpoint",
    "load_safetensors",
    "save_checkpoint",
]

_PLAIN_SCALARS = (bool, int, float, complex, str, bytes, type(None), torch.dtype, torch.device, torch.Size)
_EXPECTED = "a PyTorch zip checkpoint written by equiseg.engine.save_checkpoint (torch.save)"


class CheckpointError(RuntimeError):
    """A checkpoint file could not be used; the message names the file."""


class CorruptCheckpointError(CheckpointError):
    """The file is empty, truncated, corrupt, or not a checkpoint at all."""


class DiskFullError(CheckpointError):
    """The device ran out of space while a checkpoint was written; the previous file is untouched."""


class UnsafeCheckpointError(CheckpointError):
    """The file holds pickled objects that ``weights_only`` loading refuses (they could run code)."""


# ---------------------------------------------------------------------------------------------- saving


def _check_plain(obj: Any, where: str) -> None:
    """Raise ``TypeError`` naming the first entry ``weights_only`` loading would refuse."""
    if isinstance(obj, torch.Tensor):
        if type(obj) not in (torch.Tensor, torch.nn.Parameter):
            raise TypeError(f"{where}: tensor subclass {type(obj).__qualname__} is not weights_only-loadable")
        return
    if isinstance(obj, _PLAIN_SCALARS) and type(obj).__module__ in ("builtins", "torch"):
        return
    if type(obj) in (dict, OrderedDict):
        for key, value in obj.items():
            _check_plain(key, f"{where} (key {key!r})")
            _check_plain(value, f"{where}[{key!r}]")
        return
    if type(obj) in (list, tuple):
        for i, value in enumerate(obj):
            _check_plain(value, f"{where}[{i}]")
        return
    raise TypeError(
        f"{where}: {type(obj).__module__}.{type(obj).__qualname__} is not a plain type; checkpoints hold "
        "tensors, numbers, strings, None, lists, tuples and dicts only (convert numpy values with "
        "torch.from_numpy / .item(), dataclasses with dataclasses.asdict)"
    )


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX); silently skipped where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems refuse fsync on folders
        if exc.errno not in (errno.EINVAL, errno.EBADF, errno.EACCES):
            raise
    finally:
        os.close(fd)


def save_checkpoint(path: str | os.PathLike[str], state: Mapping[str, Any], *, check: bool = True) -> Path:
    """Write ``state`` to ``path`` atomically.

    The data go to ``.<name>.<random>.tmp`` beside ``path``; after ``flush`` + ``os.fsync`` the
    temporary file replaces ``path`` with ``os.replace`` and the folder is fsynced. On any exception the
    temporary file is removed and ``path`` is untouched. (A SIGKILL cannot run clean-up code: it leaves
    ``path`` intact plus a stray ``.<name>.*.tmp`` file.)

    Args:
        path: Destination; its parent folder is created if needed.
        state: A dict of plain types (see the module docstring).
        check: Verify the plain-type rule before writing (a ``TypeError`` names the offending entry).

    Returns:
        ``path`` as a ``Path``.
    """
    path = Path(path)
    if not isinstance(state, Mapping):
        raise TypeError(f"checkpoint state must be a dict, got {type(state).__qualname__}")
    if check:
        _check_plain(dict(state), "state")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    # os.open with mode 0o666 honours the umask, so the checkpoint gets the usual permissions.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(dict(state), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if disk_full_cause(exc) is not None:
            raise DiskFullError(
                f"no space left on device while writing {path}; the previous checkpoints are intact"
            ) from None
        raise
    _fsync_dir(path.parent)
    return path


# --------------------------------------------------------------------------------------------- loading


def _weights_only_reason(exc: BaseException) -> str:
    """The informative part of torch's "Weights only load failed" message, without its boilerplate."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # drop ANSI bold
    lines = [line.strip() for line in text.splitlines()]
    reason: list[str] = []
    for i, line in enumerate(lines):
        if "WeightsUnpickler error:" in line:
            reason = [line.split("WeightsUnpickler error:", 1)[1].strip()]
            for following in lines[i + 1 :]:
                if following.startswith("Check the documentation"):
                    break
                reason.append(following)
            break
    if not any(reason):
        reason = [line for line in lines if "GLOBAL" in line] or [lines[0] if lines else type(exc).__name__]
    joined = " ".join(part for part in reason if part)
    return joined.split(" Please use `torch.serialization", 1)[0]


def _verify_zip(path: Path) -> None:
    """Check the archive's structure and every member's CRC-32 (skipped if written without CRCs)."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            if not any(info.filename.endswith("data.pkl") for info in infos):
                raise CorruptCheckpointError(
                    f"checkpoint {path} is a zip archive without a data.pkl record; expected {_EXPECTED}"
                )
            if all(info.CRC == 0 for info in infos):
                return  # torch.serialization.set_crc32_options(False) was in effect when it was written
            bad = archive.testzip()
    except zipfile.BadZipFile as exc:
        raise CorruptCheckpointError(
            f"checkpoint {path} is truncated or corrupt ({exc}); expected {_EXPECTED}"
        ) from exc
    except (OSError, EOFError) as exc:
        raise CorruptCheckpointError(
            f"checkpoint {path} could not be read to the end ({exc}); expected {_EXPECTED}"
        ) from exc
    if bad is not None:
        raise CorruptCheckpointError(
            f"checkpoint {path} is corrupt: record {bad!r} fails its CRC-32 check; expected {_EXPECTED}"
        )


def load_checkpoint(
    path: str | os.PathLike[str],
    map_location: str | torch.device | None = "cpu",
    *,
    required_keys: Iterable[str] = (),
    verify: bool = True,
) -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)``: never executes code from the file.

    Args:
        path: The file (a zip checkpoint; legacy non-zip ``torch.save`` files of plain types load too,
            e.g. original SegFormer ``mit_b*.pth`` weights).
        map_location: Passed to ``torch.load``.
        required_keys: Top-level keys the dict must contain (e.g. ``("model", "optimizer")``).
        verify: Check the zip archive's CRC-32s first (reads the file once more).

    Returns:
        The checkpoint dict.

    Raises:
        FileNotFoundError: No such file.
        CorruptCheckpointError: Empty, truncated, corrupt, not a dict, or missing ``required_keys``.
        UnsafeCheckpointError: Holds objects that ``weights_only`` loading refuses.
    """
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(
            f"checkpoint {path} is a folder, expected a checkpoint file (e.g. {path}/best.pt)"
        )
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CorruptCheckpointError(f"checkpoint {path} is empty (0 bytes); expected {_EXPECTED}")
    is_zip = zipfile.is_zipfile(path)
    if is_zip and verify:
        _verify_zip(path)
    try:
        with warnings.catch_warnings():  # torch warns about the protocol of foreign pickles; we raise below
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise CorruptCheckpointError(
                f"checkpoint {path} is corrupt: unpickling failed ({exc}); expected {_EXPECTED}"
            ) from exc
        reason = _weights_only_reason(exc)
        if is_zip or "GLOBAL" in reason:
            raise UnsafeCheckpointError(
                f"refusing to load checkpoint {path}: it contains pickled objects that weights_only loading "
                f"does not allow, which could execute code when unpickled ({reason}). Checkpoints written "
                "by equiseg hold tensors and plain containers only; if you trust the file, convert it "
                "yourself with torch.load(weights_only=False)."
            ) from exc
        raise CorruptCheckpointError(
            f"checkpoint {path} is not a PyTorch checkpoint, is corrupt, or holds pickled content that "
            f"weights_only loading does not allow ({reason}); nothing from it was executed. "
            f"Expected {_EXPECTED}"
        ) from exc
    except (RuntimeError, EOFError, ValueError, OSError, KeyError, IndexError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CorruptCheckpointError(
            f"checkpoint {path} is truncated or corrupt ({type(exc).__name__}: {first}); expected {_EXPECTED}"
        ) from exc
    if not isinstance(obj, dict):
        raise CorruptCheckpointError(
            f"checkpoint {path} holds a {type(obj).__qualname__}, expected a dict of state ({_EXPECTED})"
        )
    missing = [key for key in required_keys if key not in obj]
    if missing:
        raise CorruptCheckpointError(
            f"checkpoint {path} lacks key(s) {missing}; it has {sorted(map(str, obj))}"
        )
    return obj


def load_safetensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file, on the CPU (the format holds tensors only: no code runs).

    Raises:
        FileNotFoundError: No such file.
        CorruptCheckpointError: Empty, truncated or not a safetensors file (the library's own error
            types, told in one line naming the file).
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types (SafetensorError, OSError ...)
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CorruptCheckpointError(f"{path}: not a readable safetensors file ({first})") from exc
