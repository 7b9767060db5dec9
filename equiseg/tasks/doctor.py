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
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import importlib.metadata
import importlib.util
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "CHECK_DESCRIPTION",
    "CheckResult",
    "OPTIONAL_PACKAGES",
    "check_cuda_device",
    "environment_report",
    "format_check",
    "format_checks",
    "format_report",
    "run_checks",
]

Status = Literal["PASS", "FAIL", "SKIPPED"]

# import name -> distribution names that provide it (the first installed one gives the version)
CORE_PACKAGES: dict[str, tuple[str, ...]] = {
    "numpy": ("numpy",),
    "PIL": ("pillow", "Pillow"),
    "yaml": ("pyyaml", "PyYAML"),
    "safetensors": ("safetensors",),
    "tqdm": ("tqdm",),
}
OPTIONAL_PACKAGES: dict[str, tuple[str, ...]] = {
    "onnx": ("onnx",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino"),
    "tensorboard": ("tensorboard",),
    "transformers": ("transformers",),
    "matplotlib": ("matplotlib",),
    "cv2": (
        "opencv-python-headless",
        "opencv-python",
        "opencv-contrib-python-headless",
        "opencv-contrib-python",
    ),
    "triton": ("triton", "pytorch-triton"),  # torch.compile's GPU code generator
}
"""What the optional features need: ONNX export and its check, TensorBoard logging, the weight-format
parity tests, the report figures, the image codec, and ``torch.compile`` on a GPU."""

X86_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")
ARM_FLAGS = ("asimd", "sve", "bf16")
_TORCH_FLAG_CHECKS = {  # where /proc/cpuinfo does not exist: torch's own capability queries
    "avx2": "_is_avx2_supported",
    "avx512f": "_is_avx512_supported",
    "avx512_bf16": "_is_avx512_bf16_supported",
    "amx_tile": "_is_amx_tile_supported",
}
ENV_KEYS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "EQUISEG_CPU_ALLOCATOR",
    "EQUISEG_AUTO_PRECISION",
    "PYTORCH_CUDA_ALLOC_CONF",
    "CUDA_VISIBLE_DEVICES",
)


# ------------------------------------------------------------------------------------------ report


def _git_commit(package_dir: Path) -> dict[str, Any] | None:
    """The commit of the checkout the package runs from (None for an installed wheel or without git)."""
    repo = package_dir.parent
    if not (repo / ".git").exists():
        return None
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if head.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        dirty = status.returncode == 0 and bool(status.stdout.strip())
        return {"commit": head.stdout.strip(), "modified": dirty}
    except (OSError, subprocess.SubprocessError):
        return None


def _package_version(module: str, dists: tuple[str, ...]) -> str | None:
    """The installed version of ``module`` (None: absent); found without importing it."""
    try:
        if importlib.util.find_spec(module) is None:
            return None
    except (ImportError, ValueError):
        return None
    for dist in dists:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "present (version unknown)"


def _cpu_flags() -> dict[str, bool]:
    """The CPU flags that decide equiseg's speed paths (AVX2/AVX-512 kernels, bf16 and AMX units)."""
    from equiseg.engine.precision import _cpuinfo

    machine = platform.machine().lower()
    wanted = ARM_FLAGS if machine in ("aarch64", "arm64") else X86_FLAGS
    for line in _cpuinfo().splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            have = set(value.split())
            return {f: f in have for f in wanted}
    import torch

    found = {}
    for flag, check in _TORCH_FLAG_CHECKS.items():
        fn = getattr(torch.cpu, check, None)
        try:
            if fn is not None:
                found[flag] = bool(fn())
        except Exception:  # a capability query must never stop the report
            pass
    return found


def _gpus() -> list[dict[str, Any]]:
    import torch

    out = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        out.append(
            {
                "index": i,
                "name": p.name,
                "memory_gib": round(p.total_memory / 2**30, 1),
                "capability": f"{p.major}.{p.minor}",
                "multiprocessors": p.multi_processor_count,
            }
        )
    return out


