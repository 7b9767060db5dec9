#!/bin/bash
# how docs/results/sgm_conventions/ was made (commit 6dd3df1; AMD EPYC, 2 cores, OMP_NUM_THREADS=1)
equiseg synth --out /work/runs/demo_data --train 400 --val 100 --size 128 --seed 0
# the trained model: the 1800-iteration learning-curve run of docs/reproduction.md (reference convention, λ = 60, seed 1)
OMP_NUM_THREADS=1 python benchmarks/sgm_conventions.py --data-root /work/runs/demo_data \
    --checkpoint /work/runs/curve/ref_l60_1800_s1/last.pt --sizes 128,1024 --batch 2 --out docs/results/sgm_conventions
