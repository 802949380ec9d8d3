"""``stage.async_rollout``: the next step's batch is played in the background by a copy of the policy holding
the weights the current update starts from, so every trained episode is at most one GRPO step stale, and its
recorded log-probs are exactly those of the weights that played it (the ratio the loss clips is then correct).

The model is the tiny random Llama with the real HF engine (the async path needs it); a reward on the sampled ids makes the advantages non-zero, so the weights really change between steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch
from helpers.grpo_scripted import FMT, add_tasks, fit_module, grpo_settings, scripted_suite

from toolmaster.algorithms.logprobs import policy_logprobs
from toolmaster.models import load_model
from toolmaster.rewards.compose import RewardGroup
from toolmaster.samplers.loop import RolloutConfig
from toolmaster.stages.grpo.async_rollout import RolloutPrefetcher
from toolmaster.stages.grpo.data import GRPODataModule
from toolmaster.stages.grpo.module import GRPOModule
from toolmaster.trajectory import Trajectory


@dataclass
class SampledIds:
    """Reward = a hash of the sampled ids in [0, 1): varies between episodes of a random model (which always
    fills its token cap), so every group has signal and the weights really move."""

    weight: float = 1.0

    def __call__(self, trajectory: Trajectory, task: Any) -> float:
        return sum(trajectory.token_ids[trajectory.prompt_length :]) % 97 / 97


def _module(**settings: Any) -> GRPOModule:
    loaded = load_model(source="tiny", dtype="float32", device="cpu", seed=0)
    return GRPOModule(
        loaded.model,
        loaded.tokenizer,
        FMT,
        scripted_suite(),
        RewardGroup({"ids": SampledIds()}),
        RolloutConfig(max_turns=2, max_new_tokens=10, temperature=1.0, seed=0),
        grpo_settings(async_rollout=True, old_logprobs="sampler", lr=5e-3, micro_batch_size=8, **settings),
        max_grad_norm=None,
    )


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def test_async_rollout_needs_sampler_logprobs():
    with pytest.raises(ValueError, match="old_logprobs=sampler"):
        grpo_settings(async_rollout=True)


def test_each_step_is_played_by_the_previous_steps_weights_and_scored_under_them(monkeypatch):
    module = _module()
    at_refresh: dict[
        int, dict[str, torch.Tensor]
    ] = {}  # version -> the policy's weights when the copy took them
    refresh = RolloutPrefetcher.refresh

    def recording_refresh(self: RolloutPrefetcher, policy: torch.nn.Module, version: int) -> None:
        at_refresh[version] = _weights(policy)
        refresh(self, policy, version)

    monkeypatch.setattr(RolloutPrefetcher, "refresh", recording_refresh)
    trained: list[tuple[Any, dict[str, torch.Tensor]]] = []  # each step's packed batch, weights it trains
    pack = module.pack

    def recording_pack(trajectories: list[Trajectory], advantages: torch.Tensor) -> Any:
        packed = pack(trajectories, advantages)
        trained.append((packed, _weights(module.model)))
        return packed

    module.pack = recording_pack  # type: ignore[method-assign]
    trainer = fit_module(module, steps=3)

    # step 0 plays synchronously; steps 1 and 2 were played during the previous update, one version behind
    assert module.behaviour_versions == [(0, 0, 0), (1, 0, 1), (2, 1, 2)]
    assert float(trainer.callback_metrics["train/async/staleness"]) == 1.0
    assert sorted(at_refresh) == [0, 1]  # no submission after the last step
    assert module._prefetcher is None  # closed at the end of fit

    reference = load_model(source="tiny", dtype="float32", device="cpu", seed=0).model.eval()
    for step, played_at, _ in module.behaviour_versions[1:]:
        packed, weights_trained = trained[step]
        mask = packed.loss_mask
        assert mask.any()
        with torch.no_grad():
            reference.load_state_dict(at_refresh[played_at])
            behaviour = policy_logprobs(reference, packed, 1.0)[0]
            reference.load_state_dict(weights_trained)
            current = policy_logprobs(reference, packed, 1.0)[0]
        # the sampler's log-probs are those of the weights that played the episodes ...
        torch.testing.assert_close(packed.old_logprobs[mask], behaviour[mask], atol=2e-4, rtol=1e-4)
        # ... which are not the weights trained (the ratio is not 1: the clipped correction is at work)
        assert (packed.old_logprobs[mask] - current[mask]).abs().max() > 1e-3


def test_a_mispredicted_batch_is_dropped_and_played_synchronously():
    module = _module()
    tasks = add_tasks()
    datamodule = GRPODataModule(tasks, module.settings.tasks_per_step, module.settings.seed)
    outside = add_tasks(6)[4:]  # tasks the plan never serves: every prediction is wrong
    datamodule.next_batch = lambda epoch, index: outside  # type: ignore[method-assign]
    played: list[list[str]] = []
    rollout_tasks = module.rollout_tasks

    def recording(tasks: list[Any], step: int, round_: int = 0, engine: Any = None) -> list[Trajectory]:
        trajectories = rollout_tasks(tasks, step, round_, engine)
        played.append(sorted({t.task_id for t in trajectories}))
        return trajectories

    module.rollout_tasks = recording  # type: ignore[method-assign]
    trainer = fit_module(module, steps=2, datamodule=datamodule)
    # both steps trained on what they were played with at their own weights (staleness 0)
    assert [(played_at, trained_at) for _, played_at, trained_at in module.behaviour_versions] == [
        (0, 0),
        (1, 1),
    ]
    assert float(trainer.callback_metrics["train/async/staleness"]) == 0.0
    assert len(played) == 3  # step 0, the mispredicted background batch, step 1 again synchronously
