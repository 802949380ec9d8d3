#!/usr/bin/env bash
# Copy a paper_cpu run's small records into the repository (run dirs under outputs/ do not outlive a session):
#   experiments/paper_cpu/collect.sh <run dir> <records dir>
# Safe to run while the pipeline runs: it copies what finished steps wrote (walls, tables, metrics, curves).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=$1
OUT=$2
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
for f in comparison.md comparison.json pipeline_summary.json analysis.md analysis.json; do
  [ -f "$RUN/$f" ] && cp "$RUN/$f" "$OUT/"
done
for step in "$RUN"/*/; do
  name=$(basename "$step")
  [ -f "$step/.done" ] && cp "$step/.done" "$OUT/$name.done.json"
  [ -f "$step/metrics.json" ] && cp "$step/metrics.json" "$OUT/$name.metrics.json"
  for f in sft_summary.json grpo_summary.json; do [ -f "$step/$f" ] && cp "$step/$f" "$OUT/$name.$f"; done
  [ -f "$step/data.summary.json" ] && cp "$step/data.summary.json" "$OUT/$name.data.summary.json"
  [ -f "$step/logs/metrics.csv" ] && cp "$step/logs/metrics.csv" "$OUT/$name.metrics.csv"
done
grpo=()
for arm in toolmaster_grpo direct_grpo; do
  [ -f "$RUN/$arm/logs/metrics.csv" ] && grep -q "train/success" "$RUN/$arm/logs/metrics.csv" && grpo+=("$RUN/$arm")
done
if [ ${#grpo[@]} -gt 0 ]; then
  "$PY" -m toolmaster.curves "${grpo[@]}" --out "$OUT/grpo_curves.png" --csv "$OUT/grpo_curves.csv" || true
fi
if ls "$RUN"/eval_*/metrics.json >/dev/null 2>&1; then
  "$PY" -m toolmaster.analyze "$RUN" >/dev/null 2>&1 && cp "$RUN/analysis.md" "$RUN/analysis.json" "$OUT/" || true
fi
echo "collect: $RUN -> $OUT"
