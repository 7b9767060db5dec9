#!/bin/bash
# Modality dropout on the demo (README "Modality dropout"): the demo's data and recipe (configs/demo.yaml:
# EQUISeg-B0 on RGB-D-E-L, 128² crops, batch 8, lr 1.5e-3) with the ablation tables' full model (their
# first row: self-query hub, cross-attention, residual, SGM with prototypes and random pairs, λ = 60),
# trained for the full demo's 900 iterations, 3 seeds, from scratch, with and without
# train.modality_dropout. CONV=spec (the default convention; records in docs/results/modality_dropout/)
# or CONV=reference (RobustSeg's arithmetic; records in docs/results/modality_dropout_reference/).
# Resumable: each finished run leaves its record there and a re-run takes it instead of training.
set -euo pipefail
REPO=${REPO:-/work/main}            # the checkout whose docs/results/ holds the records
SNAP=${SNAP:-/tmp/wt_md}            # git worktree of the commit that runs the study
RUNS=${RUNS:-/work/runs}            # scratch: data, run folders and checkpoints (not committed)
ONLY=${ONLY:-no_dropout,subset,independent}
CONV=${CONV:-spec}
case "$CONV" in
  spec) NAME=modality_dropout ;;
  reference) NAME=modality_dropout_reference ;;
  *) echo "CONV must be spec or reference, got $CONV" >&2; exit 2 ;;
esac
mkdir -p "$RUNS" && cd "$RUNS"
[ -d demo_data ] || "$REPO/.venv/bin/equiseg" synth --out demo_data --train 400 --val 100 --size 128 --seed 0
git -C "$SNAP" rev-parse HEAD > "${NAME}_commit.txt"
PYTHONPATH="$SNAP" "$REPO/.venv/bin/python" -m equiseg study "$SNAP/configs/demo.yaml" \
    --rows modality_dropout --only "$ONLY" --seeds 1,2,3 --init scratch \
    --records "$REPO/docs/results/$NAME" --out "$RUNS/study_$NAME" \
    --set data.root=demo_data train.max_iters=900 train.val_interval=300 "model.sgm_convention=$CONV" "$@"
