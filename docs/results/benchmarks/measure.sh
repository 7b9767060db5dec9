#!/bin/bash
# Issue 10/11 measurements after the study, one at a time (2 cores). Run from /work/main.
set -x
cd /work/main
. .venv/bin/activate
lscpu | grep -E "Model name|Flags" > /work/runs/measure_cpu.txt
date
/usr/bin/time -f "demo %e s" equiseg demo --out /work/runs/demo_out > /work/runs/demo.log 2>&1
date
python benchmarks/precision_bf16.py --checkpoint /work/runs/demo_out/run/best.pt --data-root /work/runs/demo_out/data --reps 2 --json /work/runs/precision_bf16.json > /work/runs/precision_bf16.md 2>/work/runs/precision_bf16.err
date
python benchmarks/robustness_speed.py --checkpoint /work/runs/demo_out/run/best.pt --data-root /work/runs/demo_out/data --max-samples 40 --variant-batch-sizes 1 4 8 --repeats 1 --out /work/runs/robustness_speed.json > /work/runs/robustness_speed.md 2>/work/runs/robustness_speed.err
date
python benchmarks/compare_references.py --cmnext-root /tmp/ref_deliver --stitchfusion-root /tmp/ref_stitch --out /work/runs/compare_references.json > /work/runs/compare_references.md 2>/work/runs/compare_references.err
date
python benchmarks/data_speed.py --parts compare --compare-samples 3 --repeats 4 --json /work/runs/data_speed.json > /work/runs/data_speed.md 2>/work/runs/data_speed.err
date
