"""``toolmaster.bench.gpu_check``'s plan and dry run, in-process: every step's command line passes the pre-check.

Its runs (CPU, and the GPU run that skips without one) start processes: ``tests/integration/test_gpu_check.py``.
"""

from __future__ import annotations

import pytest

from toolmaster.bench.gpu_check import main, plan
from toolmaster.cli import precheck


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_plan_steps_pass_the_entry_points_check(device, tmp_path):
    steps = plan(tmp_path, device, "qwen2.5-0.5b", use_vllm=device == "cuda")
    assert [s.name for s in steps] == [
        "synthesize",
        "sft",
        "grpo",
        "grpo_sync",
        "grpo_async",
        *(["rollout"] if device == "cuda" else []),
    ]
    sync, overlapped = (next(s for s in steps if s.name == name) for name in ("grpo_sync", "grpo_async"))
    assert "stage.async_rollout=false" in sync.command and "stage.async_rollout=true" in overlapped.command
    # the two paths differ in that one override only
    assert [a for a in sync.command if "async_rollout" not in a and "run.dir" not in a] == [
        a for a in overlapped.command if "async_rollout" not in a and "run.dir" not in a
    ]
    for step in steps:
        if step.command[2] == "toolmaster":
            assert precheck(step.command[3:]) is None, (step.name, precheck(step.command[3:]))
    sharded = "trainer=fsdp_gpu" if device == "cuda" else "trainer=fsdp_cpu"
    assert all(
        sharded in s.command and "trainer.devices=1" in s.command for s in steps if s.name in ("sft", "grpo")
    )
    if device == "cuda":
        grpo = next(s for s in steps if s.name == "grpo")
        assert "sampler=vllm" in grpo.command and "sampler.engine.enable_sleep_mode=true" in grpo.command


def test_dry_run_prints_every_command(capsys, tmp_path):
    assert main(["--dry-run", "--device", "cpu", "--workdir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert [line.split("]")[0] + "]" for line in printed.splitlines()] == [
        "[synthesize]",
        "[sft]",
        "[grpo]",
        "[grpo_sync]",
        "[grpo_async]",
    ]
