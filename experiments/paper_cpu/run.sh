#!/usr/bin/env bash
# Issue 30's experiment at size (see README.md): direct vs ToolMaster, 2,000 SFT episodes per arm, GRPO with
# dynamic sampling, 60 eval tasks per split, then the records copied into experiments/paper_cpu/results/.
# Resumable: re-running the same command skips finished steps and resumes the unfinished one from its checkpoint
# (SFT every 20 steps, GRPO every step), so a session that ends mid-run loses at most that much.
#   SEEDS="0" (default)   CONTROL_SEEDS="" (default; "0" adds the static-tools control)   ROOT=outputs/experiments/paper_cpu
#   NICE=10 (the run yields the CPU to interactive work)
# Extra arguments are Hydra overrides for every run.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=${ROOT:-outputs/experiments/paper_cpu}
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS-0}
CONTROL_SEEDS=${CONTROL_SEEDS-}
NICE=${NICE:-10}
run() {  # run <name> <overrides...>
  local name=$1
  shift
  SECONDS=0
  nice -n "$NICE" "$PY" -m toolmaster +experiment=paper_cpu hydra.run.dir="$ROOT/$name" "$@"
  echo "$name: $((SECONDS / 60)) min $((SECONDS % 60)) s (this invocation)"
  experiments/paper_cpu/collect.sh "$ROOT/$name" "experiments/paper_cpu/results/$name"
}
for seed in $SEEDS; do run "seed$seed" seed="$seed" "$@"; done
for seed in $CONTROL_SEEDS; do run "static_seed$seed" seed="$seed" tools.world.variants=per_family "$@"; done
