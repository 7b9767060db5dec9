"""``equiseg doctor``: one screen of what a bug report needs, and a self-check of every accelerator path.

Why: most "it does not train" reports turn on the machine, not the code -- a CPU build of torch on a GPU
box, a driver without NCCL, bf16 emulated on a CPU without bf16 units, a thread count of 1, a missing
optional package. :func:`environment_report` gathers those facts without running anything heavy
(versions, GPUs and their memory, CPU model and flags, bf16 support, torch's threads, the CPU allocator
setting, the optional packages present); :func:`format_report` lays them out on one screen.

:func:`run_checks` (``equiseg doctor --check``) then runs every path training and evaluation take, on a
tiny EQUISeg (MiT-B0 widths, so the attention has the head dimension 32 every MiT variant has, one
block per stage, two modalities, batch 2 at 64×64), each reported as PASS, FAIL (with the error) or
SKIPPED (with the reason):

- CPU: an fp32 training step (finite loss and gradients, weights updated); bf16 autocast where the CPU
  has bf16 units (the loss close to fp32's); channels-last (logits equal to the contiguous forward, and
  a backward); the scaled-dot-product-attention backend torch picks for the model's attention shapes,
  checked against the math backend; ``torch.compile`` of one training step -- only with
  ``compile_cpu=True`` (``--compile``), since on the CPU it builds C++ kernels, which takes minutes on
  a few cores; a single-process gloo group (an all-reduce); the process's peak resident memory.
- CUDA (SKIPPED, with the reason, without a visible GPU): fp32, fp16 autocast with a ``GradScaler``
  (as ``train.amp=fp16`` runs), bf16 autocast, channels-last, the SDPA backend chosen for fp16, a
  compiled training step, a single-process NCCL group, and the peak GPU memory of these checks. About a
  minute on a GPU, most of it compiling.

Nothing here changes global state for long: the checks run under a forked RNG, a process group is
always destroyed again, and the compiled graphs are dropped.

The report's facts are gathered in :mod:`equiseg.tasks.doctor_report`, the checks themselves are in
:mod:`equiseg.tasks.doctor_checks`; this module puts them together.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from equiseg.tasks.doctor_checks import (
    BATCH,
    CHECK_DESCRIPTION,
    CHECK_MODEL,
    LOSS_RTOL,
    MODALITIES,
    NUM_CLASSES,
    SAME_RTOL,
    SIZE,
    CheckResult,
    Status,
    _check_autocast,
    _check_channels_last,
    _check_compile,
    _check_fp32,
    _check_process_group,
    _check_sdpa,
    _one_line,
    _peak_cpu,
    _peak_cuda,
    _Skip,
    _tiny_model,
    check_cuda_device,
    format_check,
    format_checks,
)
from equiseg.tasks.doctor_report import (
    ARM_FLAGS,
    CORE_PACKAGES,
    ENV_KEYS,
    OPTIONAL_PACKAGES,
    X86_FLAGS,
    _cpu_flags,
    _cuda_versions,
    _git_commit,
    _gpus,
    _package_version,
    format_report,
)

__all__ = [
    "CHECK_DESCRIPTION",
    "CheckResult",
    "OPTIONAL_PACKAGES",
    # the checks' settings and the report's lists (defined in doctor_checks / doctor_report)
    "ARM_FLAGS",
    "BATCH",
    "CHECK_MODEL",
    "CORE_PACKAGES",
    "ENV_KEYS",
    "LOSS_RTOL",
    "MODALITIES",
    "NUM_CLASSES",
    "SAME_RTOL",
    "SIZE",
    "Status",
    "X86_FLAGS",
    "check_cuda_device",
    "environment_report",
    "format_check",
    "format_checks",
    "format_report",
    "run_checks",
]


def environment_report() -> dict[str, Any]:
    """The facts a bug report needs, gathered without running a model (a fraction of a second).

    Returns:
        A JSON-ready dict: ``equiseg`` (version, path, git ``commit`` / ``modified`` when run from a
        checkout), ``python``, ``platform``, ``torch`` (version, and the ``cuda`` / ``cudnn`` / ``nccl``
        / ``driver`` versions, None where absent), ``cuda_available``, ``gpus`` (name, memory, compute
        capability), ``cpu`` (model, logical and usable CPUs, torch's kernel ``capability``, ``flags``),
        ``bf16`` (the CPU's bf16 units, whether CUDA supports bf16), ``threads`` (torch's intra-/inter-op
        threads), ``allocator`` (the CPU allocator mode in effect), ``env`` (the environment variables
        that change any of this) and ``packages`` (``{import name: version or None}``; core and optional).
    """
    import torch

    import equiseg
    from equiseg.engine.allocator import cpu_allocator
    from equiseg.engine.precision import cpu_bf16_support, cpu_model_name

    package_dir = Path(equiseg.__file__).resolve().parent
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:
        capability = None
    cuda_ok = torch.cuda.is_available()
    cuda_bf16 = None
    if cuda_ok:
        try:
            cuda_bf16 = bool(torch.cuda.is_bf16_supported())
        except Exception:
            cuda_bf16 = None
    return {
        "equiseg": {
            "version": equiseg.__version__,
            "path": str(package_dir),
            **(_git_commit(package_dir) or {}),
        },
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "platform": platform.platform(),
        "torch": {"version": torch.__version__, **_cuda_versions()},
        "cuda_available": cuda_ok,
        "gpus": _gpus() if cuda_ok else [],
        "cpu": {
            "model": cpu_model_name(),
            "machine": platform.machine(),
            "logical_cpus": os.cpu_count(),
            "usable_cpus": usable,
            "capability": capability,
            "flags": _cpu_flags(),
        },
        "bf16": {"cpu_units": list(cpu_bf16_support()), "cuda": cuda_bf16},
        "threads": {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()},
        "allocator": {"cpu": cpu_allocator()},
        "env": {k: os.environ.get(k) for k in ENV_KEYS},
        "packages": {m: _package_version(m, d) for m, d in {**CORE_PACKAGES, **OPTIONAL_PACKAGES}.items()},
    }


def run_checks(
    *,
    compile_cpu: bool = False,
    cuda_device: str = "cuda",
    report: Callable[[CheckResult], None] | None = None,
) -> list[CheckResult]:
    """Run every accelerator path on a tiny EQUISeg (see the module docstring); nothing raises.

    Args:
        compile_cpu: also compile a training step on the CPU (minutes on a few cores; SKIPPED otherwise).
        cuda_device: the GPU checked (``cuda``, ``cuda:1`` ...).
        report: called with each result as soon as it is known (the CLI prints the rows as they come).

    Returns:
        One :class:`CheckResult` per check, CPU rows first, then CUDA rows (SKIPPED, with the reason,
        where no GPU is visible).

    Raises:
        ValueError: ``cuda_device`` is not ``cuda[:N]`` of a visible GPU (:func:`check_cuda_device`).
    """
    import torch

    cuda_device = check_cuda_device(cuda_device)
    gpus = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=gpus):  # dropout in the training steps: the caller's RNG stays
        return _run_checks(compile_cpu, cuda_device, report)


def _run_checks(
    compile_cpu: bool, cuda_device: str, report: Callable[[CheckResult], None] | None
) -> list[CheckResult]:
    import torch

    from equiseg.engine.precision import bf16_probe, cpu_bf16_support

    results: list[CheckResult] = []
    cpu, model = torch.device("cpu"), None
    ref: dict[str, float] = {}

    def run(name: str, dev: str, label: str, fn: Callable[[], str]) -> None:
        start = time.perf_counter()
        try:
            status, detail = "PASS", fn()
        except _Skip as e:
            status, detail = "SKIPPED", str(e)
        except Exception as e:  # a failing path is the answer, not an error of the doctor
            status, detail = "FAIL", _one_line(e)
        seconds = None if status == "SKIPPED" else round(time.perf_counter() - start, 2)
        result = CheckResult(name, dev, label, status, detail, seconds)
        results.append(result)
        if report is not None:
            report(result)

    def skip(why: str) -> Callable[[], str]:
        def fn() -> str:
            raise _Skip(why)

        return fn

    def build() -> str:
        nonlocal model
        model = _tiny_model()
        n = sum(p.numel() for p in model.parameters())
        return f"EQUISeg, MiT-B0 widths, 1 block per stage, {n / 1e6:.2f} M parameters"

    def need_model() -> None:
        if model is None:
            raise _Skip("the tiny model could not be built (see the model row)")

    def fp32(device) -> Callable[[], str]:
        def fn() -> str:
            need_model()
            text, loss = _check_fp32(model, device)
            ref[device.type] = loss
            return text

        return fn

    def autocast(device, precision: str) -> Callable[[], str]:
        def fn() -> str:
            need_model()
            return _check_autocast(model, device, precision, ref.get(device.type))

        return fn

    def channels_last(device) -> Callable[[], str]:
        def fn() -> str:
            need_model()
            return _check_channels_last(model, device)

        return fn

    def compiled(device) -> Callable[[], str]:
        def fn() -> str:
            need_model()
            if device.type not in ref:
                raise _Skip("the fp32 training step failed, so there is no eager loss to compare with")
            return _check_compile(model, device, ref[device.type])

        return fn

    def cpu_bf16() -> str:
        units = cpu_bf16_support()
        if not units:
            raise _Skip(
                "this CPU has no bf16 units (avx512_bf16 / amx_bf16): bf16 would be emulated, far slower "
                "than fp32; train.amp=bf16 warns and eval's auto precision keeps fp32"
            )
        text = autocast(cpu, "bf16")()
        return f"{text}; bf16 matmul at {bf16_probe('cpu').speedup:.1f}× the fp32 speed ({', '.join(units)})"

    run("model", "CPU", "tiny model built", build)
    run("cpu.fp32_train_step", "CPU", "fp32 training step", fp32(cpu))
    run("cpu.bf16_autocast", "CPU", "bf16 autocast step", cpu_bf16)
    run("cpu.channels_last", "CPU", "channels-last", channels_last(cpu))
    run("cpu.sdpa", "CPU", "attention (SDPA) backend", lambda: _check_sdpa(cpu))
    run(
        "cpu.compile",
        "CPU",
        "torch.compile, one step",
        compiled(cpu)
        if compile_cpu
        else skip(
            "on the CPU torch.compile builds C++ kernels, minutes on a few cores; --compile "
            "(compile_cpu=True) runs it"
        ),
    )
    run("cpu.gloo", "CPU", "gloo process group", lambda: _check_process_group("gloo", cpu))
    run("cpu.peak_memory", "CPU", "peak memory", _peak_cpu)

    cuda_rows = [
        ("cuda.fp32_train_step", "fp32 training step"),
        ("cuda.fp16_autocast", "fp16 autocast + GradScaler"),
        ("cuda.bf16_autocast", "bf16 autocast step"),
        ("cuda.channels_last", "channels-last"),
        ("cuda.sdpa", "attention (SDPA) backend"),
        ("cuda.compile", "torch.compile, one step"),
        ("cuda.nccl", "NCCL process group"),
        ("cuda.peak_memory", "peak GPU memory"),
    ]
    if not torch.cuda.is_available():
        why = (
            "no CUDA: this torch build has none (a CPU build)"
            if not torch.version.cuda
            else f"no CUDA device visible (torch has CUDA {torch.version.cuda}; driver, "
            f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r})"
        )
        for name, label in cuda_rows:
            run(name, "CUDA", label, skip(why))
        return results

    gpu = torch.device(cuda_device)
    if gpu.index is None:
        gpu = torch.device("cuda", torch.cuda.current_device())
    torch.cuda.reset_peak_memory_stats(gpu)

    def cuda_bf16() -> str:
        if not torch.cuda.is_bf16_supported():
            raise _Skip(
                f"{torch.cuda.get_device_name(gpu)} has no bf16 support (before compute capability 8.0)"
            )
        return autocast(gpu, "bf16")()

    checks = [
        fp32(gpu),
        autocast(gpu, "fp16"),
        cuda_bf16,
        channels_last(gpu),
        lambda: _check_sdpa(gpu),
        compiled(gpu),
        lambda: _check_process_group("nccl", gpu),
        lambda: _peak_cuda(gpu),
    ]
    for (name, label), fn in zip(cuda_rows, checks, strict=True):
        run(name, "CUDA", label, fn)
    return results
