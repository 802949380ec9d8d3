"""Reward components. Each is a small config record with a ``weight`` and ``__call__(trajectory, task)``.

Components return unweighted values; ``RewardGroup`` multiplies by ``weight`` and sums.
"""

from __future__ import annotations

from dataclasses import dataclass

from toolmaster.envs.task import Task
from toolmaster.trajectory import Trajectory


@dataclass
class Outcome:
    """1.0 when the final answer matches the task's answer, else 0.0."""

    weight: float = 1.0

    def __call__(self, trajectory: Trajectory, task: Task) -> float:
        return 1.0 if task.check(trajectory.answer) else 0.0
