"""End to end on BFCL (tools=bfcl, the installed bfcl-eval): a tiny-model eval with per-category metrics, the
prompt-too-long warning at the default episode budget, gold_trials synthesis on train tasks, and one SFT step
on those episodes. Real processes (`python -m toolmaster`), tiny random model: seconds, not minutes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from toolmaster.io import read_jsonl

REPO = Path(__file__).resolve().parents[2]
SPLITS = ["test_seen", "test_unseen", "test_mixed"]
LONG = ["sampler.max_total_tokens=8192", "sampler.max_new_tokens=16", "sampler.max_turns=6"]


def _run(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "toolmaster",
        f"hydra.run.dir={run_dir}",
        "tools=bfcl",
        "data=bfcl",
        *overrides,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO)


def test_tiny_model_eval_reports_per_split_and_category(tmp_path):
    result = _run(
        tmp_path, "stage=eval", "model=tiny", "data.eval_limit=2", *LONG, "sampler.max_steps_per_user_turn=3"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    # eval_limit=2 takes the first scenario's base and miss_func tasks of every split
    assert set(metrics) == {f"{s}{c}" for s in SPLITS for c in ("", "/base", "/miss_func")}
    for split in SPLITS:
        assert metrics[split]["episodes"] == 2 and metrics[f"{split}/base"]["episodes"] == 1
        assert metrics[split]["prompt_too_long"] == 0.0
    records = list(read_jsonl(tmp_path / "trajectories" / "test_mixed.jsonl"))
    ids = [r["task_id"].rsplit("_", 1) for r in records]
    assert [i[0] for i in ids] == ["multi_turn_base", "multi_turn_miss_func"] and ids[0][1] == ids[1][1]
    assert records[0]["prompt_length"] > 2048  # why the default 2048-token episode budget does not fit BFCL
    assert "| test_seen/base |" in result.stdout


def test_default_budget_warns_that_prompts_do_not_fit(tmp_path):
    result = _run(tmp_path, "stage=eval", "model=tiny", "data.eval_limit=1", "data.eval_splits=[test_unseen]")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "have a prompt longer than sampler.max_total_tokens=2048" in result.stdout + result.stderr
    assert json.loads((tmp_path / "metrics.json").read_text())["test_unseen"]["prompt_too_long"] == 1.0


def test_gold_trials_synthesis_then_one_sft_step(tmp_path):
    data = tmp_path / "data.jsonl"
    result = _run(
        tmp_path / "synth",
        "stage=synthesize",
        "teacher=gold_trials",
        "data.train_limit=4",
        f"stage.output_path={data}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    records = list(read_jsonl(data))
    assert len(records) == 4 and all(r["correct"] and r["num_trial_calls"] > 0 for r in records)
    assert all(r["teacher"] == "gold_trials" for r in records)
    run_dir = tmp_path / "sft"
    result = _run(
        run_dir,
        "stage=sft",
        "model=tiny",
        f"data.sft_path={data}",
        "stage.batch_size=2",
        "stage.max_length=8192",
        "stage.val_fraction=0.0",
        "stage.warmup_steps=0",
        "stage.export=false",
        "trainer.max_steps=1",
        "trainer.enable_progress_bar=false",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (run_dir / "checkpoints" / "last.ckpt").exists()


def test_tiny_model_eval_on_the_single_turn_ast_categories(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "toolmaster",
        f"hydra.run.dir={tmp_path}",
        "tools=bfcl_ast",
        "data=bfcl_ast",
        "model=tiny",
        "data.eval_limit=1",
        "sampler.max_turns=2",
        "sampler.max_new_tokens=16",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert {"simple_python", "live_parallel_multiple"} <= set(metrics)
    assert all(m["episodes"] == 1 for m in metrics.values())


def test_oracle_teacher_on_bfcl_is_one_line_naming_gold_trials(tmp_path):
    result = _run(
        tmp_path, "stage=synthesize", "data.train_limit=1", f"stage.output_path={tmp_path / 'd.jsonl'}"
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr  # a ConfigError: exit 2
    last = result.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("toolmaster: config error: teacher=oracle plays only toolworld tasks")
        and "gold_trials" in last
    )
