#!/usr/bin/env bash
# What SFT alone buys (see README.md): base vs SFT on direct data vs SFT on oracle trial data, then the table.
# Re-running with the same RUN_DIR resumes: finished steps are skipped. The same RUN_DIR then resumes into
# experiments/paper_small/run.sh, which adds the GRPO arms on top of these steps.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN_DIR=${RUN_DIR:-outputs/experiments/paper_small/seed0}  # paper_small/run.sh resumes it as seed 0
PY=${PY:-.venv/bin/python}
"$PY" -m toolmaster +experiment=sft_compare hydra.run.dir="$RUN_DIR" "$@"
cat "$RUN_DIR/comparison.md"
