"""Random-init models of real shapes for GPU benchmarks (``toolmaster.bench.shapes``), and the rollout bench's
``--random-shape`` path, run here on CPU."""

from __future__ import annotations

import re

import pytest
import torch

from toolmaster.bench.rollout import main as rollout_bench
from toolmaster.bench.shapes import random_model, shape_config
from toolmaster.errors import ConfigError


@pytest.mark.slow
def test_smollm2_shape_has_the_real_models_tensors(smollm2):
    """Same parameter names and shapes as the real SmolLM2-135M (whose vocabulary the shapes use)."""
    lm = random_model("smollm2-135m", torch.float32, "cpu", seed=1)
    real = {n: tuple(p.shape) for n, p in smollm2.model.named_parameters()}
    assert {n: tuple(p.shape) for n, p in lm.model.named_parameters()} == real
    assert lm.model.config._attn_implementation == smollm2.model.config._attn_implementation
    again = random_model("smollm2-135m", torch.float32, "cpu", seed=1)
    assert torch.equal(lm.model.lm_head.weight, again.model.lm_head.weight)  # seeded


def test_qwen_shape_matches_qwen2_5_0_5b_apart_from_the_vocabulary():
    from transformers import AutoModelForCausalLM

    config = shape_config("qwen2.5-0.5b", vocab_size=49152)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    embedding = model.get_input_embeddings().weight.numel()
    non_embedding = sum(p.numel() for p in model.parameters()) - embedding
    # Qwen2.5-0.5B's model card: 0.36B non-embedding parameters, 24 layers, 14 query / 2 KV heads
    assert 0.355e9 < non_embedding < 0.365e9 and embedding == 49152 * 896
    assert model.config.tie_word_embeddings and model.model.layers[0].self_attn.q_proj.bias is not None


def test_unknown_shape_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown model shape 'gpt5'; known: qwen2.5-0.5b, smollm2-135m"):
        shape_config("gpt5", 100)


@pytest.mark.slow
def test_rollout_bench_runs_a_random_shape(capsys):
    rollout_bench(["--random-shape", "smollm2-135m", "--batch", "2", "--episodes", "2", "--repeats", "1",
                   "--max-turns", "1", "--max-new-tokens", "4", "--dtype", "float32"])  # fmt: skip
    out = capsys.readouterr().out
    assert "model=random-smollm2-135m dtype=torch.float32 format=chatml episodes=2 batch=2" in out
    assert "ratio (sampler / generate):" in out


@pytest.mark.slow
def test_rollout_bench_plays_rules_first_prompts_and_reports_each_repeat(capsys):
    """``--chat-format chatml_rules_first``: later episodes of other tasks reuse the rules' cache (the
    counter the bench prints), and with two repeats each repeat's ratio is printed."""
    rollout_bench(["--random-shape", "smollm2-135m", "--batch", "2", "--episodes", "3", "--repeats", "2",
                   "--max-turns", "1", "--max-new-tokens", "4", "--dtype", "float32",
                   "--chat-format", "chatml_rules_first"])  # fmt: skip
    out = capsys.readouterr().out
    assert "format=chatml_rules_first episodes=3 batch=2" in out
    reused = re.search(r"prefill: \d+ tokens run, (\d+) reused", out)
    assert reused is not None and int(reused.group(1)) >= 64
    best = re.search(r"ratio \(sampler / generate\): ([\d.]+)\n  ratio per repeat: ([\d.]+), ([\d.]+)\n", out)
    assert best is not None  # two repeats, two paired ratios, under the best run's
    assert float(best.group(1)) >= min(float(best.group(2)), float(best.group(3))) - 0.01
