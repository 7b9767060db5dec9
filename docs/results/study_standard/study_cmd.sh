#!/bin/bash
# The converged study of docs/reproduction.md. Resumable across sessions: every finished run leaves its
# record in docs/results/study_standard/ (committed); re-running this script takes every run whose
# resolved config matches a record from it and trains only the rest. Run from a snapshot of the repo
# (a git worktree at a commit) so that edits to the checkout do not change a running study.
set -euo pipefail
REPO=${REPO:-/work/main}            # the checkout whose docs/results/study_standard holds the records
SNAP=${SNAP:-/tmp/wt_study}         # git worktree of the commit that runs the study
RUNS=${RUNS:-/work/runs}            # scratch: data, run folders and checkpoints (not committed)
mkdir -p "$RUNS" && cd "$RUNS"
# the demo's data: 400 train / 100 val scenes of 128², seed 0 (data.root is relative: "demo_data")
[ -d demo_data ] || "$REPO/.venv/bin/equiseg" synth --out demo_data --train 400 --val 100 --size 128 --seed 0
git -C "$SNAP" rev-parse HEAD > study_standard_commit.txt
lscpu | grep "Model name" > study_standard_cpu.txt
# rows in the order of the plan: the full model under both conventions, then the Tab. 3 rows under the
# reference convention (3 seeds each, from scratch)
PYTHONPATH="$SNAP" "$REPO/.venv/bin/python" -m equiseg study "$SNAP/configs/demo.yaml" \
    --rows sgm_convention,tab3 \
    --only sgm_spec,no_sgm,no_prototype,cosine_pairing,lambda1,lambda40,lambda80 \
    --seeds 1,2,3 --init scratch --schedule standard \
    --records "$REPO/docs/results/study_standard" --out "$RUNS/study_standard" \
    --set data.root=demo_data model.sgm_convention=reference eval.precision=fp32 "$@"
