"""Shipping a trained model (issue 5 item 6): a ``model.safetensors`` + ``config.json`` pair that
rebuilds the PyTorch model anywhere, and an ONNX graph verified against PyTorch.

Folder layout (``equiseg export --format ... --out DIR``; both formats may share one folder)::

    DIR/config.json          {"format": "equiseg", "format_version": 1, "model_config": {...},
                              "meta": {classes, palette, modalities, norm_stats, ...}, "onnx": {...}}
    DIR/model.safetensors    the full EQUISeg state dict (weights and BatchNorm buffers)
    DIR/model.onnx           the eval-mode graph (opset 17 by default)

Loading the safetensors export: :func:`from_pretrained` (``equiseg.from_pretrained(DIR)``), or
``equiseg.create_model(name, num_classes, modalities, pretrained="DIR/model.safetensors", **config)``
with the same configuration (:func:`~equiseg.models.weights.load_pretrained` recognises a full-model
state dict and loads it strictly).

ONNX (SPEC §7: the TorchScript exporter, ``dynamo=False``, opset 17): one input per modality, named
after it, each ``B×3×H×W`` float32 normalised with ``meta.norm_stats``; one output ``logits``
``B×K×H×W`` at the input size. Batch, height and width are dynamic axes (any ``H, W >= 32``; all
inputs share them). The graph takes **all N inputs**: ONNX has no ``None``, so an absent modality
must be fed as zeros -- the robustness benchmark's protocol (SPEC §5), which is *not* the same as the
PyTorch model's model-aware ``None`` (that skips the branch and the hub's max over it). The model's
Python-level checks (shapes, the minimum size) are not part of the graph. ``config.json`` and the
ONNX file's metadata (``equiseg_config``) carry the classes, palette and normalisation.

The model code traces to a shape-generic graph as it is: token/map reshapes use sizes read from the
tensors (traced as ``Shape`` ops, not constants) and ``F.interpolate`` takes its size from a tensor.
:func:`export_onnx` proves it: it runs onnxruntime (when installed) at the export size and at a
different batch and size, and compares with PyTorch.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from equiseg.config import ModelConfig, from_dict
from equiseg.models import EQUISeg, build_model
from equiseg.utils import to_jsonable

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
    "load_checkpoint_model",
    "verify_onnx",
]

FORMATS = ("onnx", "safetensors")
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
ONNX_NAME = "model.onnx"
DEFAULT_OPSET = 17
MIN_OPSET = 14  # the attention's scaled_dot_product_attention has no ONNX form before opset 14


def _torchscript_max_opset() -> int:
    """The highest opset torch's TorchScript exporter (``dynamo=False``) supports (20 in torch 2.x);
    above it torch only warns that the opset "is not supported" and exports anyway."""
    try:
        from torch.onnx import _constants

        return int(_constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET)
    except (ImportError, AttributeError):
        return 20


MAX_OPSET = _torchscript_max_opset()
DEFAULT_SIZE = (512, 512)
DEFAULT_RTOL = 1e-4  # max |onnx - torch| <= rtol · max |torch| (float32 round-off differs per kernel)

PathLike = str | os.PathLike


class ExportVerificationError(RuntimeError):
    """The exported ONNX graph does not reproduce the PyTorch model's output."""


@dataclasses.dataclass
class OnnxCheck:
    """One onnxruntime-vs-PyTorch comparison.

    Attributes:
        shape: ``(B, H, W)`` of the random inputs.
        max_abs_diff: ``max |onnx - torch|`` over the logits.
        max_abs_ref: ``max |torch|`` (the scale the tolerance is relative to).
        ok: ``max_abs_diff <= rtol · max(max_abs_ref, 1)``.
    """

    shape: tuple[int, int, int]
    max_abs_diff: float
    max_abs_ref: float
    ok: bool

    @property
    def rel_diff(self) -> float:
        return self.max_abs_diff / max(self.max_abs_ref, 1e-12)


@dataclasses.dataclass
class ExportResult:
    """What :func:`export` wrote. ``checks`` is empty when ONNX verification did not run
    (``verify=False``, the safetensors format, or onnxruntime not installed: see ``note``)."""

    format: str
    path: Path
    config: Path
    checks: list[OnnxCheck] = dataclasses.field(default_factory=list)
    note: str = ""


# ----------------------------------------------------------------------------------- config.json


def _model_meta(model: EQUISeg, meta: Mapping[str, Any] | None) -> dict[str, Any]:
    return to_jsonable(dict(meta if meta is not None else getattr(model, "meta", None) or {}))


