#!/usr/bin/env bash
# BFCL multi-turn (see README.md): SmolLM2-135M base, SFT on direct gold episodes, SFT on gold_trials episodes,
# each evaluated on test_seen / test_unseen / test_mixed per category, scored by BFCL's own checker.
# Needs bfcl-eval: `make bfcl`. Re-running with the same RUN_DIR resumes: finished steps are skipped.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN_DIR=${RUN_DIR:-outputs/experiments/bfcl}
PY=${PY:-.venv/bin/python}
"$PY" -m toolmaster +experiment=bfcl_compare hydra.run.dir="$RUN_DIR" "$@"
cat "$RUN_DIR/comparison.md"
# Each eval step's per-split and per-category table: "$RUN_DIR"/eval_*/results.md
# GRPO from either SFT model (if time allows), e.g. from the trials arm:
#   "$PY" -m toolmaster stage=grpo tools=bfcl data=bfcl model=hf model.path="$RUN_DIR"/trials_sft/hf \
#     sampler.max_total_tokens=8192 sampler.max_turns=40 sampler.max_new_tokens=128 \
#     sampler.max_steps_per_user_turn=8 stage.group_size=4 stage.tasks_per_step=2 trainer.max_steps=20 \
#     hydra.run.dir="$RUN_DIR"/trials_grpo
