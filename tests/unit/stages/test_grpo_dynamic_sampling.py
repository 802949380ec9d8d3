"""``stage.filter_groups`` (dynamic sampling) in the GRPO module, on a tiny model with scripted rollouts: the
groups without a learning signal are dropped, fresh tasks refill the step to ``tasks_per_step`` groups, and the
share of useful groups is logged with the filter on and off."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch

from toolmaster.envs import Task, Tool, ToolSuite
from toolmaster.models import load_model
from toolmaster.protocol import get_chat_format
from toolmaster.rewards import build_reward_group
from toolmaster.samplers.loop import RolloutConfig
from toolmaster.samplers.scripted import ScriptedEngine
from toolmaster.settings import GRPOSettings
from toolmaster.stages.grpo.data import GRPODataModule
from toolmaster.stages.grpo.module import GRPOModule

OUTCOME = {"outcome": {"_target_": "toolmaster.rewards.components.Outcome", "weight": 1.0}}
ALWAYS_RIGHT, ALWAYS_WRONG, MIXED = {0, 1}, {2, 3}, {4, 5}


def _suite() -> ToolSuite:
    def zq_add(a: int, b: int) -> int:
        return a + b

    schema = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}
    return ToolSuite.of([Tool("zq_add", "Adds.", schema, zq_add)])


def _tasks() -> list[Task]:
    return [
        Task(id=f"t{i}", query=f"Add {i} and 2.", answer=str(i + 2), tool_names=["zq_add"]) for i in range(6)
    ]


def _respond() -> Callable[[str], str]:
    """Tasks 0-1 always solved, 2-3 never, 4-5 in every other episode."""
    answers = [0]

    def respond(prompt: str) -> str:
        task = int(prompt.split("Add ", 1)[1].split(" ", 1)[0])
        if "<|im_start|>tool" not in prompt:
            return "<call>" + json.dumps({"name": "zq_add", "arguments": {"a": task, "b": 2}}) + "</call>"
        answers[0] += 1
        right = task in ALWAYS_RIGHT or (task in MIXED and answers[0] % 2 == 0)
        return f"<answer>{task + 2 if right else 'no idea'}</answer>"

    return respond


def _run(first_batch: list[int], **settings: Any) -> tuple[GRPOModule, pl.Trainer, dict[str, list]]:
    loaded = load_model(source="tiny", dtype="float32", device="cpu")
    tasks = _tasks()
    base = {
        "tasks_per_step": 2,
        "group_size": 4,
        "lr": 1e-3,
        "micro_batch_size": 4,
        "log_trajectories_every": 0,
    }
    module = GRPOModule(
        loaded.model,
        loaded.tokenizer,
        get_chat_format("chatml"),
        _suite(),
        build_reward_group(OUTCOME),
        RolloutConfig(max_turns=3, max_new_tokens=48, temperature=1.0),
        GRPOSettings(**{**base, **settings}),
        engine=ScriptedEngine(loaded.tokenizer, _respond()),
        task_pool=tasks,
    )
    seen: dict[str, list] = {"rolled": [], "packed": []}
    rollout_tasks, pack = module.rollout_tasks, module.pack

    def recording_rollout(batch: list[Task], step: int, round_: int = 0) -> list:
        seen["rolled"].append(([t.id for t in batch], round_))
        return rollout_tasks(batch, step, round_)

    def recording_pack(trajectories: list, advantages: torch.Tensor) -> Any:
        seen["packed"].append((trajectories, advantages))
        return pack(trajectories, advantages)

    module.rollout_tasks = recording_rollout  # type: ignore[method-assign]
    module.pack = recording_pack  # type: ignore[method-assign]
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_steps=1, max_epochs=None, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(module, datamodule=GRPODataModule([tasks[i] for i in first_batch], 2, 0))
    return module, trainer, seen


def _metric(trainer: pl.Trainer, name: str) -> float:
    return float(trainer.callback_metrics[name])


def test_drops_exactly_the_zero_variance_groups_and_refills_to_the_batch():
    module, trainer, seen = _run([0, 2], filter_groups="success", max_refill_rounds=2)
    rounds = seen["rolled"]
    assert sorted(rounds[0][0]) == ["t0", "t2"] and rounds[0][1] == 0
    tried = [task for ids, _ in rounds for task in ids]
    assert len(tried) == len(set(tried))  # no task rolled out twice in a step
    trajectories, advantages = seen["packed"][0]
    kept = [t.task_id for t in trajectories]
    assert sorted(set(kept)) == ["t4", "t5"] and len(kept) == 2 * 4  # the only useful groups, the full batch
    assert (advantages != 0).all()
    assert _metric(trainer, "train/groups/kept") == 2.0
    assert _metric(trainer, "train/groups/useful_success") == 0.0  # first round: neither group was useful
    assert _metric(trainer, "train/groups/refill_rounds") == len(rounds) - 1
    assert _metric(trainer, "train/groups/episodes") == 4 * len(tried)


def test_keeps_useful_first_round_groups_and_stops_refilling_when_the_batch_is_full():
    module, trainer, seen = _run([4, 5], filter_groups="success", max_refill_rounds=2)
    assert len(seen["rolled"]) == 1  # both groups useful: no refill
    assert (
        _metric(trainer, "train/groups/useful_success") == 1.0 and _metric(trainer, "train/groups/kept") == 2
    )


def test_out_of_rounds_with_nothing_useful_updates_nothing():
    module, trainer, seen = _run([0, 2], filter_groups="success", max_refill_rounds=0)
    trajectories, advantages = seen["packed"][0]
    assert sorted({t.task_id for t in trajectories}) == ["t0", "t2"] and (advantages == 0).all()
    assert _metric(trainer, "train/groups/kept") == 0.0 and _metric(trainer, "train/loss") == 0.0


def test_filter_off_keeps_the_batch_and_still_logs_the_useful_share():
    module, trainer, seen = _run([0, 4], filter_groups=None)
    assert len(seen["rolled"]) == 1
    assert sorted({t.task_id for t in seen["packed"][0][0]}) == ["t0", "t4"]
    assert _metric(trainer, "train/groups/useful_success") == 0.5
    assert _metric(trainer, "train/groups/useful_reward") == 0.5
