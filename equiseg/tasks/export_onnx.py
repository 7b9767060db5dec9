"""The ONNX graph of ``equiseg export --format onnx``, and its check against PyTorch.

ONNX (the TorchScript exporter, ``dynamo=False``, opset 17; docs/design.md §10): one input per modality,
named after it, each ``B×C×H×W`` float32 normalised with ``meta.norm_stats`` (``C`` the modality's channels:
3 unless ``model_config.channels`` says otherwise; listed as ``onnx.input_channels`` in
``config.json``); one output ``logits``
``B×K×H×W`` at the input size. Batch, height and width are dynamic axes (any ``H, W >= 32``; all
inputs share them). The graph takes **all N inputs**: ONNX has no ``None``, so an absent modality
must be fed as zeros -- the robustness benchmark's protocol (docs/design.md §6), which is *not* the same as
the PyTorch model's model-aware ``None`` (that skips the branch and the hub's max over it). The model's
Python-level checks (shapes, the minimum size) are not part of the graph. ``config.json`` and the
ONNX file's metadata (``equiseg_config``) carry the classes, palette and normalisation.

The model code traces to a shape-generic graph as it is: token/map reshapes use sizes read from the
tensors (traced as ``Shape`` ops, not constants) and ``F.interpolate`` takes its size from a tensor.
:func:`equiseg.tasks.export.export_onnx` proves it with :func:`verify_onnx`: onnxruntime (when
installed) runs the graph at the export size and at a different batch and size, and is compared with
PyTorch.

The folder it is written into (``config.json`` beside it, one folder one model) is
:mod:`equiseg.tasks.export`'s.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from equiseg.models import EQUISeg
from equiseg.utils import to_jsonable, write_atomic

__all__ = [
    "DEFAULT_OPSET",
    "DEFAULT_RTOL",
    "DEFAULT_SIZE",
    "ExportVerificationError",
    "MAX_OPSET",
    "MIN_OPSET",
    "ONNX_NAME",
    "OnnxCheck",
    "check_onnx_settings",
    "check_opset",
    "other_shape",
    "verify_onnx",
    "write_onnx",
]

PathLike = str | os.PathLike

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


class _OnnxWrapper(nn.Module):
    """N positional tensors -> ``model(list)``: the exporter needs one named input per modality."""

    def __init__(self, model: EQUISeg) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(list(inputs))


def _random_inputs(
    channels: Sequence[int], shape: tuple[int, int, int], seed: int, device: torch.device
) -> list[torch.Tensor]:
    """One ``B×C×H×W`` normal tensor per modality (``C`` from ``channels``), from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    b, h, w = shape
    return [torch.randn(b, c, h, w, generator=g).to(device) for c in channels]


def other_shape(shape: tuple[int, int, int]) -> tuple[int, int, int]:
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
            inputs = _random_inputs(model.input_channels, tuple(shape), seed + k, device)
            with torch.inference_mode():
                ref = model(inputs).float().cpu()
            out = session.run(None, {n: x.cpu().numpy() for n, x in zip(names, inputs, strict=True)})[0]
            diff = float((torch.from_numpy(out) - ref).abs().max())
            scale = float(ref.abs().max())
            checks.append(OnnxCheck(tuple(shape), diff, scale, diff <= rtol * max(scale, 1.0)))
    finally:
        model.train(was_training)
    return checks


def check_onnx_settings(opset: int, size: Sequence[int]) -> None:
    check_opset(opset)
    h, w = size
    if min(h, w) < 32:
        raise ValueError(f"--size must be at least 32×32 (the model's minimum input), got {h}×{w}")


def write_onnx(
    model: EQUISeg, folder: Path, *, size: tuple[int, int], opset: int, meta: dict[str, Any]
) -> tuple[Path, dict[str, Any]]:
    """Trace the eval-mode graph into memory, add the ``equiseg_config`` metadata, write
    ``folder/model.onnx`` whole; returns the file and the ``onnx`` section of ``config.json``."""
    h, w = size
    names = list(model.modalities)
    device = next(model.parameters()).device
    # The wrapper's mode is what the exporter restores afterwards, recursively: give it the model's.
    wrapper = _OnnxWrapper(model).train(model.training)
    dynamic = {n: {0: "batch", 2: "height", 3: "width"} for n in [*names, "logits"]}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # Python-level shape checks in forward become constants of the trace (intended), and the
        # TorchScript exporter announces its deprecation; neither concerns the user.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        torch.onnx.export(
            wrapper,
            tuple(_random_inputs(model.input_channels, (1, h, w), 0, device)),
            buffer,
            input_names=names,
            output_names=["logits"],
            dynamic_axes=dynamic,
            opset_version=opset,
            dynamo=False,
        )
    onnx_info = {
        "file": ONNX_NAME,
        "opset": opset,
        "inputs": names,
        "input_channels": list(model.input_channels),
        "output": "logits",
        "dynamic_axes": ["batch", "height", "width"],
        "export_size": [h, w],
        "absent_modalities": "feed zeros (the graph takes all inputs; ONNX has no None)",
    }
    data = _add_onnx_metadata(
        buffer.getvalue(), {"model_config": model.cfg.to_dict(), "meta": meta, "onnx": onnx_info}
    )
    return write_atomic(folder / ONNX_NAME, data), onnx_info


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


def _add_onnx_metadata(data: bytes, info: Mapping[str, Any]) -> bytes:
    """The ONNX model ``data`` with ``info`` as its ``equiseg_config`` metadata (unchanged without the
    ``onnx`` package)."""
    try:
        import onnx
    except ImportError:
        return data
    proto = onnx.load_model_from_string(data)
    entry = proto.metadata_props.add()
    entry.key, entry.value = "equiseg_config", json.dumps(to_jsonable(info))
    return proto.SerializeToString()
