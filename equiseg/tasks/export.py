"""Shipping a trained model: a ``model.safetensors`` + ``config.json`` pair that
rebuilds the PyTorch model anywhere, and an ONNX graph verified against PyTorch.

Folder layout (``equiseg export --format ... --out DIR``)::

    DIR/config.json          {"format": "equiseg", "format_version": 1, "model_config": {...},
                              "meta": {classes, palette, modalities, norm_stats, ...},
                              "weights_sha256": "...", "onnx": {...}}
    DIR/model.safetensors    the full EQUISeg state dict (weights and BatchNorm buffers)
    DIR/model.onnx           the eval-mode graph (opset 17 by default)

**One folder, one model.** An export folder always holds one consistent set: every file in it comes
from the same weights and the same class/normalisation meta, which ``config.json`` describes. So a
folder that is not empty is refused -- unless it holds an export of the very same model (same
``weights_sha256``, ``model_config`` and ``meta``) that lacks the format being written, which is then
added beside it (``safetensors`` and ``onnx`` of one checkpoint may share one folder). ``overwrite``
(``--overwrite``) moves the old contents aside to ``DIR.replaced-<time>/`` -- nothing is deleted.
A new set is written into a hidden sibling folder and renamed into place when complete, and every
file is written whole (a temporary file renamed over the name), so a failure -- a full disk above
all -- leaves the old folder as it was, no partial file, and an error naming the file.

Loading the safetensors export: the one model loader reads the folder (``equiseg.load(DIR)``,
:func:`equiseg.models.load_model`; :func:`from_pretrained` is its ``.model``), or
``equiseg.create_model(name, num_classes, modalities, pretrained="DIR/model.safetensors", **config)``
with the same configuration (:func:`~equiseg.models.weights.load_pretrained` recognises a full-model
state dict and loads it strictly). The folder's file names and ``config.json`` reader live with the
loader (:mod:`equiseg.models.loading`).

The ONNX graph (its inputs, outputs and how it is verified) is :mod:`equiseg.tasks.export_onnx`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from equiseg.checkpoint_io import CheckpointError
from equiseg.engine.eval_setup import load_with_config
from equiseg.models import EQUISeg
from equiseg.models.loading import CONFIG_NAME, WEIGHTS_NAME, read_export_config
from equiseg.models.loading import EXPORT_FORMAT_VERSION as FORMAT_VERSION
from equiseg.utils import WriteError, bounded_repr, check_writable_dir, to_jsonable, write_atomic

from .export_onnx import (
    DEFAULT_OPSET,
    DEFAULT_RTOL,
    DEFAULT_SIZE,
    MAX_OPSET,
    MIN_OPSET,
    ONNX_NAME,
    ExportVerificationError,
    OnnxCheck,
    check_onnx_settings,
    check_opset,
    other_shape,
    verify_onnx,
    write_onnx,
)

__all__ = [
    "FORMATS",
    "ExportResult",
    "ExportVerificationError",
    "MAX_OPSET",
    "MIN_OPSET",
    "OnnxCheck",
    "check_opset",
    "export",
    "export_onnx",
    "export_safetensors",
    "from_pretrained",
    "weights_fingerprint",
    "load_checkpoint_model",
    "verify_onnx",
]

FORMATS = ("onnx", "safetensors")
PathLike = str | os.PathLike


@dataclasses.dataclass
class ExportResult:
    """What :func:`export` wrote. ``checks`` is empty when ONNX verification did not run
    (``verify=False``, the safetensors format, or onnxruntime not installed: see ``note``);
    ``moved_aside`` is set when ``overwrite`` moved the folder's previous contents away."""

    format: str
    path: Path
    config: Path
    checks: list[OnnxCheck] = dataclasses.field(default_factory=list)
    note: str = ""
    moved_aside: Path | None = None  # where ``overwrite`` moved the folder's previous contents


# ----------------------------------------------------------------------------------- config.json


def _model_meta(model: EQUISeg, meta: Mapping[str, Any] | None) -> dict[str, Any]:
    return to_jsonable(dict(meta if meta is not None else getattr(model, "meta", None) or {}))


