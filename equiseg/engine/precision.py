"""Precision of the network's forward, for training and inference alike: one vocabulary, one autocast
helper, one place for the warnings (docs/design.md §3.6).

The names: ``fp32`` (no autocast; ``none`` is ``train.amp``'s first spelling of it), ``bf16`` and
``fp16`` (autocast to that dtype), ``auto`` (inference only, below). ``train.amp`` takes
:data:`AMP_CHOICES`, ``eval.precision`` :data:`PRECISIONS` (no fp16: docs/design.md §3.6). bf16 runs on
the CPU and CUDA, fp16 on CUDA only (torch's CPU autocast is bf16), neither on MPS
(:func:`precision_applies`); where a precision does not run, the forward runs in fp32 and
:func:`warn_precision` says so. :func:`autocast` is the context of the forward for a (device, precision)
pair: training's step, :class:`AutocastModel` and :func:`inference_autocast` all enter it.

Inference precision: run the network under bf16 autocast where that is faster, fp32 otherwise, decided
at run time (machines differ: never hard-code either; docs/design.md §10).

``eval.precision`` (``--precision`` on ``eval``, ``robustness``, ``analyze``, ``predict``) takes

- ``auto`` (default): bf16 when the hardware runs it fast, else fp32. On the CPU that needs bf16 units --
  :func:`cpu_bf16_support` looks for ``avx512_bf16`` / ``amx_bf16`` (x86) or ``bf16`` (aarch64) in
  ``/proc/cpuinfo`` -- *and* a short probe (:func:`bf16_probe`: a 1024² matmul, fp32 against bf16
  autocast, best of a few runs, a fraction of a second) measuring bf16 at least :data:`MIN_SPEEDUP` times
  faster. Without such units bf16 is emulated, far slower than fp32 (docs/design.md §10), so the probe
  is not even run there. On CUDA: bf16 when ``torch.cuda.is_bf16_supported()``. Elsewhere
  (MPS): fp32.
- ``fp32`` / ``bf16``: as asked (bf16 on a CPU without bf16 units works, only slowly; on MPS it runs as
  fp32, with a warning).

The environment variable ``EQUISEG_AUTO_PRECISION=fp32`` (or ``bf16``) fixes what ``auto`` means on every
machine -- for test suites and CI whose expected numbers must not depend on the CPU they land on.
Explicit ``fp32`` / ``bf16`` settings are not affected.

The matmul probe answers "are the bf16 units there and usable" (a CPU may list ``amx_bf16`` while the
OS does not enable AMX for the process; a 256² matmul first keeps that case cheap). It does not say
whether *this model at this size* gains: on small inputs the gain can be far below the matmul's, or
nothing at all (the demo's EQUISeg-B0 at 128² on an AMX Xeon: README, Performance, bf16). So where the
caller has the model and a sample (``evaluate``, ``robustness``, ``analyze``, and the robustness runs of
``demo``, ``compare``, ``ablate``), ``auto`` also times one forward of the model on that sample in both
precisions (:func:`workload_probe`: one warm-up each, best of :data:`WORKLOAD_REPS`) and keeps bf16 only
when it is at least :data:`MIN_WORKLOAD_SPEEDUP` times faster. The verdict is cached per process by
model class, parameter count and input shapes, so a run's validations and its later benchmark agree (and the
probe costs its six forwards once). ``predict`` decides before it reads an image and uses the hardware
rule alone. Near the threshold two processes may decide differently; every output says which ran.
``benchmarks/precision_bf16.py`` measures the gain and the mIoU difference side by side.

What autocast covers: only the network's forward (:class:`AutocastModel`, :func:`inference_autocast`
around ``encode`` for the analysis). Its outputs are cast back to fp32 at once, so the resizing,
softmax/argmax, losses and metrics after it run in fp32; inside the network the SGM loss
(:mod:`equiseg.models.sgm`) and the CE losses (:mod:`equiseg.models.losses`) compute in fp32 themselves.
The probe uses a private generator, so deciding never moves torch's global RNG (training and its
validation stay reproducible).
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

__all__ = [
    "AMP_CHOICES",
    "AUTO_ENV",
    "PRECISIONS",
    "AutocastModel",
    "Precision",
    "ProbeResult",
    "bf16_is_faster",
    "autocast",
    "bf16_probe",
    "canonical_precision",
    "grad_scaler_enabled",
    "precision_applies",
    "precision_warning",
    "warn_precision",
    "workload_probe",
    "check_precision",
    "cpu_bf16_support",
    "cpu_model_name",
    "describe_precision",
    "inference_autocast",
    "resolve_precision",
    "sample_inputs",
    "with_precision",
]

Precision = Literal["fp32", "bf16"]
# The vocabulary (module docstring). equiseg/config.py sits below the engine and spells the same
# tuples in its Literal annotations; tests/test_precision.py checks that they agree.
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")  # eval.precision, --precision
AMP_CHOICES: tuple[str, ...] = ("none", "fp32", "fp16", "bf16")  # train.amp
SYNONYMS: dict[str, str] = {"none": "fp32"}  # train.amp's first spelling of fp32
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
_RUNS_ON = {"bf16": ("cpu", "cuda"), "fp16": ("cuda",)}  # device types where autocast to it applies
_AUTOCAST_DEVICES = ("cpu", "cuda", "mps")  # device types torch.autocast knows (to disable it there)
# /proc/cpuinfo flags of native bf16 arithmetic: AVX512-BF16 (dot products) and AMX-BF16 (tile matmul)
# on x86; "bf16" in the Features line of aarch64 (Armv8.6 BFDOT/BFMMLA).
BF16_CPU_FLAGS: tuple[str, ...] = ("avx512_bf16", "amx_bf16", "bf16")
AUTO_ENV = "EQUISEG_AUTO_PRECISION"  # fp32 | bf16: what auto means, whatever the hardware (tests, CI)
MIN_SPEEDUP = 1.2  # auto picks bf16 only when the probe runs it at least this much faster
PROBE_SIZE = 1024  # the probe's square matmul
PROBE_REPS = 3  # timed runs of each precision (after one warm-up); the minimum counts
MIN_WORKLOAD_SPEEDUP = 1.1  # ... and a forward of the model itself at least this much faster
WORKLOAD_REPS = 2  # timed forwards of each precision in the workload probe (after one warm-up)
_WORKLOAD_PROBES: dict[tuple, ProbeResult] = {}  # per process: (device, model, shapes) -> probe
_LAST_WORKLOAD: dict[str, ProbeResult | None] = {"probe": None}  # the last resolve's, for its note


def check_precision(precision: Any, key: str = "eval.precision") -> str:
    """``precision`` if it is one of :data:`PRECISIONS`.

    Raises:
        ValueError: ``"eval.precision: expected one of auto | fp32 | bf16, got 'fp16'"`` (``key`` names
            the setting or flag).
    """
    if precision not in PRECISIONS:
        hint = ""
        if precision in AMP_CHOICES:  # a training name: say which inference name means what was meant
            hint = (
                " (fp16 is for training only, train.amp; use bf16)" if precision == "fp16" else " (use fp32)"
            )
        raise ValueError(f"{key}: expected one of {' | '.join(PRECISIONS)}, got {precision!r}{hint}")
    return precision


def canonical_precision(precision: str) -> str:
    """The canonical name of ``precision``: ``"none"`` -> ``"fp32"``; others unchanged."""
    return SYNONYMS.get(precision, precision)


def _known(precision: Any) -> str:
    """The canonical name of a resolved precision; a ValueError for ``auto`` or an unknown name."""
    name = canonical_precision(precision) if isinstance(precision, str) else precision
    if name not in ("fp32", *_DTYPES):
        raise ValueError(
            f"precision must be one of none | fp32 | fp16 | bf16 here (resolve 'auto' first), got {precision!r}"
        )
    return name


def precision_applies(device: torch.device | str, precision: str) -> bool:
    """Whether ``precision`` runs as named on ``device``: fp32 everywhere, bf16 on the CPU and CUDA,
    fp16 on CUDA only (module docstring). ``auto`` must be resolved first."""
    name = _known(precision)
    return name == "fp32" or torch.device(device).type in _RUNS_ON[name]


def autocast(device: torch.device | str, precision: str):
    """The autocast context of the network's forward for ``precision`` on ``device``, training and
    inference alike: ``torch.autocast`` to bf16 / fp16 where that applies (:func:`precision_applies`),
    autocast disabled otherwise (fp32, and a precision that does not run on the device)."""
    device_type = torch.device(device).type
    name = _known(precision)
    if name != "fp32" and precision_applies(device_type, name):
        return torch.autocast(device_type, dtype=_DTYPES[name])
    if device_type in _AUTOCAST_DEVICES:
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def grad_scaler_enabled(device: torch.device | str, precision: str) -> bool:
    """Whether training needs a grad scaler: fp16 autocast (CUDA). bf16 has fp32's exponent range."""
    return canonical_precision(precision) == "fp16" and precision_applies(device, "fp16")


