"""Small lookups over the package's objects that only the tests need (kept out of the package)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from toolmaster.algorithms.packing import PackedBatch
from toolmaster.envs.task import Task
from toolmaster.worlds.base import World

if TYPE_CHECKING:  # the GRPO module imports Lightning: only for the annotation
    from toolmaster.stages.grpo.module import GRPOModule


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


def reference_model(module: GRPOModule) -> Any | None:
    """The model a GRPO module computes reference log-probs with: its frozen copy, the policy itself (LoRA,
    adapter off while it runs) or None without a KL term."""
    if not module.has_reference:
        return None
    return module.model if module._reference is None else module._reference.model