def _write_config(out_dir: Path, model: EQUISeg, meta: dict[str, Any], extra: Mapping[str, Any]) -> Path:
    """Write ``config.json``; sections of another format already there for the same model are kept."""
    path = out_dir / CONFIG_NAME
    config = {
        "format": "equiseg",
        "format_version": FORMAT_VERSION,
        "model_config": model.cfg.to_dict(),
        "meta": meta,
    }
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = {}
        if old.get("model_config") == config["model_config"]:
            config = {**old, **config}
    config.update(extra)
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (expected an `equiseg export` folder)")
    try:
        config = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(config, dict) or config.get("format") != "equiseg" or "model_config" not in config:
        raise ValueError(f"{path}: not an equiseg export config (no 'format: equiseg' / 'model_config')")
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{path}: format_version {config['format_version']} is newer than this equiseg "
            f"understands ({FORMAT_VERSION}); upgrade equiseg"
        )
    return config


# ------------------------------------------------------------------------------------ safetensors


def export_safetensors(model: EQUISeg, out_dir: PathLike, meta: Mapping[str, Any] | None = None) -> Path:
    """Write ``out_dir/model.safetensors`` (the state dict) and ``out_dir/config.json``.

    Args:
        model: the model (any mode, any device).
        out_dir: created if needed.
        meta: classes / palette / norm_stats to store (default: ``model.meta``).

    Returns:
        The weights file.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path = out / WEIGHTS_NAME
    save_file(tensors, str(path), metadata={"format": "pt", "equiseg_format_version": str(FORMAT_VERSION)})
    _write_config(out, model, _model_meta(model, meta), {})
    return path


def from_pretrained(path: PathLike, device: str | torch.device = "cpu") -> EQUISeg:
    """Rebuild an eval-mode model from an export folder (``config.json`` + ``model.safetensors``).

    Args:
        path: the folder (or its ``config.json``).
        device: where to put the model.

    Returns:
        The model, with the stored class/normalisation meta as ``model.meta``.

    Raises:
        FileNotFoundError: no ``config.json`` or no ``model.safetensors`` (e.g. an ONNX-only export).
        ValueError: a malformed config, or weights of another architecture.
    """
    path = Path(path)
    folder = path.parent if path.is_file() else path
    config = _read_config(folder / CONFIG_NAME)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(
            f"{weights} does not exist; export the PyTorch weights with `equiseg export --format safetensors`"
        )
    try:
        cfg = from_dict(ModelConfig, config["model_config"])
    except ValueError as e:
        raise ValueError(f"{folder / CONFIG_NAME}: model_config: {e}") from None
    model = build_model(cfg, pretrained=weights)
    model.meta = dict(config.get("meta") or {})
    return model.to(device).eval()


# ------------------------------------------------------------------------------------------ ONNX


class _OnnxWrapper(nn.Module):
    """N positional tensors -> ``model(list)``: the exporter needs one named input per modality."""

    def __init__(self, model: EQUISeg) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(list(inputs))


def _random_inputs(
    n: int, shape: tuple[int, int, int], seed: int, device: torch.device
) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    b, h, w = shape
    return [torch.randn(b, 3, h, w, generator=g).to(device) for _ in range(n)]


def _other_shape(shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """A second test shape that differs in batch, height and width (not multiples of 32)."""
    b, h, w = shape
    return b + 1, h + 40, max(32, w - 24)


def verify_onnx(
    model: EQUISeg,
    path: PathLike,
    shapes: Sequence[tuple[int, int, int]],
    *,
    rtol: float = DEFAULT_RTOL,
    seed: int = 0,
) -> list[OnnxCheck]:
    """Run the ONNX graph with onnxruntime (CPU) and PyTorch on the same random inputs.

    Args:
        model: the PyTorch model the graph was exported from.
        path: the ``.onnx`` file.
        shapes: ``(B, H, W)`` per comparison.
        rtol: ``ok`` when ``max |onnx - torch| <= rtol · max(max |torch|, 1)``.
        seed: seed of the random inputs.

    Raises:
        ImportError: onnxruntime is not installed.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    checks = []
    try:
        for k, shape in enumerate(shapes):
            inputs = _random_inputs(len(names), tuple(shape), seed + k, device)
            with torch.inference_mode():
                ref = model(inputs).float().cpu()
            out = session.run(None, {n: x.cpu().numpy() for n, x in zip(names, inputs, strict=True)})[0]
            diff = float((torch.from_numpy(out) - ref).abs().max())
            scale = float(ref.abs().max())
            checks.append(OnnxCheck(tuple(shape), diff, scale, diff <= rtol * max(scale, 1.0)))
    finally:
        model.train(was_training)
    return checks