def precision_warning(device: torch.device | str, precision: str, key: str = "train.amp") -> str | None:
    """Why ``precision``, set as ``key``, is ignored on ``device`` (runs in fp32) or slow there (CPU
    bf16 without bf16 units, emulated); None when it runs as asked at full speed."""
    device = torch.device(device)
    name = canonical_precision(precision)
    if name != "fp32" and not precision_applies(device, name):
        hint = f" (use {key}=bf16 on the CPU)" if device.type == "cpu" else ""
        what = "training" if key.startswith("train") else "running"
        return f"{key}={precision} ignored on {device.type}: {what} in fp32{hint}"
    if device.type == "cpu" and name == "bf16" and not cpu_bf16_support():
        return (
            f"{key}=bf16: {cpu_model_name()} has no bf16 units (avx512_bf16 / amx_bf16): bf16 is "
            "emulated and much slower than fp32 here"
        )
    return None


def warn_precision(
    device: torch.device | str, precision: str, key: str = "train.amp", *, stacklevel: int = 2
) -> None:
    """Warn with :func:`precision_warning`'s reason, if there is one (``stacklevel`` as for
    :func:`warnings.warn`, counted from the caller of this function)."""
    text = precision_warning(device, precision, key)
    if text is not None:
        warnings.warn(text, stacklevel=stacklevel + 1)


