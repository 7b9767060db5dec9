"""CPU memory allocator settings: keep freed tensor memory in the process instead of returning it.

Why: PyTorch's CPU tensors come from the C library's ``malloc``. glibc serves every request above its
mmap threshold (at most 32 MiB) with a fresh ``mmap`` and gives it back with ``munmap`` on free, so each
large activation (a MiT-B0 stage-1 map of 4 modalities × batch 2 at 512² is 134 MB) is page-faulted and
zeroed by the kernel again at every forward and backward. On a small CPU machine those faults were close
to half of a 512² training step (README, "Performance"; ``benchmarks/compare_references.py
--ours-allocators retain,system`` measures both settings side by side).

``retain`` calls ``mallopt`` so that allocations come from the heap (``M_MMAP_MAX = 0``) and the heap is
never trimmed (``M_TRIM_THRESHOLD`` = 2 GiB - 1): after the first step every buffer is reused from the
process's own pages -- what PyTorch's CUDA caching allocator does on a GPU. The price is that the
resident set stays at its peak until the process exits. ``system`` leaves glibc's defaults. Neither
changes anything on other C libraries or systems, and no tensor value depends on the choice.

Who applies it: this is a process-wide setting, so a library must not make it for its host. Importing
``equiseg`` changes nothing. The ``equiseg`` command applies :func:`configure_cpu_allocator` when it
starts, from the environment variable ``EQUISEG_CPU_ALLOCATOR`` (``retain``, the default, or ``system``);
a script or notebook that wants the same behaviour calls ``equiseg.configure_cpu_allocator()`` once,
before its first large tensor.

Forked children (DataLoader workers, ``multiprocessing`` with fork) would otherwise share the whole
retained heap copy-on-write: every page the parent then rewrites at its next step is copied, and the old
copy stays with the child (two workers beside an EQUISeg-B2 512² training nearly doubled the machine's
memory). So once ``retain`` has been applied, a fork hook (:func:`os.register_at_fork`) makes each child
give its view of the parent's *free* heap pages back at once (``malloc_trim(0)``, which releases free
chunks with ``madvise``; the parent keeps its pages, and no longer needs to copy them) and switches the
child to ``system``: a worker that decodes images has no use for a retained heap. The hook is registered
by the first ``retain`` and does nothing in a process whose mode is ``system``.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
import warnings

__all__ = ["ENV", "MODES", "configure_cpu_allocator", "cpu_allocator"]

ENV = "EQUISEG_CPU_ALLOCATOR"
MODES = ("retain", "system")

# mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
_TRIM_NEVER = 2**31 - 1  # the largest int mallopt takes

_state = {"mode": "system", "fork_hook": False}


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


def configure_cpu_allocator(mode: str | None = None) -> str:
    """Apply ``mode`` to this process's C allocator and return the mode in effect.

    ``mode``: ``"retain"`` (freed CPU tensor memory stays in the process for reuse) or ``"system"``
    (glibc's defaults); None reads ``$EQUISEG_CPU_ALLOCATOR`` (default ``retain``), warns when that names
    neither and uses ``system``. An unknown ``mode`` argument raises ``ValueError``.

    This is what the ``equiseg`` command does when it starts; importing ``equiseg`` does not, so a script
    or notebook that wants the command's memory behaviour calls it once, early. ``retain`` only takes
    effect with glibc; elsewhere (macOS, musl, Windows) the result is ``system``. ``system`` in a process
    that never applied ``retain`` touches nothing. After ``retain`` it cannot restore glibc's *dynamic*
    thresholds (an explicit ``mallopt`` switches them off for good), so it sets the values they settle at
    for large tensors: mmap above 32 MiB, trim above 64 MiB.
    """
    if mode is None:
        mode = os.environ.get(ENV, "retain").strip().lower() or "retain"
        if mode not in MODES:
            warnings.warn(
                f"{ENV}={os.environ.get(ENV)!r} is not one of {', '.join(MODES)}; using 'system'",
                stacklevel=2,
            )
            mode = "system"
    elif mode not in MODES:
        raise ValueError(f"CPU allocator mode must be one of {', '.join(MODES)}, got {mode!r}")
    libc = _glibc()
    if libc is None:
        _state["mode"] = "system"
        return "system"
    if mode == "retain":
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_NEVER) == 1
    elif _state["mode"] == "retain":
        ok = (
            libc.mallopt(_M_MMAP_MAX, 65536) == 1
            and libc.mallopt(_M_MMAP_THRESHOLD, 32 * 2**20) == 1
            and libc.mallopt(_M_TRIM_THRESHOLD, 64 * 2**20) == 1
        )
    else:
        ok = True
    _state["mode"] = mode if ok else "system"
    if _state["mode"] == "retain" and not _state["fork_hook"] and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)  # once: hooks cannot be unregistered
        _state["fork_hook"] = True
    return _state["mode"]


def _after_fork_in_child() -> None:
    """In a forked child of a ``retain`` process: give back the parent's free heap pages, use ``system``."""
    if _state["mode"] != "retain":
        return
    libc = _glibc()
    if libc is None:
        return
    configure_cpu_allocator("system")
    libc.malloc_trim(0)  # drop this child's mapping of the parent's free heap pages


def cpu_allocator() -> str:
    """The mode in effect in this process: ``retain``, or ``system`` (also before anything was applied)."""
    return _state["mode"]
