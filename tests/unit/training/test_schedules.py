"""Warmup + cosine / linear / constant learning-rate schedules."""

from __future__ import annotations

import math

import pytest
import torch

from toolmaster.training.schedules import build_scheduler, lr_multiplier


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_warmup_rises_to_one(schedule):
    f = lr_multiplier(schedule, warmup_steps=4, total_steps=20)
    warm = [f(s) for s in range(5)]
    assert warm[0] > 0 and all(a < b for a, b in zip(warm, warm[1:], strict=False)) and warm[-1] == 1.0


def test_decay_shapes():
    cosine = lr_multiplier("cosine", 2, 12, min_lr_ratio=0.1)
    linear = lr_multiplier("linear", 2, 12)
    constant = lr_multiplier("constant", 2, 12)
    assert cosine(7) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert cosine(12) == pytest.approx(0.1) and cosine(100) == pytest.approx(0.1)
    assert linear(7) == pytest.approx(0.5) and linear(12) == pytest.approx(0.0)
    assert all(constant(s) == 1.0 for s in range(2, 30))
    decay = [cosine(s) for s in range(2, 13)]
    assert all(a > b for a, b in zip(decay, decay[1:], strict=False))


def test_scheduler_drives_the_optimizer():
    param = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([param], lr=1.0)
    scheduler = build_scheduler(optimizer, "linear", warmup_steps=1, total_steps=5)
    seen = []
    for _ in range(5):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([0.5, 1.0, 0.75, 0.5, 0.25])


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_multiplier("step", 0, 10)
    with pytest.raises(ValueError):
        lr_multiplier("cosine", 0, 0)