def _cuda_versions() -> dict[str, Any]:
    import torch

    versions: dict[str, Any] = {"cuda": torch.version.cuda, "hip": getattr(torch.version, "hip", None)}
    try:
        versions["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except Exception:
        versions["cudnn"] = None
    versions["nccl"] = None
    try:
        import torch.distributed as dist

        if torch.version.cuda and dist.is_available() and dist.is_nccl_available():
            v = torch.cuda.nccl.version()
            versions["nccl"] = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
    except Exception:
        pass
    versions["driver"] = None
    try:
        if torch.cuda.is_available():
            v = int(torch._C._cuda_getDriverVersion())  # e.g. 12040 for 12.4
            versions["driver"] = f"{v // 1000}.{v % 1000 // 10}"
    except Exception:
        pass
    return versions


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


_PACKAGE_LABELS = {"PIL": "pillow", "yaml": "pyyaml", "cv2": "opencv (cv2)"}


def _wrap(label: str, items: list[str], width: int = 110) -> list[str]:
    """``label`` then the comma-separated ``items``, continued on indented lines at ``width``."""
    lines, line = [], f"{label:<12} "
    for i, item in enumerate(items):
        piece = item + ("," if i < len(items) - 1 else "")
        if len(line) + len(piece) + 1 > width and line.strip() != label:
            lines.append(line.rstrip())
            line = " " * 13
        line += piece + " "
    lines.append(line.rstrip())
    return lines


def _env(report: dict[str, Any], key: str) -> str:
    value = report["env"].get(key)
    return f"{key}={value}" if value is not None else f"{key} unset"


def format_report(report: dict[str, Any]) -> str:
    """The report of :func:`environment_report` as one screen of text (no trailing newline)."""
    eq, tv = report["equiseg"], report["torch"]
    commit = ""
    if eq.get("commit"):
        commit = f", git {eq['commit']}" + (" (with uncommitted changes)" if eq.get("modified") else "")
    lines = [
        f"{'equiseg':<12} {eq['version']}{commit}, {eq['path']}",
        f"{'python':<12} {report['python']['version']} ({report['python']['implementation']}), "
        f"{report['python']['executable']}",
        f"{'platform':<12} {report['platform']}",
        f"{'torch':<12} {tv['version']}; CUDA {tv['cuda'] or 'none (a CPU build)'}, cuDNN {tv['cudnn'] or '–'}, "
        f"NCCL {tv['nccl'] or '–'}"
        + (f", driver {tv['driver']}" if tv.get("driver") else "")
        + (f", HIP {tv['hip']}" if tv.get("hip") else ""),
    ]
    if report["gpus"]:
        for g in report["gpus"]:
            lines.append(
                f"{'GPU ' + str(g['index']):<12} {g['name']}, {g['memory_gib']:g} GiB, compute capability "
                f"{g['capability']}, {g['multiprocessors']} SMs"
            )
    else:
        why = (
            "this torch build has no CUDA"
            if not tv["cuda"]
            else f"torch has CUDA {tv['cuda']} but sees no device (driver? {_env(report, 'CUDA_VISIBLE_DEVICES')})"
        )
        lines.append(f"{'GPUs':<12} none: {why}")
    cpu = report["cpu"]
    lines.append(
        f"{'CPU':<12} {cpu['model']} ({cpu['machine']}), {cpu['logical_cpus']} logical CPUs, "
        f"{cpu['usable_cpus']} usable by this process; torch kernels: {cpu['capability'] or '?'}"
    )
    if cpu["flags"]:
        lines += _wrap("CPU flags", [f"{f} {'yes' if v else 'no'}" for f, v in cpu["flags"].items()])
    units = report["bf16"]["cpu_units"]
    cuda_bf16 = report["bf16"]["cuda"]
    lines.append(
        f"{'bf16':<12} CPU "
        + (f"native ({', '.join(units)})" if units else "emulated (no avx512_bf16 / amx_bf16: slow)")
        + "; CUDA "
        + ("–" if cuda_bf16 is None else "yes" if cuda_bf16 else "no (fp16 only)")
        + f"; {_env(report, 'EQUISEG_AUTO_PRECISION')}"
    )
    th = report["threads"]
    lines.append(
        f"{'threads':<12} torch {th['intra_op']} intra-op, {th['inter_op']} inter-op; "
        f"{_env(report, 'OMP_NUM_THREADS')}, {_env(report, 'MKL_NUM_THREADS')}"
    )
    lines.append(
        f"{'allocator':<12} CPU {report['allocator']['cpu']} ({_env(report, 'EQUISEG_CPU_ALLOCATOR')}; "
        f"default retain with glibc); {_env(report, 'PYTORCH_CUDA_ALLOC_CONF')}"
    )
    pkgs = [
        f"{_PACKAGE_LABELS.get(m, m)} {v if v is not None else 'absent'}"
        for m, v in report["packages"].items()
    ]
    lines += _wrap("packages", pkgs)
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ checks


@dataclasses.dataclass
class CheckResult:
    """One accelerator path's verdict.

    Attributes:
        name: A stable id, ``cpu.fp32_train_step``, ``cuda.nccl`` ...
        device: ``CPU`` or ``CUDA``.
        label: What was checked, for people.
        status: ``PASS``, ``FAIL`` or ``SKIPPED``.
        detail: What was measured (PASS), the error (FAIL) or why it did not run (SKIPPED).
        seconds: How long it took (None when skipped).
    """

    name: str
    device: str
    label: str
    status: Status
    detail: str
    seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _Skip(Exception):
    """Raised inside a check: it does not apply here (the message says why)."""


NUM_CLASSES = 5
MODALITIES = ("rgb", "depth")
SIZE = 64
BATCH = 2
CHECK_MODEL = dict(
    embed_dims=(32, 64, 160, 256),
    depths=(1, 1, 1, 1),
    decoder_dim=64,
    drop_path_rate=0.0,
    head_dropout=0.0,
    lambda_sgm=1.0,
)
"""The tiny EQUISeg of the checks: MiT-B0's widths (attention head dimension 32, as every MiT variant),
one block per stage, no dropout (so the losses of two paths compare: only their arithmetic differs)."""
CHECK_DESCRIPTION = (
    f"a tiny EQUISeg (MiT-B0 widths, one block per stage, {len(MODALITIES)} modalities, batch {BATCH}, "
    f"{SIZE}×{SIZE})"
)
LOSS_RTOL = {"fp16": 0.05, "bf16": 0.05}  # autocast's loss against fp32's at the same weights and data
# channels-last and compiled against the eager fp32 result, relative: other kernels round differently,
# and on a GPU cuDNN's fp32 convolutions run in TF32 by default (10-bit mantissa), so they may differ more
SAME_RTOL = {"cpu": 1e-3, "cuda": 2e-2}


def _tiny_model():
    import torch

    from equiseg.models import create_model

    with torch.random.fork_rng(devices=[]):  # the caller's RNG stream does not move
        torch.manual_seed(0)
        return create_model("equiseg_b0", num_classes=NUM_CLASSES, modalities=MODALITIES, **CHECK_MODEL)


def _batch(device) -> tuple[list, Any]:
    import torch

    g = torch.Generator().manual_seed(0)
    inputs = [torch.randn(BATCH, 3, SIZE, SIZE, generator=g).to(device) for _ in MODALITIES]
    labels = torch.randint(0, NUM_CLASSES, (BATCH, SIZE, SIZE), generator=g)
    labels[:, :4] = 255  # a band of ignored pixels, as real labels have
    return inputs, labels.to(device)


def _pairing():
    """The SGM's pairing generator, seeded alike for every check, so their losses compare."""
    import torch

    return torch.Generator().manual_seed(0)


def _finite_grads(model) -> bool:
    import torch

    return all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def _train_step(model, device, *, dtype=None, scaler=None, channels_last=False, steps=1) -> dict[str, Any]:
    """``steps`` optimiser steps of ``model`` on the fixed batch; returns the first loss, whether the
    gradients were finite and whether the weights moved."""
    import torch

    inputs, labels = _batch(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        inputs = [x.contiguous(memory_format=torch.channels_last) for x in inputs]
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in model.parameters()]
    first, finite = None, True
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = model(inputs, labels, generator=_pairing()).loss
        if first is None:
            first = float(loss.detach().float())
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            finite = finite and _finite_grads(model)
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            finite = finite and _finite_grads(model)
            opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    moved = any(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters(), strict=True))
    return {"loss": first, "finite": finite, "moved": moved}


