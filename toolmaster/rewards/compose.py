"""A weighted sum of named reward components, built from the ``reward.components`` config dict.

Outcome dominance: when a group has an ``Outcome`` component (or one named ``outcome``), the shaping terms
(every other component) together must be able to add *less* than a correct answer is worth, i.e.
``sum(max(0, c.max_value) for c in others) < sum(o.max_value for o in outcomes)``; otherwise a policy could
collect more reward by polishing the format, or by calling the gold tools and giving up, than by answering
correctly. ``build_reward_group`` refuses such a shape with a one-line ``ConfigError``. Components without a
``max_value`` are taken as bounded by ``weight`` (raw values assumed in [0, 1]).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from toolmaster.config import instantiate_node
from toolmaster.envs.task import Task
from toolmaster.errors import ConfigError
from toolmaster.rewards.components import Outcome
from toolmaster.trajectory import Trajectory


@dataclass
class RewardGroup:
    """Named reward components; the reward is the weighted sum of their values."""

    components: dict[str, Any]

    def __call__(self, trajectory: Trajectory, task: Task) -> tuple[float, dict[str, float]]:
        """The weighted total and each component's unweighted value."""
        parts = {name: float(fn(trajectory, task)) for name, fn in self.components.items()}
        total = sum(self.components[name].weight * value for name, value in parts.items())
        return total, parts

    def score(self, trajectories: list[Trajectory], tasks: Mapping[str, Task]) -> None:
        """Fill ``reward`` and ``reward_components`` of each trajectory in place."""
        for trajectory in trajectories:
            trajectory.reward, trajectory.reward_components = self(trajectory, tasks[trajectory.task_id])


def max_contribution(component: Any) -> float:
    """The largest weighted amount a component can add (``max_value``, else ``weight`` if positive)."""
    value = getattr(component, "max_value", None)
    if value is None:
        value = float(getattr(component, "weight", 0.0))
    return max(0.0, float(value))


def check_outcome_dominance(components: Mapping[str, Any]) -> None:
    """Raise ConfigError when the non-outcome components can together be worth as much as a correct answer."""
    outcomes = {name: c for name, c in components.items() if isinstance(c, Outcome) or name == "outcome"}
    if not outcomes:
        return
    outcome_value = sum(max_contribution(c) for c in outcomes.values())
    shaping = {name: max_contribution(c) for name, c in components.items() if name not in outcomes}
    total = sum(shaping.values())
    if total > 0 and total >= outcome_value:
        parts = " + ".join(f"{name} {value:g}" for name, value in shaping.items() if value > 0)
        raise ConfigError(
            f"reward shaping can outweigh a correct answer: {parts} = {total:g} >= outcome {outcome_value:g}; "
            "lower those weights (reward.components.<name>.weight) below the outcome weight"
        )


def build_reward_group(components: Mapping[str, Mapping[str, Any]]) -> RewardGroup:
    """Instantiate each ``_target_`` node of ``reward.components`` (keyed by name) and check the shape."""
    if not components:
        raise ConfigError("reward.components is empty; name at least one component")
    built = {
        name: instantiate_node(dict(spec), f"reward.components.{name}") for name, spec in components.items()
    }
    check_outcome_dominance(built)
    return RewardGroup(built)
