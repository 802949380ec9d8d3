#!/usr/bin/env bash
# Teacher-forced token accuracy by role (python -m toolmaster.teacher_forcing) of both SFT arms of a paper_cpu
# run, on teacher episodes of 60 tasks per split the SFT never saw: held-out train tasks (data.train_offset=2000,
# the GRPO tasks) and the three test splits. ToolMaster SFT is scored on oracle episodes, direct SFT on golden
# direct episodes (each arm on the kind of episode it imitated).
#   experiments/paper_cpu/teacher_forcing.sh outputs/experiments/paper_cpu/seed0 experiments/paper_cpu/results/seed0
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=${1:?run dir (outputs/experiments/paper_cpu/seed0)}
RESULTS=${2:?records dir}
PY=${PY:-.venv/bin/python}
OUT="$RUN/teacher_forcing"
WORLD=(model=smollm2_135m model.chat_format=chatml_compact seed=0 tools.world.n_train=2400 tools.world.n_test=60)
mkdir -p "$OUT" "$RESULTS"
for teacher in oracle direct; do
  budget=(); [ "$teacher" = direct ] && budget=(tools.trial_budget=0)
  for split in train test_seen test_unseen test_evolved; do
    offset=(); [ "$split" = train ] && offset=(data.train_offset=2000)
    dir="$OUT/${teacher}_$split"
    [ -f "$dir/data.jsonl" ] || "$PY" -m toolmaster "${WORLD[@]}" stage=synthesize teacher=$teacher "${budget[@]}" \
      data.train_split=$split data.train_limit=60 "${offset[@]}" hydra.run.dir="$dir" > "$dir.log" 2>&1
  done
done
for arm in toolmaster:oracle direct:direct; do
  name=${arm%%:*}; teacher=${arm##*:}
  "$PY" -m toolmaster.teacher_forcing --model "$RUN/${name}_sft/hf" --chat-format chatml_compact \
    --data "heldout_train=$OUT/${teacher}_train/data.jsonl" --data "test_seen=$OUT/${teacher}_test_seen/data.jsonl" \
    --data "test_unseen=$OUT/${teacher}_test_unseen/data.jsonl" --data "test_evolved=$OUT/${teacher}_test_evolved/data.jsonl" \
    --json "$RESULTS/teacher_forcing_${name}_sft.json" | tee "$RESULTS/teacher_forcing_${name}_sft.md"
done
