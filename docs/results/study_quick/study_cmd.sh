#!/bin/bash
# the study of docs/reproduction.md, run from a snapshot of the repo at the commit below
cd /work/runs
export PYTHONPATH=/tmp/wt_study
git -C /tmp/wt_study rev-parse HEAD > study_commit.txt
lscpu | grep "Model name" > study_cpu.txt
/usr/bin/time -v /work/main/.venv/bin/python -m equiseg study /tmp/wt_study/configs/demo.yaml \
  --rows tab1,tab2,tab3,sgm_features --seeds 1,2,3 --init scratch,synth --quick \
  --out /work/runs/study_quick --set data.root=/work/study_data data.crop_size=[96,96]