@functools.cache
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


@functools.cache
def cpu_bf16_support() -> tuple[str, ...]:
    """The bf16 units this CPU reports: the :data:`BF16_CPU_FLAGS` found (empty: none, bf16 is emulated).

    Read from the ``flags`` (x86) / ``Features`` (aarch64) line of ``/proc/cpuinfo``; where that file
    does not exist (macOS, Windows), from torch's own CPU-capability checks.
    """
    for line in _cpuinfo().splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            flags = set(value.split())
            return tuple(f for f in BF16_CPU_FLAGS if f in flags)
    found = []
    for flag, check in (("avx512_bf16", "_is_avx512_bf16_supported"), ("amx_bf16", "_is_amx_tile_supported")):
        fn = getattr(torch.cpu, check, None)
        try:
            if fn is not None and fn():
                found.append(flag)
        except Exception:  # a capability query must never stop a run
            pass
    return tuple(found)


@functools.cache
def cpu_model_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere)."""
    for line in _cpuinfo().splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("model name", "Model", "Hardware") and value.strip():
            return value.strip()
    return platform.processor() or platform.machine() or "unknown CPU"


@dataclass(frozen=True)
class ProbeResult:
    """What :func:`bf16_probe` measured: best-of-N seconds of one matmul in each precision."""

    fp32_s: float
    bf16_s: float

    @property
    def speedup(self) -> float:
        """fp32 time / bf16 time (> 1: bf16 is faster)."""
        return self.fp32_s / max(self.bf16_s, 1e-12)


def _best_time(fn, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


@functools.cache
def bf16_probe(device_type: str = "cpu") -> ProbeResult:
    """Time a matmul in fp32 and under bf16 autocast on ``device_type`` (cached per device type).

    Two stages, so that emulated bf16 (about 100× slower) costs a fraction of a second, not seconds:
    first a ``PROBE_SIZE/4``² matmul, one warm-up each (oneDNN builds its kernels on the first call)
    and the best of two runs; if bf16 is not faster there, that is the answer. Otherwise the
    ``PROBE_SIZE``² matmul, best of :data:`PROBE_REPS` runs each. The operands come from a private
    generator, so torch's global RNG does not move.
    """
    device = torch.device(device_type)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(PROBE_SIZE, PROBE_SIZE, generator=gen).to(device)
    b = torch.randn(PROBE_SIZE, PROBE_SIZE, generator=gen).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def timings(x: torch.Tensor, y: torch.Tensor, reps: int) -> ProbeResult:
        def fp32() -> None:
            torch.mm(x, y)
            sync()

        def bf16() -> None:
            with autocast(device, "bf16"):
                torch.mm(x, y)
            sync()

        fp32()  # warm-ups
        bf16()
        return ProbeResult(_best_time(fp32, reps), _best_time(bf16, reps))

    with torch.inference_mode():
        n = max(PROBE_SIZE // 4, 1)
        small = timings(a[:n, :n].contiguous(), b[:n, :n].contiguous(), 2)
        if small.speedup <= 1.0:
            return small  # not faster even on a small matmul (emulated): stop here
        return timings(a, b, PROBE_REPS)


def bf16_is_faster(device: torch.device | str = "cpu") -> bool:
    """Whether bf16 autocast is clearly faster than fp32 here (the ``auto`` rule, module docstring)."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    if not cpu_bf16_support():
        return False  # emulated: ~100× slower, and probing it would take seconds
    return bf16_probe("cpu").speedup >= MIN_SPEEDUP


