"""The one resumable batch sampler of the training stages, and the DataLoader Lightning checkpoints with it.

A stage describes its batches as a *plan*: an object whose ``batches(epoch)`` lists this rank's batches of
dataset indices for an epoch (deterministic: seeded by the epoch) and whose ``len()`` is the number of batches
per epoch (SFT: length buckets, ``toolmaster.stages.sft.data.LengthBuckets``; GRPO: a shuffled task order,
``toolmaster.stages.grpo.data.TaskOrder``). ``ResumableBatchSampler`` serves a plan epoch by epoch and, once
after ``resume_at(epoch, batches)``, skips the batches an interrupted run already trained on;
``ResumableDataLoader`` records that position in Lightning's checkpoint (``state_dict``) and hands it back on
resume (``load_state_dict``), so a resumed run continues mid-epoch instead of replaying the epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from torch.utils.data import DataLoader, Dataset, Sampler


class BatchPlan(Protocol):
    def batches(self, epoch: int) -> list[list[int]]: ...

    def __len__(self) -> int: ...


class ResumableBatchSampler(Sampler[list[int]]):
    """Batches of a ``BatchPlan``, epoch by epoch, with a one-time skip for resuming (see the module)."""

    def __init__(self, plan: BatchPlan) -> None:
        self.plan = plan
        self.epoch = 0
        self._resume: tuple[int, int] | None = None  # (epoch, batches already consumed in it)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def sampler(self) -> ResumableBatchSampler:
        """Lightning calls ``set_epoch`` on a loader's ``sampler`` and ``batch_sampler.sampler``, never on the
        batch sampler itself: this makes it reach this one (without it every epoch replayed epoch 0's order)."""
        return self

    def resume_at(self, epoch: int, batches: int) -> None:
        """Skip the first ``batches`` batches of ``epoch`` (once): where an interrupted run stopped."""
        self._resume = (epoch, batches)

    def batches(self, epoch: int) -> list[list[int]]:
        return self.plan.batches(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        # A generator: the body runs at the first next(), after Lightning's set_epoch for the epoch.
        epoch, skip = self.epoch, 0
        if self._resume is not None and self._resume[0] == epoch:
            skip = self._resume[1]
        self._resume = None
        yield from self.plan.batches(epoch)[skip:]

    def __len__(self) -> int:
        return len(self.plan)


def loop_position(trainer: Any) -> tuple[int, int]:
    """(epoch, batches trained in it) of a Trainer's fit loop; (0, 0) without one."""
    if trainer is None:
        return 0, 0
    return trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_progress.current.processed


class ResumableDataLoader(DataLoader):
    """A DataLoader Lightning checkpoints: ``state_dict`` records (epoch, batches trained in it) and
    ``load_state_dict`` makes a ``ResumableBatchSampler`` skip those batches on resume."""

    def __init__(
        self, *args: Any, position: Callable[[], tuple[int, int]] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.position = position

    def state_dict(self) -> dict[str, int]:
        epoch, batches = self.position() if self.position is not None else (0, 0)
        return {"epoch": int(epoch), "batches": int(batches)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        sampler = self.batch_sampler
        if isinstance(sampler, ResumableBatchSampler):
            sampler.resume_at(int(state.get("epoch", 0)), int(state.get("batches", 0)))


class Items(Dataset):
    """A list as a map-style dataset."""

    def __init__(self, items: Sequence[Any]) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        return self.items[index]
