"""Scripted policies: programmatic players of tool episodes (experts for teachers, baselines for tests).

A policy is a generator function ``policy(task, rng)`` that yields ``Step``s and receives, after each call
step, the environment's ``CallRecord`` (so its next step can depend on genuine observations, exactly as a
model's would). It ends by yielding an ``answer`` step. ``run_policy`` plays one episode through a real
``ToolEnv``; the same steps become assistant turns when a teacher writes trajectories.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from toolmaster.envs.environment import EXECUTION, TRIAL, CallRecord, ToolEnv
from toolmaster.envs.task import Task
from toolmaster.protocol.phases import ActionKind


@dataclass
class Step:
    kind: ActionKind  # trial | call | answer (plain strings work too)
    name: str | None = None
    arguments: dict[str, Any] | None = None
    answer: str | None = None
    thought: str = ""
    train: bool = True  # False: played and kept in the episode, but its turn carries no SFT loss (a slip)


Policy = Callable[[Task, random.Random], Generator[Step, CallRecord, None]]


@dataclass
class ScriptedEpisode:
    task: Task
    steps: list[Step] = field(default_factory=list)
    records: list[CallRecord | None] = field(default_factory=list)  # None for the answer step
    answer: str | None = None

    @property
    def correct(self) -> bool:
        return self.task.check(self.answer)


def run_policy(
    policy: Policy, task: Task, env: ToolEnv, rng: random.Random, max_steps: int = 12
) -> ScriptedEpisode:
    """Play ``policy`` on ``task`` through ``env`` (which is reset here)."""
    env.reset(task)
    episode = ScriptedEpisode(task)
    gen = policy(task, rng)
    record: CallRecord | None = None
    try:
        step = next(gen)
        for _ in range(max_steps):
            episode.steps.append(step)
            if step.kind == ActionKind.ANSWER:
                episode.answer = step.answer
                episode.records.append(None)
                break
            phase = TRIAL if step.kind == ActionKind.TRIAL else EXECUTION
            record = env.execute(step.name, step.arguments or {}, phase)
            episode.records.append(record)
            step = gen.send(record)
    except StopIteration:
        pass
    finally:
        gen.close()
    return episode
