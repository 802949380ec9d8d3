#!/usr/bin/env bash
# The paper's comparison at small scale (see README.md): direct vs ToolMaster arms, SFT then GRPO, then eval,
# once per seed on the per-task world, once on the static-tools control, then the table pooled over seeds.
# Re-running resumes: finished steps (and finished seeds) are skipped.
#   SEEDS="0 1 2" (default; "" for none)   CONTROL_SEEDS="0" (default; "" for none)   ROOT=outputs/experiments/paper_small
# Extra arguments are Hydra overrides for every run, e.g. ./run.sh data.eval_limit=15
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=${ROOT:-outputs/experiments/paper_small}
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS-0 1 2}
CONTROL_SEEDS=${CONTROL_SEEDS-0}
GAPS=(--gap toolmaster_sft:direct_sft --gap toolmaster_grpo:direct_grpo)
for seed in $SEEDS; do
  SECONDS=0
  "$PY" -m toolmaster +experiment=paper_small seed="$seed" hydra.run.dir="$ROOT/seed$seed" "$@"
  echo "seed $seed: $((SECONDS / 60)) min $((SECONDS % 60)) s (this invocation; a resumed seed counts its own part)"
done
for seed in $CONTROL_SEEDS; do
  "$PY" -m toolmaster +experiment=paper_small seed="$seed" tools.world.variants=per_family \
    hydra.run.dir="$ROOT/static_seed$seed" "$@"
done
dirs=()
for seed in $SEEDS; do dirs+=("$ROOT/seed$seed"); done
if [ -n "$SEEDS" ]; then
  "$PY" -m toolmaster.seeds "${dirs[@]}" "${GAPS[@]}" --out "$ROOT/seeds.md"
fi
if [ -n "$CONTROL_SEEDS" ]; then
  control=()
  for seed in $CONTROL_SEEDS; do control+=("$ROOT/static_seed$seed"); done
  "$PY" -m toolmaster.seeds "${control[@]}" "${GAPS[@]}" --out "$ROOT/static_seeds.md"
fi
