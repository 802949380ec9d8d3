#!/usr/bin/env bash
# Lever runs for paper_small's ToolMaster arm (issue 14): each changes one thing of the SFT arm and evaluates it
# on the same seed-0 tasks as experiments/paper_small (30 per split). Usage: experiments/paper_small/levers.sh NAME
#   sft_long: oracle episodes of all 200 train tasks (not 120), 100 SFT steps (not 40), top half of the layers
#             trained (model.train_top_layers=0.5, so it fits a CPU without native bf16: 0.41x the step time)
# Re-running skips the steps that finished (their output exists).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
NAME=${1:?usage: levers.sh sft_long}
R=${ROOT:-outputs/experiments/paper_small/levers}/$NAME
SEED=${SEED:-0}
EPISODE=(sampler.max_turns=6 sampler.max_new_tokens=96 sampler.max_total_tokens=1536 trainer.enable_progress_bar=false)
case "$NAME" in
  sft_long) TRAIN_LIMIT=200; SFT=(trainer.max_steps=100 stage.warmup_steps=6 model.train_top_layers=0.5) ;;
  *) echo "levers.sh: unknown lever $NAME (known: sft_long)" >&2; exit 2 ;;
esac
SECONDS=0
[ -f "$R/synthesize/data.jsonl" ] || "$PY" -m toolmaster stage=synthesize teacher=oracle seed="$SEED" \
  data.train_limit="$TRAIN_LIMIT" "${EPISODE[@]}" hydra.run.dir="$R/synthesize"
[ -f "$R/sft/hf/config.json" ] || "$PY" -m toolmaster stage=sft seed="$SEED" data.sft_path="$R/synthesize/data.jsonl" \
  stage.lr=2.0e-4 stage.batch_size=4 stage.max_length=1536 "${SFT[@]}" "${EPISODE[@]}" hydra.run.dir="$R/sft"
[ -f "$R/eval/metrics.json" ] || "$PY" -m toolmaster stage=eval model=hf model.path="$R/sft/hf" seed="$SEED" \
  data.eval_limit=30 "${EPISODE[@]}" hydra.run.dir="$R/eval"
echo "lever $NAME: $((SECONDS / 60)) min $((SECONDS % 60)) s"
cat "$R/eval/results.md" 2>/dev/null || cat "$R/eval/metrics.json"
