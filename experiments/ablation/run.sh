#!/usr/bin/env bash
# The ablation study (see README.md): synthesize -> SFT -> GRPO sweep trial budget {0,1,2,4} x reward shape
# {outcome, outcome_format, shaped} -> sweep.md / sweep.csv / sweep.png; copies them to experiments/ablation/results/.
# Re-running with the same RUN_DIR resumes: finished steps and finished sweep jobs are skipped.
# Extra arguments are Hydra overrides, e.g. ./run.sh hydra/launcher=submitit_local, or
# ./run.sh ablation.sft_path=outputs/experiments/quickstart/sft/hf (start from an SFT export you have).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN_DIR=${RUN_DIR:-outputs/experiments/ablation}
PY=${PY:-.venv/bin/python}
SECONDS=0
"$PY" -m toolmaster +experiment=ablation hydra.run.dir="$RUN_DIR" "$@"
echo "wall time of this run: $((SECONDS / 60)) min $((SECONDS % 60)) s (a resumed run counts its own part only)"
mkdir -p experiments/ablation/results
cp "$RUN_DIR/sweep.md" "$RUN_DIR/sweep.csv" "$RUN_DIR/sweep.png" "$RUN_DIR/pipeline_summary.json" experiments/ablation/results/
echo "copied to experiments/ablation/results/"
