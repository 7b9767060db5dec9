"""Small helpers shared across the package."""

from __future__ import annotations

import contextlib
import difflib
import errno
import json
import math
import os
import reprlib
import secrets
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any


def to_jsonable(obj: Any) -> Any:
    """Strict-JSON view of results: NaN/inf -> None, tuples -> lists, paths -> str, keys -> str,
    objects with ``to_dict()`` (configs, NormStats) -> their dict; recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "to_dict"):
        return to_jsonable(obj.to_dict())
    return obj


def disk_full_cause(exc: BaseException | None) -> OSError | None:
    """The ENOSPC/EDQUOT ``OSError`` behind ``exc`` (itself or along its cause/context chain), if any.

    torch's serialiser reports a full disk as a ``RuntimeError`` whose context is the ``OSError``."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


# ------------------------------------------------------------------------------------------ quoting

QUOTE_LIMIT = 300  # characters of a user's value that an error message quotes at most

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxtuple, _REPR.maxlist, _REPR.maxarray = 4, 12, 12, 12
_REPR.maxdict, _REPR.maxset, _REPR.maxfrozenset, _REPR.maxdeque = 12, 12, 12, 12
_REPR.maxstring, _REPR.maxlong, _REPR.maxother = QUOTE_LIMIT, QUOTE_LIMIT, QUOTE_LIMIT


