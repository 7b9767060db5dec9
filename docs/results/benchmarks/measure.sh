#!/bin/bash
# Session 4 speed measurements, one at a time (2 cores). Run from the repository root.
# Results land in $RUNS (default /work/runs/s4final); the committed copies are in docs/results/benchmarks/.
# Public checkouts: git -C <mirror of jamycheung/DELIVER> archive HEAD | tar -x -C /tmp/ref_deliver (and
# LiBingyu01/StitchFusion into /tmp/ref_stitch).
set -x
RUNS=${RUNS:-/work/runs/s4final}
mkdir -p "$RUNS"
. .venv/bin/activate
lscpu | grep -E "Model name|Flags|L3" > "$RUNS/cpu.txt"
git rev-parse HEAD > "$RUNS/commit.txt"
date
python benchmarks/compare_references.py --cmnext-root /tmp/ref_deliver --stitchfusion-root /tmp/ref_stitch --out "$RUNS/compare_references.json" > "$RUNS/compare_references.md" 2>"$RUNS/compare_references.err"
date
/usr/bin/time -f "demo %e s" equiseg demo --out "$RUNS/demo_out" > "$RUNS/demo.log" 2>&1
date
python benchmarks/precision_bf16.py --checkpoint "$RUNS/demo_out/run/best.pt" --data-root "$RUNS/demo_out/data" --reps 2 --json "$RUNS/precision_bf16.json" > "$RUNS/precision_bf16.md" 2>"$RUNS/precision_bf16.err"
date
python benchmarks/robustness_speed.py --checkpoint "$RUNS/demo_out/run/best.pt" --data-root "$RUNS/demo_out/data" --max-samples 40 --variant-batch-sizes 1 4 8 --repeats 1 --out "$RUNS/robustness_speed.json" > "$RUNS/robustness_speed.md" 2>"$RUNS/robustness_speed.err"
date
python benchmarks/train_throughput.py > "$RUNS/train_throughput.md" 2>"$RUNS/train_throughput.err"
date
# Then, at commit 476d4ea (compare_references with --process-repeats, default 2), the table in the README:
#   RUNS=/work/runs/s4rep; python benchmarks/compare_references.py --cmnext-root /tmp/ref_deliver \
#     --stitchfusion-root /tmp/ref_stitch --out "$RUNS/compare_references.json" > "$RUNS/compare_references.md"
# compare_references.json/.md here are that run; compare_references_8ceb24a.* and _0babba3.* the
# single-process runs before it.
