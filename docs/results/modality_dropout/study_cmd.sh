#!/bin/bash
# Modality dropout on the demo (README "Modality dropout"): the demo's data and recipe (configs/demo.yaml:
# EQUISeg-B0 on RGB-D-E-L, 128² crops, batch 8, lr 1.5e-3) with the ablation tables' full model (their
# first row: self-query hub, cross-attention, residual, SGM with prototypes and random pairs, λ = 60, the
# default SGM convention), trained for the full demo's 900 iterations, 3 seeds, from scratch, with and
# without train.modality_dropout.
# Resumable: each finished run leaves its record in docs/results/modality_dropout/ and is reused.
set -euo pipefail
REPO=${REPO:-/work/main}            # the checkout whose docs/results/modality_dropout holds the records
SNAP=${SNAP:-/tmp/wt_md}            # git worktree of the commit that runs the study
RUNS=${RUNS:-/work/runs}            # scratch: data, run folders and checkpoints (not committed)
ONLY=${ONLY:-no_dropout,subset,independent}
mkdir -p "$RUNS" && cd "$RUNS"
[ -d demo_data ] || "$REPO/.venv/bin/equiseg" synth --out demo_data --train 400 --val 100 --size 128 --seed 0
git -C "$SNAP" rev-parse HEAD > modality_dropout_commit.txt
PYTHONPATH="$SNAP" "$REPO/.venv/bin/python" -m equiseg study "$SNAP/configs/demo.yaml" \
    --rows modality_dropout --only "$ONLY" --seeds 1,2,3 --init scratch \
    --records "$REPO/docs/results/modality_dropout" --out "$RUNS/study_modality_dropout" \
    --set data.root=demo_data train.max_iters=900 train.val_interval=300 "$@"