def export_onnx(
    model: EQUISeg,
    out_dir: PathLike,
    *,
    size: tuple[int, int] = DEFAULT_SIZE,
    opset: int = DEFAULT_OPSET,
    meta: Mapping[str, Any] | None = None,
    verify: bool = True,
    rtol: float = DEFAULT_RTOL,
) -> ExportResult:
    """Export the eval-mode graph to ``out_dir/model.onnx`` (+ ``config.json``) and verify it.

    Args:
        model: the model; exported in eval mode, its mode is restored afterwards.
        out_dir: created if needed.
        size: ``(H, W)`` of the tracing inputs (batch 1); the graph accepts any size.
        opset: ONNX opset, :data:`MIN_OPSET`..:data:`MAX_OPSET` (14-20; 17 is the tested one).
        meta: classes / palette / norm_stats to store (default: ``model.meta``).
        verify: compare with PyTorch via onnxruntime at ``(1, H, W)`` and at a different batch and
            size (skipped, with a note, when onnxruntime is not installed).
        rtol: tolerance of the comparison (see :func:`verify_onnx`).

    Returns:
        :class:`ExportResult` with the comparisons.

    Raises:
        ValueError: an opset outside :data:`MIN_OPSET`..:data:`MAX_OPSET` (before anything is written).
        ExportVerificationError: a comparison is over the tolerance (the file is left for inspection).
    """
    check_opset(opset)
    h, w = size
    if min(h, w) < 32:
        raise ValueError(f"--size must be at least 32×32 (the model's minimum input), got {h}×{w}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / ONNX_NAME
    names = list(model.modalities)
    device = next(model.parameters()).device
    # The wrapper's mode is what the exporter restores afterwards, recursively: give it the model's.
    wrapper = _OnnxWrapper(model).train(model.training)
    dynamic = {n: {0: "batch", 2: "height", 3: "width"} for n in [*names, "logits"]}
    with warnings.catch_warnings():
        # Python-level shape checks in forward become constants of the trace (intended), and the
        # TorchScript exporter announces its deprecation; neither concerns the user.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        torch.onnx.export(
            wrapper,
            tuple(_random_inputs(len(names), (1, h, w), 0, device)),
            str(path),
            input_names=names,
            output_names=["logits"],
            dynamic_axes=dynamic,
            opset_version=opset,
            dynamo=False,
        )
    meta_dict = _model_meta(model, meta)
    onnx_info = {
        "file": ONNX_NAME,
        "opset": opset,
        "inputs": names,
        "output": "logits",
        "dynamic_axes": ["batch", "height", "width"],
        "export_size": [h, w],
        "absent_modalities": "feed zeros (the graph takes all inputs; ONNX has no None)",
    }
    _add_onnx_metadata(path, {"model_config": model.cfg.to_dict(), "meta": meta_dict, "onnx": onnx_info})
    config = _write_config(out, model, meta_dict, {"onnx": onnx_info})
    result = ExportResult("onnx", path, config)
    if not verify:
        result.note = "not verified (verify=False)"
        return result
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        result.note = "not verified: onnxruntime is not installed (pip install onnxruntime)"
        return result
    result.checks = verify_onnx(model, path, [(1, h, w), _other_shape((1, h, w))], rtol=rtol)
    bad = [c for c in result.checks if not c.ok]
    if bad:
        detail = "; ".join(
            f"{c.shape}: max diff {c.max_abs_diff:.3g} (max |logit| {c.max_abs_ref:.3g})" for c in bad
        )
        raise ExportVerificationError(
            f"{path}: onnxruntime does not match PyTorch within rtol {rtol}: {detail}"
        )
    return result


def check_opset(opset: int) -> None:
    """Refuse an ONNX opset this model cannot be exported to with the TorchScript exporter.

    Below :data:`MIN_OPSET` the attention has no ONNX form (torch fails deep in the trace with a
    multi-line graph dump); above :data:`MAX_OPSET` torch's TorchScript exporter does not support it.

    Raises:
        ValueError: ``--opset 5 is not supported; supported opsets: 14-20 (17 is the tested default)``.
    """
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(
            f"--opset {opset} is not supported; supported opsets: {MIN_OPSET}-{MAX_OPSET} "
            f"({DEFAULT_OPSET} is the tested default)"
        )


