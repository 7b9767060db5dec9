"""equiseg.engine.allocator: importing equiseg leaves the C allocator alone; the ``equiseg`` command and
``equiseg.configure_cpu_allocator()`` apply the mode (``$EQUISEG_CPU_ALLOCATOR``, default ``retain``), a bad
value is named and falls back to ``system``, under ``retain`` re-allocating a large tensor no longer
page-faults (the reason it exists), and a forked child of a ``retain`` process gives the parent's free heap
back.

Every check that applies a mode runs in a fresh process: the setting is process-wide and cannot be fully
undone, so the test process itself is never retuned here."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from equiseg.engine import allocator

GLIBC = allocator._glibc() is not None

# SETUP (what the process does before measuring), then: allocate, touch and free a 64 and a 32 MiB tensor
# (as a step frees its activations together), three times to settle (posix_memalign's padding may not fit
# a hole left by one tensor), then count the minor page faults of doing it three more times
PROBE = r"""
import json, resource
import equiseg, torch
from equiseg.engine import allocator
result = None
SETUP
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
print(json.dumps({"result": result, "mode": allocator.cpu_allocator(), "fork_hook": allocator._state["fork_hook"],
                  "faults": faults}))
"""

IMPORT_ONLY = ""
API = "result = equiseg.configure_cpu_allocator()"
API_RETAIN_THEN_SYSTEM = (
    "result = [equiseg.configure_cpu_allocator('retain'), equiseg.configure_cpu_allocator('system')]"
)
CLI = """
import contextlib, io
from equiseg import cli
with contextlib.redirect_stdout(io.StringIO()):
    result = cli.main(["models"])
"""

# glibc's default mmaps each request afresh: every page faults again (huge pages would be fewer)
PAGES = 3 * 96 * 2**20 // os.sysconf("SC_PAGE_SIZE")


def _probe(setup: str, value: str | None) -> tuple[dict, str]:
    env = {k: v for k, v in os.environ.items() if k != allocator.ENV}
    if value is not None:
        env[allocator.ENV] = value
    env["OMP_NUM_THREADS"] = "1"
    code = PROBE.replace("SETUP", setup)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1]), r.stderr


def _faulting(system: dict) -> bool:
    return system["faults"] > PAGES // 600


def _quiet(got: dict, system: dict) -> bool:
    return got["faults"] < max(system["faults"] // 4, 64)


def test_importing_equiseg_changes_no_allocator_setting():
    # even with the variable asking for retain: only an explicit call applies it
    got, err = _probe(IMPORT_ONLY, "retain")
    assert (got["mode"], got["fork_hook"]) == ("system", False)
    assert allocator.ENV not in err
    if GLIBC:
        system, _ = _probe(API, "system")
        assert system["result"] == "system" and _faulting(system)
        assert got["faults"] > system["faults"] // 2  # as many faults as glibc's defaults give


@pytest.mark.skipif(not GLIBC, reason="the allocator switch is glibc-only")
def test_the_api_call_applies_retain_by_default_and_stops_the_page_faults():
    default, _ = _probe(API, None)
    system, _ = _probe(API, "system")
    assert (default["result"], default["mode"], default["fork_hook"]) == ("retain", "retain", True)
    assert (system["result"], system["mode"], system["fork_hook"]) == ("system", "system", False)
    assert _faulting(system) and _quiet(default, system)


@pytest.mark.skipif(not GLIBC, reason="the allocator switch is glibc-only")
def test_the_command_applies_it_at_start():
    default, _ = _probe(CLI, None)
    system, _ = _probe(CLI, "system")
    assert default["result"] == 0 and default["mode"] == "retain"
    assert system["result"] == 0 and system["mode"] == "system"
    assert _faulting(system) and _quiet(default, system)


def test_a_bad_value_is_named_and_falls_back_to_system():
    message = "EQUISEG_CPU_ALLOCATOR='jemalloc' is not one of retain, system"
    got, err = _probe(API, "jemalloc")
    assert got["result"] == got["mode"] == "system" and message in err
    got, err = _probe(CLI, "jemalloc")
    assert got["result"] == 0 and got["mode"] == "system" and message in err


def test_the_python_switch_checks_its_argument():
    with pytest.raises(ValueError, match="retain, system"):
        allocator.configure_cpu_allocator("fast")  # raises before touching anything
    got, _ = _probe(API_RETAIN_THEN_SYSTEM, None)
    assert got["result"] == ["retain" if GLIBC else "system", "system"] and got["mode"] == "system"
    if GLIBC:
        # after retain, system sets glibc's large-tensor thresholds back: the 32 and 64 MiB tensors are
        # mmapped (and page-faulted) afresh again
        assert _faulting(got)


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
    equiseg.configure_cpu_allocator()
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


def test_importing_equiseg_leaves_thread_settings_alone():
    """``import equiseg`` changes neither torch's nor OpenCV's thread count (a fresh process). OpenCV
    goes single-threaded only when ``equiseg.data.io`` is imported -- the data loading, for fork safety
    with DataLoader workers (see that module's docstring)."""
    code = (
        "import cv2, json, torch\n"
        "before = (torch.get_num_threads(), cv2.getNumThreads())\n"
        "import equiseg\n"
        "after = (torch.get_num_threads(), cv2.getNumThreads())\n"
        "import equiseg.data.io\n"
        "print(json.dumps([before, after, cv2.getNumThreads()]))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    before, after, data_io = json.loads(out.stdout.strip().splitlines()[-1])
    assert after == before
    assert data_io == 1
