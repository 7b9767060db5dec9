"""CPU memory allocator settings: keep freed tensor memory in the process instead of returning it.

Why: PyTorch's CPU tensors come from the C library's ``malloc``. glibc serves every request above its
mmap threshold (at most 32 MiB) with a fresh ``mmap`` and gives it back with ``munmap`` on free, so each
large activation -- a MiT-B0 stage-1 map of 4 modalities × batch 2 at 512² is 134 MB -- is page-faulted
and zeroed by the kernel again at every forward and backward. On the 2-core Xeon this was written on,
a 134 MB ``clone`` took 36 ms fresh and 10 ms into reused memory, and EQUISeg-B0's 512² training step
spent close to half its time in those faults (``benchmarks/compare_references.py --allocator`` measures
both settings side by side).

``retain`` (the default on Linux with glibc) calls ``mallopt`` so that allocations come from the heap
(``M_MMAP_MAX = 0``) and the heap is never trimmed (``M_TRIM_THRESHOLD`` = 2 GiB - 1): after the first
step every buffer is reused from the process's own pages -- what PyTorch's CUDA caching allocator does on
a GPU. The price is that the resident set stays at its peak until the process exits (measured: +7 % peak
RSS over 16 training steps of mixed sizes, and then flat). ``system`` leaves glibc's defaults.

It is applied once, when ``equiseg`` is imported, from the environment variable
``EQUISEG_CPU_ALLOCATOR`` (``retain`` | ``system``); it changes nothing on other C libraries or systems.
No tensor value depends on it.

Forked children (DataLoader workers, ``multiprocessing`` with fork) would otherwise share the whole
retained heap copy-on-write: every page the parent then rewrites at its next step is copied, and the old
copy stays with the child -- two workers beside an EQUISeg-B2 512² training took the 24 GiB machine
from 12.5 to 23.9 GiB. So a fork hook (:func:`os.register_at_fork`) makes each child give its view of the
parent's *free* heap pages back at once (``malloc_trim(0)``, which releases free chunks with ``madvise``; the
parent keeps its pages, and no longer needs to copy them) and switches the child to ``system``: a worker
that decodes images has no use for a retained heap.
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

_state = {"mode": "system"}


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


def configure_cpu_allocator(mode: str | None = None) -> str:
    """Apply ``mode`` (None: ``$EQUISEG_CPU_ALLOCATOR``, default ``retain``); returns the mode in effect.

    ``retain`` only takes effect with glibc; elsewhere (macOS, musl, Windows) the result is ``system``.
    ``system`` in a process that never applied ``retain`` touches nothing. After ``retain`` it cannot
    restore glibc's *dynamic* thresholds (an explicit ``mallopt`` switches them off for good), so it sets
    the values they settle at for large tensors: mmap above 32 MiB, trim above 64 MiB.
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
    return _state["mode"]


def _after_fork_in_child() -> None:
    if _state["mode"] != "retain":
        return
    libc = _glibc()
    if libc is None:
        return
    configure_cpu_allocator("system")
    libc.malloc_trim(0)  # drop this child's mapping of the parent's free heap pages


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def cpu_allocator() -> str:
    """The mode in effect in this process (``retain`` or ``system``)."""
    return _state["mode"]
