"""Learning-rate schedules for SFT (and later GRPO): linear warmup, then cosine, linear or constant.

The schedule is a multiplier of the base learning rate, stepped once per optimizer step (``LambdaLR``):

- warmup: ``(step + 1) / (warmup_steps + 1)`` for ``step < warmup_steps``, so the very first update already
  moves the weights (a warmup that starts at exactly 0 wastes a step, which matters in short runs);
- decay over the remaining ``total_steps - warmup_steps`` steps from 1 to ``min_lr_ratio``: half a cosine
  period (``cosine``), a straight line (``linear``) or none (``constant``).

The paper does not specify its schedule beyond "warmup + cosine"; ``min_lr_ratio`` defaults to 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

SCHEDULES = ("cosine", "linear", "constant")


def lr_multiplier(
    schedule: str, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0
) -> Callable[[int], float]:
    """The learning-rate multiplier as a function of the optimizer step (0-based)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if warmup_steps < 0 or total_steps < 1 or not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(
            f"bad schedule arguments: warmup_steps={warmup_steps}, total_steps={total_steps}, "
            f"min_lr_ratio={min_lr_ratio}"
        )
    decay_steps = max(1, total_steps - warmup_steps)

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / decay_steps)
        shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress
        return min_lr_ratio + (1.0 - min_lr_ratio) * shape

    return multiplier


def build_scheduler(
    optimizer: Optimizer, schedule: str, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0
) -> LambdaLR:
    """A ``LambdaLR`` applying :func:`lr_multiplier` to every parameter group."""
    return LambdaLR(optimizer, lr_multiplier(schedule, warmup_steps, total_steps, min_lr_ratio))
