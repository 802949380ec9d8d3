#!/usr/bin/env bash
# The quickstart pipeline (see README.md): base eval -> synthesize -> SFT -> eval -> GRPO -> eval -> table.
# Re-running with the same RUN_DIR resumes: finished steps are skipped.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN_DIR=${RUN_DIR:-outputs/experiments/quickstart}
PY=${PY:-.venv/bin/python}
"$PY" -m toolmaster +experiment=quickstart hydra.run.dir="$RUN_DIR" "$@"
cat "$RUN_DIR/comparison.md"