def _expect(cond: bool, message: str) -> None:
    if not cond:
        raise AssertionError(message)


def _check_fp32(model, device) -> tuple[str, float]:
    import math

    r = _train_step(copy.deepcopy(model), device)
    _expect(math.isfinite(r["loss"]), f"loss is {r['loss']}")
    _expect(r["finite"], "non-finite gradients")
    _expect(r["moved"], "the optimiser step left every weight unchanged")
    return f"loss {r['loss']:.4f}, finite gradients, weights updated", r["loss"]


def _check_autocast(model, device, precision: str, reference: float | None) -> str:
    import math

    import torch

    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    r = _train_step(copy.deepcopy(model), device, dtype=dtype, scaler=scaler, steps=2 if scaler else 1)
    _expect(math.isfinite(r["loss"]), f"loss is {r['loss']}")
    if scaler is None:
        _expect(r["finite"], "non-finite gradients")
    _expect(r["moved"], "no optimiser step was taken (the grad scaler skipped every step)")
    text = f"loss {r['loss']:.4f}"
    if reference is not None:
        rel = abs(r["loss"] - reference) / max(abs(reference), 1e-6)
        _expect(
            rel <= LOSS_RTOL[precision], f"loss {r['loss']:.4f} vs fp32 {reference:.4f} ({rel:.1%} apart)"
        )
        text += f" (fp32 {reference:.4f}, {rel:.2%} apart)"
    if scaler is not None:
        text += f", GradScaler scale now {scaler.get_scale():g}"
    return text + ", weights updated"


