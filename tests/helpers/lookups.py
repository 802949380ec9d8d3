"""Small lookups over the package's objects that only the tests need (kept out of the package)."""

from __future__ import annotations

from toolmaster.algorithms.packing import PackedBatch
from toolmaster.envs.task import Task
from toolmaster.worlds.base import World


def task_by_id(world: World, task_id: str) -> Task:
    """The task of ``world`` (any split) with id ``task_id``."""
    for tasks in world.splits.values():
        for task in tasks:
            if task.id == task_id:
                return task
    raise KeyError(f"no task with id {task_id!r} in world {world.name!r}")


def num_loss_tokens(packed: PackedBatch) -> int:
    """How many tokens of a packed batch carry loss."""
    return int(packed.loss_mask.sum())