def weights_fingerprint(model: nn.Module) -> str:
    """SHA-256 of a model's state dict (names, dtypes, shapes and bytes, in key order): what tells two
    exports of the same architecture but other weights apart (their ``model_config`` is the same)."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _config_dict(model: EQUISeg, meta: dict[str, Any], fingerprint: str) -> dict[str, Any]:
    return {
        "format": "equiseg",
        "format_version": FORMAT_VERSION,
        "model_config": model.cfg.to_dict(),
        "meta": meta,
        "weights_sha256": fingerprint,
    }


def _write_config(out_dir: Path, config: dict[str, Any], extra: Mapping[str, Any]) -> Path:
    """Write ``config.json`` whole; the sections of the folder's other format (same model: checked by
    :func:`_prepare_folder`) are kept."""
    path = out_dir / CONFIG_NAME
    merged = dict(config)
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = {}
        if isinstance(old, dict) and old.get("weights_sha256") == config["weights_sha256"]:
            merged = {**old, **config}
    merged.update(extra)
    write_atomic(path, json.dumps(merged, indent=2) + "\n")
    return path


# ------------------------------------------------------------------------------------ safetensors


def export_safetensors(
    model: EQUISeg, out_dir: PathLike, meta: Mapping[str, Any] | None = None, *, overwrite: bool = False
) -> Path:
    """Write ``out_dir/model.safetensors`` (the state dict) and ``out_dir/config.json``.

    Args:
        model: the model (any mode, any device).
        out_dir: created if needed; a folder that is not empty is refused unless it holds the ONNX
            export of this same model (see the module's "one folder, one model").
        meta: classes / palette / norm_stats to store (default: ``model.meta``).
        overwrite: move what ``out_dir`` holds aside to ``OUT.replaced-<time>/`` first.

    Returns:
        The weights file.
    """
    return _export(model, "safetensors", Path(out_dir), meta=meta, overwrite=overwrite).path


def _write_safetensors(model: EQUISeg, folder: Path) -> Path:
    """``folder/model.safetensors``, serialised in memory and written whole (a ``SafetensorError`` of
    the library's own writer would hide a full disk's errno and the file name)."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    data = save(tensors, metadata={"format": "pt", "equiseg_format_version": str(FORMAT_VERSION)})
    return write_atomic(folder / WEIGHTS_NAME, data)


def from_pretrained(path: PathLike, device: str | torch.device = "cpu") -> EQUISeg:
    """An eval-mode model from an export folder (``config.json`` + ``model.safetensors``; the folder or
    either file): the one loader's ``.model`` (``equiseg.load(path).model``), with the stored
    class/normalisation meta as ``model.meta``.

    Raises:
        FileNotFoundError: no ``config.json`` or no ``model.safetensors`` (e.g. an ONNX-only export).
        ValueError: a malformed config, or weights of another architecture.
    """
    return load_with_config(path, device=device).model


# ------------------------------------------------------------------------------------------ ONNX


def export_onnx(
    model: EQUISeg,
    out_dir: PathLike,
    *,
    size: tuple[int, int] = DEFAULT_SIZE,
    opset: int = DEFAULT_OPSET,
    meta: Mapping[str, Any] | None = None,
    verify: bool = True,
    rtol: float = DEFAULT_RTOL,
    overwrite: bool = False,
) -> ExportResult:
    """Export the eval-mode graph to ``out_dir/model.onnx`` (+ ``config.json``) and verify it.

    Args:
        model: the model; exported in eval mode, its mode is restored afterwards.
        out_dir: created if needed; a folder that is not empty is refused unless it holds the
            safetensors export of this same model (see the module's "one folder, one model").
        size: ``(H, W)`` of the tracing inputs (batch 1); the graph accepts any size.
        opset: ONNX opset, :data:`MIN_OPSET`..:data:`MAX_OPSET` (14-20; 17 is the tested one).
        meta: classes / palette / norm_stats to store (default: ``model.meta``).
        verify: compare with PyTorch via onnxruntime at ``(1, H, W)`` and at a different batch and
            size (skipped, with a note, when onnxruntime is not installed).
        rtol: tolerance of the comparison (see :func:`verify_onnx`).
        overwrite: move what ``out_dir`` holds aside to ``OUT.replaced-<time>/`` first.

    Returns:
        :class:`ExportResult` with the comparisons.

    Raises:
        ValueError: an opset outside :data:`MIN_OPSET`..:data:`MAX_OPSET`, a size under 32, or a
            folder holding something else (before anything is written).
        ExportVerificationError: a comparison is over the tolerance (the files are left in
            ``out_dir`` for inspection, described by their ``config.json``).
    """
    check_onnx_settings(opset, size)
    return _export(
        model,
        "onnx",
        Path(out_dir),
        meta=meta,
        overwrite=overwrite,
        size=tuple(size),
        opset=opset,
        verify=verify,
        rtol=rtol,
    )


def _verify(model: EQUISeg, result: ExportResult, size: tuple[int, int], rtol: float) -> None:
    """Fill ``result.checks`` (or ``note``); raise when a comparison is over the tolerance."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        result.note = "not verified: onnxruntime is not installed (pip install onnxruntime)"
        return
    h, w = size
    result.checks = verify_onnx(model, result.path, [(1, h, w), other_shape((1, h, w))], rtol=rtol)
    bad = [c for c in result.checks if not c.ok]
    if bad:
        detail = "; ".join(
            f"{c.shape}: max diff {c.max_abs_diff:.3g} (max |logit| {c.max_abs_ref:.3g})" for c in bad
        )
        raise ExportVerificationError(
            f"{result.path}: onnxruntime does not match PyTorch within rtol {rtol}: {detail}"
        )


# ----------------------------------------------------------------------------------------- entry


def export(
    model_or_checkpoint: EQUISeg | PathLike,
    format: str,
    out_dir: PathLike | None = None,
    *,
    opset: int = DEFAULT_OPSET,
    size: tuple[int, int] = DEFAULT_SIZE,
    verify: bool = True,
    overwrite: bool = False,
) -> ExportResult:
    """Export a model or a training checkpoint (``equiseg export``).

    Args:
        model_or_checkpoint: an :class:`~equiseg.models.EQUISeg` or a training checkpoint path.
        format: ``onnx`` or ``safetensors``.
        out_dir: output folder; default ``export/`` beside the checkpoint (required for a model). A
            folder that is not empty is refused (see the module's "one folder, one model").
        opset, size, verify: ONNX settings (see :func:`export_onnx`).
        overwrite: move what ``out_dir`` holds aside to ``OUT.replaced-<time>/`` (never deleted).

    Returns:
        :class:`ExportResult`.

    Raises:
        ValueError: an unknown format, a bad opset or size, ``out_dir`` a file or holding something
            else than this model's other format -- checked before the checkpoint is read where the
            folder alone decides.
        WriteError: ``out_dir`` is not writable (checked first), or a write failed (a full disk):
            the message names the file; the folder is left as it was.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown export format {bounded_repr(format)}; choose from {', '.join(FORMATS)}")
    if format == "onnx":
        check_onnx_settings(opset, size)  # before the checkpoint is read
    if isinstance(model_or_checkpoint, (str, os.PathLike)):
        out_dir = out_dir if out_dir is not None else Path(model_or_checkpoint).parent / "export"
        _refuse_early(Path(out_dir), format, overwrite)
        model = load_checkpoint_model(model_or_checkpoint)
    else:
        model = model_or_checkpoint
        if out_dir is None:
            raise ValueError("out_dir is required when exporting a model object")
    return _export(
        model,
        format,
        Path(out_dir),
        meta=None,
        overwrite=overwrite,
        size=tuple(size),
        opset=opset,
        verify=verify,
    )


# ------------------------------------------------------------------------------ the export folder


def _contents(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _shown(names: Sequence[str], n: int = 4) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def _refusal(out: Path, why: str) -> ValueError:
    return ValueError(
        f"--out {out} {why}; pass --overwrite to move its contents aside to {out.name}.replaced-<time>/ "
        "(nothing is deleted), or choose another --out"
    )


def _refuse_early(out: Path, format: str, overwrite: bool) -> dict[str, Any] | None:
    """What the folder alone decides, before any model is loaded: a file or an unwritable folder is an
    error; a non-empty folder is refused unless it holds an equiseg export without ``format``'s file
    (whose ``config.json`` is returned, to be matched against the model; None: nothing to match)."""
    check_writable_dir(out, "--out")
    names = _contents(out)
    if not names or overwrite:
        return None
    target = WEIGHTS_NAME if format == "safetensors" else ONNX_NAME
    if target in names:
        raise _refusal(out, f"already holds {target}")
    try:
        config = read_export_config(out / CONFIG_NAME)
    except (OSError, ValueError):
        config = None
    others = [n for n in names if n not in (CONFIG_NAME, WEIGHTS_NAME, ONNX_NAME)]
    if config is None or others:
        raise _refusal(out, f"is not empty and holds no export of this model ({_shown(others or names)})")
    return config


def _prepare_folder(out: Path, format: str, overwrite: bool, config: dict[str, Any]) -> str:
    """How to write into ``out``: ``"new"`` (a fresh set, renamed into place: ``out`` is missing or
    empty, or ``overwrite``) or ``"add"`` (``out`` holds this same model's other format).

    Raises:
        ValueError: ``out`` holds something else (another model's export, this format's file, other
            files) and ``overwrite`` is false -- one line naming the folder, what it holds and
            ``--overwrite``.
    """
    old = _refuse_early(out, format, overwrite)
    if old is None:
        return "new"
    same = all(old.get(k) == config[k] for k in ("weights_sha256", "model_config", "meta"))
    if not same:
        what = "weights" if old.get("weights_sha256") != config["weights_sha256"] else "meta or model_config"
        raise _refusal(out, f"holds the export of another model ({_shown(_contents(out))}; other {what})")
    return "add"


def _export(
    model: EQUISeg,
    format: str,
    out: Path,
    *,
    meta: Mapping[str, Any] | None,
    overwrite: bool,
    size: tuple[int, int] = DEFAULT_SIZE,
    opset: int = DEFAULT_OPSET,
    verify: bool = True,
    rtol: float = DEFAULT_RTOL,
) -> ExportResult:
    """Write ``format``'s file and ``config.json`` as one consistent set (see the module docstring).

    A new set is written into a hidden sibling (``.OUT.<hex>.tmp``) and renamed to ``out`` when
    complete; with ``overwrite`` the old contents are moved aside only then, so a failed export
    changes nothing. A format added to this model's export is written file by file, each whole.
    """
    meta_dict = _model_meta(model, meta)
    config = _config_dict(model, meta_dict, weights_fingerprint(model))
    mode = _prepare_folder(out, format, overwrite, config)
    folder = out if mode == "add" else out.parent / f".{out.name}.{secrets.token_hex(6)}.tmp"
    try:
        if mode == "new":
            folder.mkdir(parents=True)
        if format == "safetensors":
            path = _write_safetensors(model, folder)
            extra: dict[str, Any] = {}
        else:
            path, onnx_info = write_onnx(model, folder, size=size, opset=opset, meta=meta_dict)
            extra = {"onnx": onnx_info}
        _write_config(folder, config, extra)
        result = ExportResult(format, path, folder / CONFIG_NAME)
        failure: ExportVerificationError | None = None
        if format == "onnx" and not verify:
            result.note = "not verified (verify=False)"
        elif format == "onnx":
            try:
                _verify(model, result, size, rtol)
            except ExportVerificationError as e:  # kept for inspection, as a complete set
                failure = e
        if mode == "new":
            result.moved_aside = _put_in_place(folder, out, overwrite)
    except OSError as e:
        raise _at_final_path(e, folder, out) from e
    finally:
        if mode == "new" and folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
    result.path, result.config = out / path.name, out / CONFIG_NAME
    if failure is not None:
        raise ExportVerificationError(str(failure).replace(str(folder), str(out)))
    return result


def _put_in_place(staging: Path, out: Path, overwrite: bool) -> Path | None:
    """Rename the complete new set to ``out``, moving what ``out`` held aside first (``overwrite``);
    returns where the old contents went (None: there were none)."""
    from equiseg.engine.rundir import move_run_aside

    moved = None
    if out.is_dir() and _contents(out):
        if not overwrite:  # filled while we were writing
            raise _refusal(out, "was filled by another process during the export")
        moved = move_run_aside(out)
    if out.is_dir():
        out.rmdir()
    os.rename(staging, out)
    return moved


def _at_final_path(e: OSError, staging: Path, out: Path) -> OSError:
    """A write error in the staging folder, told with the file's final name under ``out``."""
    name = Path(e.filename) if e.filename else None
    if name is not None and (name == staging or staging in name.parents):
        target = out / name.relative_to(staging)
        reason = os.strerror(e.errno) if e.errno else str(e)
        return WriteError(e.errno, f"cannot write {target}: {reason}", str(target))
    return e


def load_checkpoint_model(
    checkpoint: PathLike, device: str | torch.device = "cpu", config: Any = None
) -> EQUISeg:
    """A training checkpoint, an export folder or -- with ``config`` naming the model and data set -- a
    public release's state dict, as an eval-mode model with its ``meta``: the one loader's ``.model``
    (:func:`equiseg.engine.eval_setup.load_with_config`), a corrupt or unsafe file told as a
    ``ValueError``.

    Raises:
        FileNotFoundError: no such file or folder.
        ValueError: an unreadable / unsafe file, a malformed ``model_config``, weights that do not
            fit it, or a release without ``config`` -- one line each.
    """
    try:
        return load_with_config(checkpoint, config, device=device).model
    except CheckpointError as e:  # corrupt / unsafe files: a user error with a one-line message
        raise ValueError(str(e)) from None
