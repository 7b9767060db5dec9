#!/bin/bash
# The learning-curve runs of docs/reproduction.md ("A schedule that converges?"), session 5, AMD EPYC (2 cores).
# Each run used the checkout as it stood when it started (helpers were committing around them): 1800 at
# 84e8f2e (23:48), 900 at ~96cb4fc (00:13), 3600 at ~b9779e6 (00:25), 7200 at 6541f64 (01:14). None of the
# commits in between is meant to change the arithmetic of this configuration; the converged study's first
# run (sgm_config, seed 1, 3600 iterations) repeats the 3600 run and will show whether that holds.
equiseg synth --out /work/runs/demo_data --train 400 --val 100 --size 128 --seed 0
for n in 900 1800 3600 7200; do
  equiseg train configs/demo.yaml --work-dir /work/runs/curve/ref_l60_${n}_s1 --set data.root=/work/runs/demo_data \
      model.lambda_sgm=60 model.sgm_convention=reference train.max_iters=$n train.warmup_iters=$((n / 10)) \
      train.val_interval=$(( n <= 1800 ? 150 : (n == 3600 ? 300 : 600) )) train.seed=1 eval.precision=fp32
done
python docs/learning_curve.py "900 iterations=/work/runs/curve/ref_l60_900_s1" \
    "1800 iterations=/work/runs/curve/ref_l60_1800_s1" "3600 iterations=/work/runs/curve/ref_l60_3600_s1" \
    "7200 iterations=/work/runs/curve/ref_l60_7200_s1" --out docs/results/learning_curve/demo_reference_l60
