"""``+experiment=paper_cpu`` end to end on the tiny model: every step of the real pipeline (synthesis in the compact
rendering, SFT of the top layer, GRPO with dynamic sampling on tasks after ``data.train_offset``, evals), shrunk
through the experiment's own size knobs; then a second invocation resumes by skipping every finished step."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "model=tiny", "model.train_top_layers=1", "paper_cpu.sft_steps=2", "paper_cpu.sft_batch_size=2",
    "paper_cpu.grpo_steps=1", "paper_cpu.grpo_tasks_per_step=1", "paper_cpu.grpo_group_size=2",
    "data.train_limit=6", "tools.world.n_train=10", "tools.world.n_test=2", "data.eval_limit=2",
    "sampler.max_turns=2", "sampler.max_new_tokens=16", "sampler.max_total_tokens=1024",
]  # fmt: skip


def _run(run_dir: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "toolmaster", "+experiment=paper_cpu", *TINY, f"hydra.run.dir={run_dir}"]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1200)


@pytest.mark.slow
def test_paper_cpu_runs_end_to_end_and_resumes(tmp_path):
    run_dir = tmp_path / "paper_cpu"
    first = _run(run_dir)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    summary = json.loads((run_dir / "pipeline_summary.json").read_text())
    assert all(step["status"] == "done" for step in summary["steps"].values()), summary
    comparison = json.loads((run_dir / "comparison.json").read_text())
    assert {row["label"] for row in comparison["rows"]} == {
        "base",
        "direct_sft",
        "toolmaster_sft",
        "direct_grpo",
        "toolmaster_grpo",
    }
    system = json.loads((run_dir / "toolmaster_synthesize" / "data.jsonl").read_text().splitlines()[0])
    assert '{"name": "' not in system["messages"][0]["content"]  # compact rendering: no JSON schema lines
    grpo = (run_dir / "toolmaster_grpo" / "logs" / "metrics.csv").read_text()
    assert "train/groups/useful_success" in grpo and "train/groups/kept" in grpo
    sft = json.loads((run_dir / "toolmaster_sft" / "sft_summary.json").read_text())
    assert sft["global_step"] == 2
    second = _run(run_dir)
    assert second.returncode == 0, second.stderr[-3000:]
    again = json.loads((run_dir / "pipeline_summary.json").read_text())
    assert all(step["status"] == "skipped" for step in again["steps"].values()), again
