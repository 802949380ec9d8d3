"""End to end: `python -m toolmaster` evaluates a real model on toolworld and writes its outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from toolmaster.io import read_jsonl
from toolmaster.trajectory import Trajectory

SPLITS = ["test_seen", "test_unseen", "test_evolved"]


def _run(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "toolmaster", f"hydra.run.dir={tmp_path}", *overrides]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


def _check_outputs(run_dir: Path, per_split: int) -> list[Trajectory]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) == set(SPLITS)
    for split in SPLITS:
        m = metrics[split]
        assert m["episodes"] == per_split
        for key in (
            "success",
            "valid_format",
            "trial_calls",
            "execution_calls",
            "tool_error_rate",
            "self_correction",
            "truncated",
            "pass@1",
        ):
            assert key in m and m[key] >= 0
    table = (run_dir / "results.md").read_text()
    assert all(f"| {split} |" in table for split in SPLITS)
    trajs = []
    for split in SPLITS:
        records = list(read_jsonl(run_dir / "trajectories" / f"{split}.jsonl"))
        assert len(records) == per_split
        trajs += [Trajectory.from_dict(r) for r in records]
    for t in trajs:
        assert len(t.token_ids) == len(t.loss_mask) == len(t.logprobs)
        assert t.turns >= 1 and (t.answer is not None or t.truncated)
        assert all(lp == 0.0 for lp, m in zip(t.logprobs, t.loss_mask) if m == 0)
    return trajs


def test_smoke_experiment_with_tiny_model(tmp_path):
    result = _run(tmp_path, "+experiment=smoke")
    assert result.returncode == 0, result.stderr[-2000:]
    _check_outputs(tmp_path, per_split=2)
    assert "| test_unseen |" in result.stdout


@pytest.mark.slow
def test_real_smollm2_eval_run(tmp_path, smollm2_tokenizer):
    from toolmaster.protocol import get_chat_format, tokenize_conversation

    result = _run(tmp_path, "data.eval_limit=2", "sampler.max_new_tokens=48", "sampler.max_turns=2")
    assert result.returncode == 0, result.stderr[-2000:]
    trajs = _check_outputs(tmp_path, per_split=2)
    fmt = get_chat_format("chatml")
    for t in trajs:
        ids, mask = tokenize_conversation(smollm2_tokenizer, fmt, t.messages)
        assert t.token_ids[: t.prompt_length] == ids[: t.prompt_length]
        assert len(ids) == len(t.token_ids) or t.truncated
    assert "SmolLM2-135M-Instruct on toolworld" in result.stdout
