"""Unbiased pass@k against values computed by hand."""

from __future__ import annotations

import pytest

from toolmaster.metrics import pass_at_k
from toolmaster.trajectory import Trajectory


def _episodes(task_id: str, outcomes: list[bool]) -> list[Trajectory]:
    return [
        Trajectory(task_id=task_id, split="test", messages=[], correct=ok, sample_index=i)
        for i, ok in enumerate(outcomes)
    ]


# 4 samples per task: a has 1 correct, b none, c 3.
EPISODES = (
    _episodes("a", [False, True, False, False])
    + _episodes("b", [False] * 4)
    + _episodes("c", [True, True, False, True])
)


@pytest.mark.parametrize(
    "k,expected",
    [
        # pass@1 = c / n per task: (1/4 + 0 + 3/4) / 3
        (1, (0.25 + 0.0 + 0.75) / 3),
        # a: 1 - C(3,2)/C(4,2) = 1 - 3/6; b: 1 - C(4,2)/C(4,2) = 0; c: n - c = 1 < 2 wrong, so always 1
        (2, (0.5 + 0.0 + 1.0) / 3),
        # a: 1 - C(3,3)/C(4,3) = 3/4; b: 0; c: 1
        (3, (0.75 + 0.0 + 1.0) / 3),
        # k = n: passes iff any sample is correct
        (4, 2 / 3),
    ],
)
def test_pass_at_k_matches_the_hand_computed_values(k, expected):
    assert pass_at_k(EPISODES, k) == pytest.approx(expected)


def test_pass_at_k_needs_k_samples_of_every_task():
    assert pass_at_k(EPISODES, 5) is None
    assert pass_at_k(EPISODES[:4] + EPISODES[4:6], 3) is None  # task b has only 2 samples
    assert pass_at_k([], 1) is None
