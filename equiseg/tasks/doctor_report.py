"""The facts of ``equiseg doctor``'s report (versions, GPUs, CPU flags, packages) and its text.

Gathered without running anything heavy; :func:`equiseg.tasks.doctor.environment_report` puts them
together with the package's own version and folder, and :func:`format_report` lays the result out on
one screen."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import subprocess
from pathlib import Path
from typing import Any

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
