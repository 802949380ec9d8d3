"""Dynamic sampling for GRPO: keep the groups that carry a learning signal, refill the rest.

A group whose rewards are all equal gets an advantage of exactly 0 (``toolmaster.algorithms.advantages``):
its episodes cost a rollout and an update and teach nothing. When successes are rare (a small student on
unfamiliar tools) most groups are all-fail, and with a shaped reward the step then only moves the shaped
terms (format, length). Dynamic sampling (DAPO, Yu et al. 2025) drops such groups and rolls out fresh tasks
until the step has its configured number of useful groups or a round limit is reached.

``signal`` says what must vary inside a group for it to be kept:

- ``reward``: the total reward (the group has a non-zero advantage at all);
- ``success``: task success (some episodes succeed and some fail). With a shaped reward almost every group's
  total varies a little; this keeps only groups whose *outcome* varies, DAPO's accuracy filter.

Pure functions over rewards / success flags, in rollout order (a task's G episodes contiguous); the GRPO
module (``toolmaster.stages.grpo.module``) does the rollouts. Refill tasks are drawn by ``refill_indices``:
deterministic for a seed, step and round, never a task already tried in the step.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Literal

Signal = Literal["reward", "success"]
SIGNALS: tuple[str, ...] = ("reward", "success")


def varied_groups(values: Sequence[float], group_size: int) -> list[bool]:
    """Per group (``len(values) / group_size`` of them): whether its values are not all equal."""
    if group_size < 1 or len(values) % group_size:
        raise ValueError(f"{len(values)} values cannot be split into groups of {group_size}")
    groups = [values[i : i + group_size] for i in range(0, len(values), group_size)]
    return [max(group) != min(group) for group in groups]


def useful_groups(
    rewards: Sequence[float], successes: Sequence[bool], group_size: int, signal: Signal
) -> list[bool]:
    """Per group: whether it carries the learning signal ``signal`` asks for (see the module docstring)."""
    if signal not in SIGNALS:
        raise ValueError(f"signal must be one of {SIGNALS}, got {signal!r}")
    if len(rewards) != len(successes):
        raise ValueError(f"{len(rewards)} rewards but {len(successes)} success flags")
    values = list(rewards) if signal == "reward" else [float(s) for s in successes]
    return varied_groups(values, group_size)


def refill_indices(num_tasks: int, tried: set[int], count: int, seed: int) -> list[int]:
    """``count`` task indices in ``range(num_tasks)`` not in ``tried``, drawn by a seeded stream (fewer when
    fewer are left). The same arguments always give the same indices."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    left = [i for i in range(num_tasks) if i not in tried]
    rng = random.Random(seed)
    return rng.sample(left, min(count, len(left)))
