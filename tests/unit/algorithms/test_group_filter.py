"""Dynamic sampling's selection: which groups carry a signal, and which fresh tasks refill the step."""

from __future__ import annotations

import pytest

from toolmaster.algorithms.group_filter import refill_indices, useful_groups, varied_groups


def test_varied_groups_finds_exactly_the_groups_whose_values_differ():
    values = [1, 1, 1, 0, 1, 0, 0.5, 0.5, 0.5000001, 2, 2, 2]
    assert varied_groups(values, 3) == [False, True, True, False]
    with pytest.raises(ValueError, match="cannot be split into groups of 5"):
        varied_groups(values, 5)


def test_success_signal_ignores_shaped_reward_noise_and_reward_signal_does_not():
    """A shaped reward varies inside an all-fail group (format, length terms); only ``reward`` keeps it."""
    rewards = [0.10, 0.12, 0.08, 0.11, 1.1, 0.1, 0.1, 0.1]
    successes = [False] * 4 + [True, False, False, False]
    assert useful_groups(rewards, successes, 4, "reward") == [True, True]
    assert useful_groups(rewards, successes, 4, "success") == [False, True]
    assert useful_groups([1.0] * 4, [True] * 4, 4, "success") == [False]  # all succeed: no signal either
    with pytest.raises(ValueError, match="signal must be one of"):
        useful_groups(rewards, successes, 4, "outcome")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="8 rewards but 4 success flags"):
        useful_groups(rewards, successes[:4], 4, "reward")


def test_refill_is_deterministic_never_repeats_a_tried_task_and_stops_when_none_is_left():
    first = refill_indices(20, {0, 1, 2}, 5, seed=7)
    assert first == refill_indices(20, {0, 1, 2}, 5, seed=7)
    assert first != refill_indices(20, {0, 1, 2}, 5, seed=8)
    assert len(set(first)) == 5 and not set(first) & {0, 1, 2}
    assert sorted(refill_indices(4, {0, 1}, 5, seed=0)) == [2, 3]
    assert refill_indices(3, {0, 1, 2}, 2, seed=0) == []
