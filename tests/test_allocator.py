"""equiseg.engine.allocator: the mode is applied on import, the switch is honoured, a bad value is named,
and under ``retain`` re-allocating a large tensor no longer page-faults (the reason it exists)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from equiseg.engine import allocator

GLIBC = allocator._glibc() is not None

# allocate, touch and free a 64 MiB tensor, then count the minor page faults of doing it again
PROBE = r"""
import json, resource, sys
import equiseg, torch
from equiseg.engine.allocator import cpu_allocator
def touch():
    t = torch.empty(16 * 2**20)
    t.fill_(1.0)
    del t
touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
touch()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"mode": cpu_allocator(), "faults": faults}))
"""


def _probe(value: str | None) -> tuple[dict, str]:
    env = {k: v for k, v in os.environ.items() if k != allocator.ENV}
    if value is not None:
        env[allocator.ENV] = value
    env["OMP_NUM_THREADS"] = "1"
    r = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1]), r.stderr


@pytest.mark.skipif(not GLIBC, reason="the allocator switch is glibc-only")
def test_retain_is_the_default_and_stops_the_page_faults():
    default, _ = _probe(None)
    system, _ = _probe("system")
    assert default["mode"] == "retain" and system["mode"] == "system"
    pages = 64 * 2**20 // os.sysconf("SC_PAGE_SIZE")
    # glibc's default mmaps a 64 MiB request afresh: every page faults again (huge pages would be fewer)
    assert system["faults"] > pages // 600
    assert default["faults"] < max(system["faults"] // 4, 64)


def test_a_bad_value_is_named_and_falls_back_to_system():
    got, err = _probe("jemalloc")
    assert got["mode"] == "system"
    assert "EQUISEG_CPU_ALLOCATOR='jemalloc' is not one of retain, system" in err


def test_the_python_switch_checks_its_argument():
    with pytest.raises(ValueError, match="retain, system"):
        allocator.configure_cpu_allocator("fast")
    mode = allocator.cpu_allocator()
    try:
        assert allocator.configure_cpu_allocator("retain") == ("retain" if GLIBC else "system")
        assert allocator.configure_cpu_allocator("system") == "system"
    finally:
        allocator.configure_cpu_allocator(mode)
    assert allocator.cpu_allocator() == mode
