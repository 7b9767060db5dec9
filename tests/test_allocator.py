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

# allocate, touch and free a 64 and a 32 MiB tensor (as a step frees its activations together), three
# times to settle (posix_memalign's padding may not fit a hole left by one tensor), then count the minor
# page faults of doing it three more times
PROBE = r"""
import json, resource
import equiseg, torch
from equiseg.engine.allocator import cpu_allocator
def touch():
    a = torch.empty(16 * 2**20)
    a.fill_(1.0)
    b = torch.empty(8 * 2**20)
    b.fill_(1.0)
    del a, b
for _ in range(3):
    touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
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
    pages = 3 * 96 * 2**20 // os.sysconf("SC_PAGE_SIZE")
    # glibc's default mmaps each request afresh: every page faults again (huge pages would be fewer)
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


# the parent frees 512 MiB (kept in its heap under retain) and forks: what does the child hold?
FORK_PROBE = r"""
import json, multiprocessing as mp
import equiseg, torch
from equiseg.engine.allocator import cpu_allocator

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

def child(q):
    q.put({"rss": rss_mb(), "mode": cpu_allocator()})

if __name__ == "__main__":
    big = torch.empty(128 * 2**20)
    big.fill_(1.0)
    del big
    parent = rss_mb()
    q = mp.get_context("fork").Queue()
    p = mp.get_context("fork").Process(target=child, args=(q,))
    p.start()
    got = q.get(timeout=60)
    p.join(60)
    print(json.dumps(dict(got, parent=parent, parent_mode=cpu_allocator())))
"""


@pytest.mark.skipif(not GLIBC, reason="the allocator switch is glibc-only")
def test_a_forked_child_gives_back_the_retained_free_heap(tmp_path):
    script = tmp_path / "fork_probe.py"
    script.write_text(FORK_PROBE)
    env = {k: v for k, v in os.environ.items() if k != allocator.ENV}
    env["OMP_NUM_THREADS"] = "1"
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["parent_mode"] == "retain" and got["mode"] == "system"
    assert got["parent"] > 512  # the freed 512 MiB is still resident in the parent (retained) ...
    assert got["rss"] < got["parent"] - 400  # ... and not in the child (shared, it would be)