def _add_onnx_metadata(path: Path, info: Mapping[str, Any]) -> None:
    """Store ``info`` as the ONNX model's ``equiseg_config`` metadata (needs the ``onnx`` package)."""
    try:
        import onnx
    except ImportError:
        return
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "equiseg_config", json.dumps(to_jsonable(info))
    onnx.save(proto, str(path))


# ----------------------------------------------------------------------------------------- entry


def export(
    model_or_checkpoint: EQUISeg | PathLike,
    format: str,
    out_dir: PathLike | None = None,
    *,
    opset: int = DEFAULT_OPSET,
    size: tuple[int, int] = DEFAULT_SIZE,
    verify: bool = True,
) -> ExportResult:
    """Export a model or a training checkpoint (``equiseg export``).

    Args:
        model_or_checkpoint: an :class:`~equiseg.models.EQUISeg` or a training checkpoint path.
        format: ``onnx`` or ``safetensors``.
        out_dir: output folder; default ``export/`` beside the checkpoint (required for a model).
        opset, size, verify: ONNX settings (see :func:`export_onnx`).

    Returns:
        :class:`ExportResult`.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; choose from {', '.join(FORMATS)}")
    if format == "onnx":
        check_opset(opset)  # before the checkpoint is read
    if isinstance(model_or_checkpoint, (str, os.PathLike)):
        model = load_checkpoint_model(model_or_checkpoint)
        out_dir = out_dir if out_dir is not None else Path(model_or_checkpoint).parent / "export"
    else:
        model = model_or_checkpoint
        if out_dir is None:
            raise ValueError("out_dir is required when exporting a model object")
    if format == "safetensors":
        path = export_safetensors(model, out_dir)
        return ExportResult("safetensors", path, Path(out_dir) / CONFIG_NAME)
    return export_onnx(model, out_dir, size=tuple(size), opset=opset, verify=verify)


def load_checkpoint_model(
    checkpoint: PathLike, device: str | torch.device = "cpu", config: Any = None
) -> EQUISeg:
    """A training checkpoint, an export folder (:func:`from_pretrained`) or -- with ``config`` naming the
    model and data set -- a public release's state dict, as an eval-mode model with its ``meta``.

    Args:
        config: an experiment config (path, dict or object) for a released file: ``model`` names the
            architecture (e.g. ``configs/peers/cmnext_b2_deliver.yaml``), ``data`` the classes and
            normalisation (read from the data set's definition, no files needed). Ignored for equiseg
            checkpoints, which carry both.

    Raises:
        FileNotFoundError: no such file or folder.
        ValueError: an unreadable / unsafe file, a malformed ``model_config``, weights that do not
            fit it, or a release without ``config`` -- one line each.
    """
    import sys

    from equiseg.api import model_from_checkpoint
    from equiseg.engine.checkpoint import CheckpointError, load_checkpoint
    from equiseg.models.reference import is_reference_state_dict

    if Path(checkpoint).is_dir():
        return from_pretrained(checkpoint, device)
    try:
        ckpt = load_checkpoint(checkpoint)
    except CheckpointError as e:  # corrupt / unsafe files: a user error with a one-line message
        raise ValueError(str(e)) from None
    if "model" in ckpt and "model_config" in ckpt:
        return model_from_checkpoint(ckpt, str(checkpoint)).to(device).eval()
    if not is_reference_state_dict(ckpt.get("state_dict", ckpt)):
        raise ValueError(
            f"{checkpoint}: neither an equiseg checkpoint ('model' + 'model_config') nor a released full-model "
            f"state dict ('backbone.*', 'decode_head.*'); it has keys {sorted(map(str, ckpt))[:5]}"
        )
    if config is None:
        raise ValueError(
            f"{checkpoint} is a released state dict: pass --config naming its model and data set "
            "(e.g. configs/peers/cmnext_b2_deliver.yaml)"
        )
    from equiseg.config import load_experiment
    from equiseg.engine.builders import config_meta
    from equiseg.models import load_reference_checkpoint

    cfg = load_experiment(config)
    meta = config_meta(cfg.data)
    model = build_model(cfg.model_config(len(meta["classes"])))
    info = load_reference_checkpoint(model, checkpoint)
    print(f"note: {info.summary()} into {cfg.model['name']}", file=sys.stderr)
    model.meta = meta
    return model.to(device).eval()