def _workload_key(model: nn.Module, inputs: list[torch.Tensor | None], device: torch.device) -> tuple:
    shapes = tuple(None if x is None else tuple(x.shape) for x in inputs)
    return (device.type, type(model).__name__, sum(p.numel() for p in model.parameters()), shapes)


def workload_probe(
    model: nn.Module, inputs: list[torch.Tensor | None], device: torch.device | str = "cpu"
) -> ProbeResult:
    """Time one eval-mode forward ``model(inputs)`` in fp32 and under bf16 autocast: one warm-up each,
    then the best of :data:`WORKLOAD_REPS`. Cached per process by device, model class, parameter count
    and input shapes (a run's validations and its later benchmark share one verdict). The model's
    train/eval mode is restored; its eval-mode forward draws no random numbers, so torch's RNG does
    not move.
    """
    device = torch.device(device)
    key = _workload_key(model, inputs, device)
    if key in _WORKLOAD_PROBES:
        return _WORKLOAD_PROBES[key]
    xs = [None if x is None else x.to(device) for x in inputs]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def forward(precision: Precision):
        def run() -> None:
            with inference_autocast(precision, device):
                model(xs)
            sync()

        return run

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            forward("fp32")()  # warm-ups (oneDNN builds its kernels on the first call)
            forward("bf16")()
            result = ProbeResult(
                _best_time(forward("fp32"), WORKLOAD_REPS), _best_time(forward("bf16"), WORKLOAD_REPS)
            )
    finally:
        model.train(was_training)
    _WORKLOAD_PROBES[key] = result
    return result


def resolve_precision(
    precision: str,
    device: torch.device | str = "cpu",
    *,
    key: str = "eval.precision",
    model: nn.Module | None = None,
    inputs: list[torch.Tensor | None] | None = None,
    data: Any = None,
    crop: Sequence[int] | None = None,
) -> Precision:
    """``"auto" | "fp32" | "bf16"`` -> the precision that runs on ``device``: ``"fp32"`` or ``"bf16"``.

    ``model`` and ``inputs`` (a batch the model takes) or ``data`` (a data set whose first sample is
    that batch, read only if the probe runs; see :func:`sample_inputs`), optionally cut to its top-left
    ``crop`` (h, w) where the forward runs on windows: with ``auto`` on a CPU whose bf16 units pass the
    matmul probe, bf16 is kept only if this model's forward on these inputs is at least
    :data:`MIN_WORKLOAD_SPEEDUP` times faster in it (:func:`workload_probe`). Without either, the
    hardware rule alone decides.

    Raises:
        ValueError: any other value, naming ``key`` (the config key or the flag).
    """
    check_precision(precision, key)
    _LAST_WORKLOAD["probe"] = None
    if precision != "auto":
        if not precision_applies(device, precision):  # bf16 on MPS: fp32, and say so
            warn_precision(device, precision, key, stacklevel=2)
            return "fp32"
        return precision  # type: ignore[return-value]
    forced = _forced_auto()
    if forced is not None:
        return forced if precision_applies(device, forced) else "fp32"
    if not bf16_is_faster(device):
        return "fp32"
    if inputs is None and data is not None:
        inputs = sample_inputs(data)
    if model is None or inputs is None or torch.device(device).type != "cpu":
        return "bf16"
    if crop is not None:
        inputs = [None if x is None else x[..., : crop[0], : crop[1]] for x in inputs]
    probe = workload_probe(model, inputs, device)
    _LAST_WORKLOAD["probe"] = probe
    return "bf16" if probe.speedup >= MIN_WORKLOAD_SPEEDUP else "fp32"


