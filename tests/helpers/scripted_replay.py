"""Replays of fixed turns through the real rollout loop (scripted engine, real tokenizer, real tool processes).

``replay(world, tasks, turns_by_task, tokenizer)`` plays, for each task, its list of assistant turns (the last
one repeated if the episode asks for more) and returns the scored trajectories. ``call_turns`` writes a list of
``(name, arguments)`` as ``<call>`` turns followed by an ``<answer>``. The engine finds an episode's task by
its query in the prompt, so the tasks of one replay must have distinct queries.
"""

from __future__ import annotations

import json
from typing import Any

from toolmaster.envs.task import Task
from toolmaster.protocol import get_chat_format
from toolmaster.samplers.loop import RolloutConfig, rollout
from toolmaster.samplers.scripted import ScriptedEngine
from toolmaster.trajectory import Trajectory
from toolmaster.worlds.base import World

FMT = get_chat_format("chatml")


def call_turns(calls: list[tuple[str, dict[str, Any]]], answer: str | None, kind: str = "call") -> list[str]:
    turns = [f"<{kind}>{json.dumps({'name': name, 'arguments': args})}</{kind}>" for name, args in calls]
    return turns + ([f"<answer>{answer}</answer>"] if answer is not None else [])


def replay(
    world: World, tasks: list[Task], turns_by_task: dict[str, list[str]], tokenizer: Any, **config: Any
) -> list[Trajectory]:
    by_query = {task.query: turns_by_task[task.id] for task in tasks}

    def respond(prompt: str) -> str:
        turns = next(t for query, t in by_query.items() if query in prompt)
        done = prompt.count("<|im_start|>assistant") - 1
        return turns[min(done, len(turns) - 1)]

    settings = {"max_turns": 8, "max_new_tokens": 400, "max_total_tokens": 16384, "trial_budget": 2, **config}
    return rollout(
        ScriptedEngine(tokenizer, respond), tokenizer, FMT, world.suite, tasks, RolloutConfig(**settings)
    )
