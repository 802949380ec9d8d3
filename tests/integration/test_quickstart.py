"""``python -m toolmaster +experiment=quickstart`` (``make demo``) as typed, on the tiny model with small shared
sizes: all six steps run on the default (per-task) toolworld and the run ends with the table base / sft /
sft_grpo. Its SFT and GRPO steps set ``model.train_top_layers=auto``: the top half of the layers train on a
CPU without native bf16 (1 of the tiny model's 2), every layer elsewhere; the step logs say which.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from toolmaster.models.loading import cpu_has_fast_bf16

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quickstart_as_typed_ends_with_its_table(tmp_path):
    run_dir = tmp_path / "quickstart"
    command = [
        sys.executable,
        "-m",
        "toolmaster",
        "+experiment=quickstart",
        "model=tiny",
        "data.eval_limit=2",
        "data.train_limit=8",
        "sampler.max_turns=2",
        "sampler.max_new_tokens=8",
        f"hydra.run.dir={run_dir}",
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    comparison = json.loads((run_dir / "comparison.json").read_text())
    assert [row["label"] for row in comparison["rows"]] == ["base", "sft", "sft_grpo"]
    assert comparison["splits"] == ["test_seen", "test_unseen", "test_evolved"]
    assert all(row["episodes"] == {s: 2 for s in comparison["splits"]} for row in comparison["rows"])
    assert "| sft_grpo |" in done.stdout + (run_dir / "comparison.md").read_text()
    for step in ("sft", "grpo"):
        log = (run_dir / step / "step.log").read_text()
        frozen = "model.train_top_layers=auto: training the top 1 layers" in log
        assert frozen is not cpu_has_fast_bf16(), log[-2000:]