def sample_inputs(dataset: Any, index: int = 0) -> list[torch.Tensor | None] | None:
    """Sample ``index`` of ``dataset`` (``(inputs, label)`` items) as a batch of one, for the workload
    probe; None for an empty data set or one that cannot be indexed (a DataLoader, an iterable data
    set), where ``auto`` then keeps the hardware rule."""
    try:
        if len(dataset) <= index:
            return None
        inputs = dataset[index][0]
    except (TypeError, NotImplementedError):
        return None
    return [None if x is None else (x if x.ndim == 4 else x.unsqueeze(0)) for x in inputs]


def _forced_auto() -> Precision | None:
    """What :data:`AUTO_ENV` makes ``auto`` mean (None: unset, decide from the hardware)."""
    value = os.environ.get(AUTO_ENV, "").strip()
    if not value:
        return None
    if value not in ("fp32", "bf16"):
        raise ValueError(f"{AUTO_ENV}: expected fp32 or bf16 (or unset), got {value!r}")
    return value  # type: ignore[return-value]


def describe_precision(precision: str, requested: str, device: torch.device | str = "cpu") -> str:
    """One line saying which precision ran and why, e.g.
    ``precision bf16 (auto: avx512_bf16, amx_bf16 on Intel Xeon, bf16 matmul at 4.6× the fp32 speed)``."""
    device = torch.device(device)
    if requested == "auto" and _forced_auto() is not None:
        return f"precision {precision} (auto: {AUTO_ENV}={_forced_auto()})"
    if device.type == "cpu":
        units = cpu_bf16_support()
        where = (
            f"{', '.join(units)} on {cpu_model_name()}" if units else f"no bf16 units on {cpu_model_name()}"
        )
        if requested == "auto":
            if not units:
                why = f"{where}, bf16 would be emulated and slow"
            else:
                mm = bf16_probe("cpu").speedup
                why = f"{where}, bf16 matmul at {mm:.1f}× the fp32 speed"
                workload = _LAST_WORKLOAD["probe"]
                if mm < MIN_SPEEDUP:
                    why += f" (needs >= {MIN_SPEEDUP}×)"
                elif workload is not None:
                    why += f", this model's forward at {workload.speedup:.2f}× in bf16"
                    if precision != "bf16":
                        why += f" (needs >= {MIN_WORKLOAD_SPEEDUP}×)"
        elif precision == "bf16" and not units:
            why = f"asked for; {where}: bf16 is emulated and slower than fp32"
        else:
            why = "asked for"
    elif requested == "auto":
        why = f"{device.type}: " + ("supports bf16" if precision == "bf16" else "bf16 not used")
    elif requested != precision:
        why = f"{requested} asked for, which does not run on {device.type}"
    else:
        why = "asked for"
    return f"precision {precision} ({'auto: ' if requested == 'auto' else ''}{why})"


def _check_resolved(precision: str) -> None:
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16' here (resolve 'auto' first), got {precision!r}")


def inference_autocast(precision: str, device: torch.device | str = "cpu"):
    """:func:`autocast` for a resolved inference precision: bf16 autocast for ``"bf16"``, autocast
    disabled for ``"fp32"``."""
    _check_resolved(precision)
    return autocast(device, precision)


class AutocastModel(nn.Module):
    """``model`` whose forward runs under bf16 autocast and returns fp32 tensors.

    Everything after the forward (resizing, softmax / argmax, metrics) therefore runs in fp32. Other
    attributes (``cfg``, ``modalities``, ``encode`` ...) are the wrapped model's; its parameters are
    this module's, so parameter counts and device look-ups see the same tensors. The wrapper takes the
    wrapped model's train/eval mode when built.
    """

    def __init__(self, model: nn.Module, device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.model = model
        self.device_type = torch.device(device).type
        self.train(model.training)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with autocast(self.device_type, "bf16"):
            out = self.model(*args, **kwargs)
        return out.float() if isinstance(out, torch.Tensor) and out.is_floating_point() else out

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "model":  # not yet set (during __init__): no recursion
                raise
            return getattr(self.model, name)


def with_precision(model: nn.Module, precision: str, device: torch.device | str = "cpu") -> nn.Module:
    """``model`` itself for ``"fp32"``, an :class:`AutocastModel` around it for ``"bf16"``."""
    _check_resolved(precision)
    return model if precision == "fp32" else AutocastModel(model, device)