def _check_channels_last(model, device) -> str:
    import torch

    inputs, _ = _batch(device)
    net = copy.deepcopy(model).eval()
    with torch.inference_mode():
        ref = net(inputs).float()
        net = net.to(memory_format=torch.channels_last)
        out = net([x.contiguous(memory_format=torch.channels_last) for x in inputs]).float()
    diff = float((out - ref).abs().max())
    scale = float(ref.abs().max())
    tol = SAME_RTOL[device.type] * max(scale, 1.0)
    _expect(diff <= tol, f"logits differ from the contiguous forward by {diff:.2e} (tolerance {tol:.1e})")
    r = _train_step(copy.deepcopy(model), device, channels_last=True)
    _expect(r["finite"] and r["moved"], "the channels-last training step gave non-finite or no updates")
    return f"logits match the contiguous forward (max |Δ| {diff:.1e}); a training step ran"


def _check_sdpa(device) -> str:
    """The backend torch picks for stage 1's attention of a MiT (head dim 32, spatial reduction 8),
    and its output against the math backend."""
    import torch
    import torch.nn.functional as F

    dtype = torch.float16 if device.type == "cuda" else torch.float32
    g = torch.Generator().manual_seed(0)
    tokens = (SIZE // 4) ** 2
    q = torch.randn(BATCH * len(MODALITIES), 1, tokens, 32, generator=g).to(device, dtype)
    kv = torch.randn(2, BATCH * len(MODALITIES), 1, max(tokens // 64, 1), 32, generator=g).to(device, dtype)
    chosen = "not exposed by this torch"
    choice = getattr(torch, "_fused_sdp_choice", None)
    if choice is not None:
        try:
            from torch.nn.attention import SDPBackend

            chosen = SDPBackend(int(choice(q, kv[0], kv[1]))).name.lower()
        except Exception as e:  # the query is private: report, do not fail on it
            chosen = f"unknown ({type(e).__name__})"
    out = F.scaled_dot_product_attention(q, kv[0], kv[1])
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(SDPBackend.MATH):
            ref = F.scaled_dot_product_attention(q.float(), kv[0].float(), kv[1].float())
    except ImportError:
        ref = torch.softmax(q.float() @ kv[0].float().transpose(-2, -1) / 32**0.5, -1) @ kv[1].float()
    diff = float((out.float() - ref).abs().max())
    tol = 1e-2 if dtype == torch.float16 else 1e-4
    _expect(diff <= tol, f"{chosen} backend differs from the math backend by {diff:.2e}")
    shape = "×".join(map(str, q.shape))
    return f"{chosen} for {str(dtype).removeprefix('torch.')} q {shape} (max |Δ| vs math {diff:.1e})"


def _check_compile(model, device, reference: float, backend: str = "inductor") -> str:
    """One training step through ``torch.compile`` (``backend``: inductor, what users get; the tests
    use a cheaper one), its loss against the eager fp32 step's."""
    import torch

    try:
        import torch._dynamo as dynamo
    except ImportError:
        dynamo = None
    if device.type == "cuda" and _package_version("triton", OPTIONAL_PACKAGES["triton"]) is None:
        raise AssertionError("triton is not installed: torch.compile cannot generate GPU kernels")
    net = copy.deepcopy(model)
    compiled = torch.compile(net, backend=backend)
    inputs, labels = _batch(device)
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-2)
    start = time.perf_counter()
    try:
        loss = compiled(inputs, labels, generator=_pairing()).loss
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    finally:
        if dynamo is not None:
            dynamo.reset()  # drop the compiled graphs
    took = time.perf_counter() - start
    value = float(loss.detach())
    rel = abs(value - reference) / max(abs(reference), 1e-6)
    _expect(rel <= SAME_RTOL[device.type], f"compiled loss {value:.5f} vs eager {reference:.5f}")
    _expect(_finite_grads(net), "non-finite gradients")
    return f"one training step compiled and run in {took:.1f} s, loss matches eager ({rel:.1e} apart)"


def _check_process_group(backend: str, device) -> str:
    """A one-process group joined through a file store (no network port), one all-reduce, destroyed."""
    import torch
    import torch.distributed as dist

    if not dist.is_available():
        raise _Skip("this torch build has no torch.distributed")
    if backend == "nccl" and not dist.is_nccl_available():
        raise AssertionError("this torch build has no NCCL: multi-GPU training (DDP) cannot run")
    if backend == "gloo" and not dist.is_gloo_available():
        raise AssertionError("this torch build has no gloo: CPU DDP cannot run")
    if dist.is_initialized():
        raise _Skip("a process group already runs in this process")
    with tempfile.TemporaryDirectory(prefix="equiseg_doctor_") as tmp:
        store = dist.FileStore(os.path.join(tmp, "store"), 1)
        kwargs: dict[str, Any] = {"timeout": datetime.timedelta(seconds=60)}
        if backend == "nccl":
            kwargs["device_id"] = device
        dist.init_process_group(backend, store=store, rank=0, world_size=1, **kwargs)
        try:
            t = torch.full((4,), 2.0, device=device)
            dist.all_reduce(t)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            _expect(bool((t == 2.0).all()), f"all_reduce over one process changed the tensor to {t.tolist()}")
        finally:
            dist.destroy_process_group()
    version = ""
    if backend == "nccl":
        v = torch.cuda.nccl.version()
        version = " " + (".".join(map(str, v)) if isinstance(v, tuple) else str(v))
    return f"{backend}{version}: a one-process group joined, all_reduce ran, destroyed"


def _peak_cpu() -> str:
    import resource

    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if sys.platform == "darwin":
        kib //= 1024  # bytes there
    return f"peak resident memory of this process {kib / 1024:.0f} MiB"


def _peak_cuda(device) -> str:
    import torch

    total = torch.cuda.get_device_properties(device).total_memory
    alloc, reserved = torch.cuda.max_memory_allocated(device), torch.cuda.max_memory_reserved(device)
    return (
        f"peak {alloc / 2**20:.0f} MiB allocated, {reserved / 2**20:.0f} MiB reserved by these checks "
        f"(of {total / 2**30:.1f} GiB on {torch.cuda.get_device_name(device)})"
    )


def check_cuda_device(device: str, where: str = "cuda_device") -> str:
    """``device`` if it names a GPU (``cuda`` or ``cuda:N``) this process can see -- or any GPU where
    none is visible (the CUDA rows are then SKIPPED).

    Raises:
        ValueError: one line naming ``where``: not ``cuda[:N]``, or ``N`` beyond the visible GPUs.
    """
    import re

    import torch

    m = re.fullmatch(r"cuda(?::(\d+))?", str(device).strip())
    if m is None:
        raise ValueError(f"{where}: expected cuda or cuda:N, got {device!r}")
    if m.group(1) is not None and torch.cuda.is_available() and int(m.group(1)) >= torch.cuda.device_count():
        raise ValueError(
            f"{where}: {device} asked for, but only {torch.cuda.device_count()} GPU(s) are visible"
        )
    return str(device).strip()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, AssertionError):
        text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= 300 else text[:300] + " ..."


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


def format_checks(results: list[CheckResult]) -> str:
    """The check rows as text, then a one-line summary (no trailing newline)."""
    lines = [format_check(r) for r in results]
    counts = {s: sum(r.status == s for r in results) for s in ("PASS", "FAIL", "SKIPPED")}
    lines.append(f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIPPED']} skipped")
    return "\n".join(lines)


def format_check(r: CheckResult) -> str:
    """``PASS     CPU   fp32 training step           0.41 s  loss 1.79 ...``"""
    took = f"{r.seconds:6.2f} s" if r.seconds is not None else " " * 8
    return f"{r.status:<8} {r.device:<5} {r.label:<27} {took}  {r.detail}"
