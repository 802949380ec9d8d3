#!/usr/bin/env bash
# The paper's comparison at small scale (see README.md): direct vs ToolMaster arms, SFT then GRPO, then eval.
# Re-running with the same RUN_DIR resumes: finished steps are skipped.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN_DIR=${RUN_DIR:-outputs/experiments/paper_small}
PY=${PY:-.venv/bin/python}
"$PY" -m toolmaster +experiment=paper_small hydra.run.dir="$RUN_DIR" "$@"
cat "$RUN_DIR/comparison.md"
