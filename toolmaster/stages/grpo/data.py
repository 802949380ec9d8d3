"""GRPO data: batches of tasks to roll out, and the validation splits.

Training batches are ``stage.tasks_per_step`` tasks per process, from ``TaskOrder``: a seeded
``DistributedSampler`` permutation (the same on every rank, each rank taking its own share) cut into batches,
reshuffled every epoch, served by the shared resumable sampler (``toolmaster.training.loaders``) so a resumed
run continues at the task where it stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, DistributedSampler

from toolmaster.envs.task import Task
from toolmaster.errors import ConfigError
from toolmaster.training.loaders import Items, ResumableBatchSampler, ResumableDataLoader, loop_position


class TaskOrder:
    """The GRPO batch plan: batches of ``batch_size`` task indices for one process (see the module docstring).
    A short final batch is dropped unless it is the epoch's only one, so every step has the same number of
    tasks."""

    def __init__(
        self, num_tasks: int, batch_size: int, seed: int = 0, num_replicas: int = 1, rank: int = 0
    ) -> None:
        if num_tasks < 1 or batch_size < 1:
            raise ValueError(f"need num_tasks >= 1 and batch_size >= 1, got {num_tasks}, {batch_size}")
        self.order = DistributedSampler(
            range(num_tasks),  # type: ignore[arg-type]  # only len() is used
            num_replicas=num_replicas,
            rank=rank,
            shuffle=True,
            seed=seed,
            drop_last=False,
        )
        self.batch_size = batch_size

    def batches(self, epoch: int) -> list[list[int]]:
        self.order.set_epoch(epoch)
        indices = list(iter(self.order))
        batches = [indices[i : i + self.batch_size] for i in range(0, len(indices), self.batch_size)]
        if len(batches) > 1 and len(batches[-1]) < self.batch_size:
            batches.pop()
        return batches

    def __len__(self) -> int:
        return max(1, self.order.num_samples // self.batch_size)


def _as_list(items: list[Any]) -> list[Any]:
    return list(items)


def _identity(item: Any) -> Any:
    return item


class GRPODataModule(pl.LightningDataModule):
    """Train batches are lists of ``Task``; validation items are ``(split, this rank's share of its tasks)``,
    one per split on every rank (possibly an empty share), so all ranks run the same validation loop."""

    def __init__(
        self,
        train_tasks: Sequence[Task],
        tasks_per_step: int,
        seed: int = 0,
        val_tasks: dict[str, list[Task]] | None = None,
    ) -> None:
        super().__init__()
        if not train_tasks:
            raise ConfigError(
                "no training tasks (check data.train_split, data.train_offset and data.train_limit)"
            )
        self.train_tasks = list(train_tasks)
        self.tasks_per_step = tasks_per_step
        self.seed = seed
        self.val_tasks = dict(val_tasks or {})
        self._order: TaskOrder | None = None  # the train plan, once train_dataloader made it

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        return batch  # tasks, not tensors: the module moves what it packs

    def next_batch(self, epoch: int, index: int) -> list[Task] | None:
        """The batch the plan serves after batch ``index`` of ``epoch`` (the next epoch's first after the last):
        what ``stage.async_rollout`` rolls out ahead. None before ``train_dataloader`` made the plan."""
        if self._order is None:
            return None
        batches = self._order.batches(epoch)
        following = batches[index + 1] if index + 1 < len(batches) else self._order.batches(epoch + 1)[0]
        return [self.train_tasks[i] for i in following]

    def train_dataloader(self) -> ResumableDataLoader:
        world, rank = self._world()
        order = TaskOrder(len(self.train_tasks), self.tasks_per_step, self.seed, world, rank)
        self._order = order
        return ResumableDataLoader(
            Items(self.train_tasks),
            batch_sampler=ResumableBatchSampler(order),
            collate_fn=_as_list,
            position=lambda: loop_position(self.trainer),
        )

    def val_dataloader(self) -> DataLoader | list:
        if not self.val_tasks:
            return []
        world, rank = self._world()
        items = [(split, tasks[rank::world]) for split, tasks in self.val_tasks.items()]
        return DataLoader(Items(items), batch_size=None, collate_fn=_identity)
