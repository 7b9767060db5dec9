#!/bin/bash
# Before/after wall times of the package redesign (docs/architecture.md): the demo and the test suite, the
# code before the redesign (BEFORE, a git worktree) against the code after it (AFTER), timed side by side
# by farm-bench (A = after, B = before, run in turn). Then the data loader's buffer pool: the quick demo
# with the pool as it is and with it bypassed, counting how many arrays the pool served.
set -uo pipefail
REPO=${REPO:-/work/main}
BEFORE=${BEFORE:-/tmp/wt_before}     # git worktree at the commit before the redesign
AFTER=${AFTER:-/tmp/wt_after}        # git worktree at the commit measured
RUNS=${RUNS:-/work/runs/redesign}
PY=$REPO/.venv/bin/python
mkdir -p "$RUNS" && cd "$RUNS"
{ lscpu | grep "Model name"; nproc; git -C "$BEFORE" rev-parse HEAD; git -C "$AFTER" rev-parse HEAD; } > machine.txt
# the demo, full size, once each (about 10 min a run on 2 cores)
farm-bench -n 1 --warmup 0 --timeout 3600 \
  --vs "sh -c 'cd $RUNS && PYTHONPATH=$BEFORE exec $PY -m equiseg demo --out demo_before >>demo_before.log 2>&1'" \
  -- sh -c "cd $RUNS && PYTHONPATH=$AFTER exec $PY -m equiseg demo --out demo_after >>demo_after.log 2>&1" > bench_demo.txt 2>&1
# the test suite of each commit, as CI runs it (pytest -q)
farm-bench -n 1 --warmup 0 --timeout 3600 \
  --vs "sh -c 'cd $BEFORE && PYTHONPATH=$BEFORE exec $PY -m pytest -q -p no:cacheprovider >>$RUNS/tests_before.log 2>&1'" \
  -- sh -c "cd $AFTER && PYTHONPATH=$AFTER exec $PY -m pytest -q -p no:cacheprovider >>$RUNS/tests_after.log 2>&1" > bench_tests.txt 2>&1
# the buffer pool: quick demo with the pool (A) and bypassed (B), each printing how many arrays it served
cat > pool_demo.py <<'PYEOF'
import sys
import equiseg.data.io as io
empty = io._POOL.empty
HITS = f"pool_hits_{sys.argv[1]}.txt"  # a line per large request, from any process (loader workers too)
open(HITS, "w").close()
def counting(shape, dtype):
    import math, numpy as np
    if math.prod(shape) * np.dtype(dtype).itemsize >= (1 << 20):
        with open(HITS, "a") as f:
            f.write(f"{tuple(shape)} {np.dtype(dtype)}\n")
    return empty(shape, dtype)
io._POOL.empty = counting
if sys.argv[1] == "off":
    io._POOL.min_bytes = 1 << 62  # every request bypasses the pool: plain np.empty
from equiseg.cli import main
rc = main(["demo", "--quick", "--out", f"pool_{sys.argv[1]}"])
print(f"pool {sys.argv[1]}: arrays of >= 1 MiB requested: {sum(1 for _ in open(HITS))}")
sys.exit(rc)
PYEOF
farm-bench -n 1 --warmup 0 --timeout 1800 \
  --vs "sh -c 'cd $RUNS && PYTHONPATH=$AFTER exec $PY pool_demo.py off >>pool_off.log 2>&1'" \
  -- sh -c "cd $RUNS && PYTHONPATH=$AFTER exec $PY pool_demo.py on >>pool_on.log 2>&1" > bench_pool.txt 2>&1
tail -2 pool_on.log pool_off.log
