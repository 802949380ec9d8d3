"""A weighted sum of named reward components, built from the ``reward.components`` config dict."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from toolmaster.config import import_target
from toolmaster.envs.task import Task
from toolmaster.errors import ConfigError
from toolmaster.trajectory import Trajectory


@dataclass
class RewardGroup:
    components: dict[str, Any]

    def __call__(self, trajectory: Trajectory, task: Task) -> tuple[float, dict[str, float]]:
        parts = {name: float(fn(trajectory, task)) for name, fn in self.components.items()}
        total = sum(self.components[name].weight * value for name, value in parts.items())
        return total, parts

    def score(self, trajectories: list[Trajectory], tasks: Mapping[str, Task]) -> None:
        """Fill ``reward`` and ``reward_components`` of each trajectory in place."""
        for trajectory in trajectories:
            trajectory.reward, trajectory.reward_components = self(trajectory, tasks[trajectory.task_id])


def build_reward_group(components: Mapping[str, Mapping[str, Any]]) -> RewardGroup:
    if not components:
        raise ConfigError("reward.components is empty; name at least one component")
    built = {}
    for name, spec in components.items():
        spec = dict(spec)
        target = import_target(spec.pop("_target_"), f"reward.components.{name}")
        built[name] = target(**spec)
    return RewardGroup(built)