def bounded_repr(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` for an error message, at most about ``limit`` characters.

    Why: error messages quote what the user gave, and a value can be huge -- a YAML alias bomb expands
    a few hundred bytes into a list of millions of entries, whose full ``repr`` is a 100 MB "one-line"
    error that takes gigabytes to build. Containers are cut level by level while they are rendered
    (:mod:`reprlib`: ``...`` stands for what was left out), so the cost is bounded too; short values
    read exactly as ``repr`` gives them.
    """
    text = _REPR.repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def bounded_text(text: str, limit: int = QUOTE_LIMIT) -> str:
    """A string quoted without ``repr``'s quotes (a path, a name), cut to ``limit`` characters."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


# ---------------------------------------------------------------------------------- writing files


class WriteError(OSError):
    """Writing a file or folder failed. The message names the path the user asked for (never a
    temporary name) and why; ``errno`` is the failure's, so a full disk is still recognised as one
    (:func:`disk_full_cause`). ``str()`` is the message alone, without ``[Errno N]``."""

    def __str__(self) -> str:
        return str(self.strerror)


def _named_write_error(exc: OSError, path: Path) -> WriteError:
    """``exc`` as a :class:`WriteError` naming ``path``."""
    if isinstance(exc, WriteError):
        return exc
    return WriteError(exc.errno, f"cannot write {path}: {exc.strerror or exc}", str(path))


def _temporary_sibling(path: Path) -> Path:
    """``.<name>.<12 hex>.tmp`` beside ``path``: hidden, unique, and recognisably a partial write."""
    return path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to; it replaces ``path`` when the block ends.

    For writers that want a file name (Pillow, matplotlib, ``torch.onnx.export``): they write the
    temporary sibling, and only a complete file is renamed over ``path`` (``os.replace``, atomic on
    POSIX and Windows). On any error -- a full disk above all -- the temporary file is removed,
    ``path`` keeps its old content (or stays absent), and an ``OSError`` becomes a :class:`WriteError`
    naming ``path``. Writers that pick a format from the file's suffix must be told the format: the
    temporary name ends in ``.tmp``.
    """
    path = Path(path)
    tmp = _temporary_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise _named_write_error(e, path) from e
        raise


def write_atomic(path: str | os.PathLike, data: bytes | str, encoding: str = "utf-8") -> Path:
    """Write ``data`` to ``path`` all or nothing (see :func:`atomic_output`): a reader never sees a
    half-written file, and a failed write (``ENOSPC``) leaves no 0-byte or partial file and raises a
    :class:`WriteError` naming ``path``. The parent folder must exist."""
    path = Path(path)
    raw = data.encode(encoding) if isinstance(data, str) else bytes(data)
    with atomic_output(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
    return path


def write_json_atomic(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> Path:
    """Write ``obj`` as strict JSON (through :func:`to_jsonable`: NaN/inf become ``null``) with
    :func:`write_atomic`, so a killed or failed write never leaves a truncated record behind."""
    text = json.dumps(to_jsonable(obj), indent=indent, allow_nan=False) + "\n"
    return write_atomic(path, text)


def read_json_record(path: str | os.PathLike, required_keys: Iterable[str] = ()) -> dict[str, Any]:
    """Read a JSON object that a run left behind (``result.json``, ``row.json``, ...), checked.

    Args:
        path: the file.
        required_keys: keys the object must have.

    Returns:
        The object.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: one line naming ``path``: unreadable, not valid JSON (truncated by a crash or a full
            disk: the parser's position is given), not a JSON object (``[]``), or without one of
            ``required_keys`` (all missing ones listed).
    """
    path = Path(path)
    if not path.is_file():
        what = "is a directory, expected a file" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"{path} {what}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read the file ({e})") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        where = f"{e.msg} at line {e.lineno}, column {e.colno}"
        raise ValueError(f"{path}: not valid JSON ({where}); the file is truncated or corrupt") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(obj).__name__} {bounded_repr(obj, 60)}")
    missing = [k for k in required_keys if k not in obj]
    if missing:
        raise ValueError(f"{path}: missing key(s) {', '.join(map(repr, missing))} (the record is incomplete)")
    return obj


def check_writable_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Make sure ``path`` is a folder this process can write (or can be created as one), before any
    work is done, so a read-only or full output folder is found in a second, not after an hour.

    A probe file is created and removed in the folder, or -- when it does not exist yet -- in its
    nearest existing parent (nothing is created): that is the honest test, since ``os.access`` says
    yes to root whatever the mode bits, and other file systems (network, FUSE) have their own rules.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: ``path`` (or a parent of it) is a file.
        WriteError: ``{flag} DIR is not writable (Read-only file system); choose another folder``.
    """
    folder = Path(path)
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        what = f"{flag} {folder}" if existing == folder else f"{existing} (in {flag} {folder})"
        raise ValueError(f"{what} is a file, expected a folder (it is created if missing)")
    probe = _temporary_sibling(existing / "write-probe")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink()
    except OSError as e:
        reason = e.strerror or str(e)
        where = "is not writable" if existing == folder else f"cannot be created: {existing} is not writable"
        msg = f"{flag} {folder} {where} ({reason}); choose another folder"
        raise WriteError(e.errno, msg, str(folder)) from e
    return folder


# ----------------------------------------------------------------------------------- lists of names


def check_names(
    given: Iterable[str], known: Iterable[str], *, what: str, where: str, allow_empty: bool = False
) -> list[str]:
    """``given`` in its order without repeats, every name one of ``known``.

    The one check of every list of names a command takes (models, table rows, tables, robustness
    tests ...), so that each command refuses an empty list and an unknown name the same way -- and
    before any work starts, not after the first model has trained.

    Args:
        given: the names asked for.
        known: the names that exist.
        what: what a name is, for the message (``"model"``, ``"tab2 row"``).
        where: the flag or key the list came from (``"--models"``).
        allow_empty: an empty list is a choice (``synth --failures ""``: none), not a mistake.

    Raises:
        ValueError: ``given`` is empty (``--models: no model given; choose from ...``) or holds a name
            not in ``known`` (``--models: unknown model 'x'; choose from ...``), every unknown one named.
    """
    names = list(dict.fromkeys(str(n).strip() for n in given))
    choices = list(dict.fromkeys(known))
    listed = ", ".join(choices)
    if not names and allow_empty:
        return []
    if not names:
        raise ValueError(f"{where}: no {what} given; choose from {listed}")
    unknown = [n for n in names if n not in choices]
    if unknown:
        shown = ", ".join(bounded_repr(n, 80) for n in unknown[:12]) + (" ..." if len(unknown) > 12 else "")
        raise ValueError(f"{where}: unknown {what} {shown}; choose from {listed}")
    return names


# --------------------------------------------------------------------------------- input channels

DEFAULT_CHANNELS = 3
"""Input channels of a modality that ``data.channels`` does not name: 3, what every MiT pretrained file,
released checkpoint and built-in data set (DeLiVER, MUSES) has."""


def check_channels(channels: Any, modalities: Iterable[str], where: str, known_as: str) -> dict[str, int]:
    """A ``{modality: channel count}`` mapping checked against the model's or data set's modalities.

    The one check of ``data.channels`` and of the model config's ``channels``, so both refuse the same
    values with the same one-line errors.

    Args:
        channels: the mapping as given (``None``: empty).
        modalities: the names it may use.
        where: the key it came from, e.g. ``"data.channels"``.
        known_as: what ``modalities`` is called in the message, e.g. ``"data.modalities"``.

    Returns:
        The entries as ``{name: int}`` in the order of ``modalities`` (3s kept: the caller decides).

    Raises:
        ValueError: not a mapping (``data.channels: expected a mapping modality -> channel count ...``),
            a count that is not an integer >= 1 (``data.channels.depth: expected an integer >= 1, got 0``)
            or a name not among ``modalities`` (``data.channels: unknown modality 'thermal'; ...``).
    """
    if channels is None:
        return {}
    if not isinstance(channels, Mapping):
        raise ValueError(
            f"{where}: expected a mapping modality -> channel count (e.g. {{depth: 1}}), "
            f"got {bounded_repr(channels)}"
        )
    names = list(modalities)
    counts: dict[str, int] = {}
    for name, value in channels.items():
        if name not in names:
            close = difflib.get_close_matches(str(name), names, n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(
                f"{where}: unknown modality {bounded_repr(name, 80)}{hint}; {known_as} are {', '.join(names)}"
            )
        count = value
        if isinstance(value, str) and value.strip().lstrip("+").isdigit():
            count = int(value)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"{where}.{name}: expected an integer >= 1, got {bounded_repr(value)}")
        counts[name] = count
    return {m: counts[m] for m in names if m in counts}
