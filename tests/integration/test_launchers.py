"""Sweeps through the launchers: a real 2-job multirun of ``+experiment=ablation_sweep`` (tiny model, one GRPO step
each) as parallel local processes with ``hydra/launcher=submitit_local``, then ``python -m toolmaster.sweep``
on its directory: both jobs wrote ``metrics.json`` and the aggregator builds the table, CSV and plot."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.commands import TINY_ABLATION

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # two processes that each import torch + Lightning: about a minute on 2 busy cores
def test_submitit_local_two_job_sweep_then_aggregate(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    sweep_dir = tmp_path / "sweep"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "toolmaster",
        "-m",
        *TINY_ABLATION,
        "tools.trial_budget=0,2",  # the command line narrows the experiment's 4 x 3 sweep to 2 x 1
        "reward=outcome_format",
        "hydra/launcher=submitit_local",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Submitit 'local' sweep output dir" in output  # the submitit launcher ran the jobs
    assert "validated against ConfigStore schema" not in output  # the launcher config's warning is filtered

    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [p.name for p in jobs] == [
        "0_trial_budget=0,reward=outcome_format",
        "1_trial_budget=2,reward=outcome_format",
    ]
    logs = list((sweep_dir / ".submitit").glob("*/*_log.out"))
    assert len(logs) == 2  # one submitit job per sweep point
    for job, budget in zip(jobs, (0, 2)):
        metrics = json.loads((job / "metrics.json").read_text())
        assert set(metrics) == {"test_seen", "test_unseen"}
        assert metrics["test_seen"]["episodes"] == 1 and 0.0 <= metrics["test_seen"]["success"] <= 1.0
        summary = json.loads((job / "grpo_summary.json").read_text())
        assert summary["grpo_steps"] == 1
        assert f"tools.trial_budget={budget}" in (job / ".hydra" / "overrides.yaml").read_text()

    aggregate = subprocess.run(
        [sys.executable, "-m", "toolmaster.sweep", str(sweep_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert aggregate.returncode == 0, aggregate.stderr
    rows = list(csv.DictReader((sweep_dir / "sweep.csv").open()))
    assert [(r["tools.trial_budget"], r["reward"], r["status"]) for r in rows] == [
        ("0", "outcome_format", "ok"),
        ("2", "outcome_format", "ok"),
    ]
    assert all(r["success/test_seen"] != "" and r["success/mean"] != "" for r in rows)
    markdown = (sweep_dir / "sweep.md").read_text()
    assert "| 0_trial_budget=0,reward=outcome_format | 0 | outcome_format |" in markdown
    assert "no usable metrics" not in markdown
    png = (sweep_dir / "sweep.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
