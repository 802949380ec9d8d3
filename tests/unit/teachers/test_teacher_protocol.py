"""Every teacher the ``teacher`` group builds is a ``Teacher``: ``name`` and ``play(request, progress)``."""

from __future__ import annotations

import inspect

import pytest
from hydra.utils import instantiate

from toolmaster.cli import compose
from toolmaster.teachers.base import PlayRequest, Teacher
from toolmaster.worlds.toolworld import build_toolworld


@pytest.mark.parametrize(
    "overrides",
    [["teacher=oracle"], ["teacher=direct"], ["teacher=gold_trials"], ["teacher=openai", "teacher.model=m"]],
)
def test_each_teacher_option_builds_a_teacher(overrides):
    teacher = instantiate(compose(overrides).teacher, _convert_="all")
    assert isinstance(teacher, Teacher) and isinstance(teacher.name, str)
    assert list(inspect.signature(teacher.play).parameters) == ["request", "progress"]


def test_a_request_plays_its_tasks_in_order_and_reports_progress():
    from toolmaster.protocol.chat_format import get_chat_format

    world = build_toolworld(seed=0, n_train=3, n_test=1)
    tasks = world.tasks("train")
    done: list[int] = []
    teacher = instantiate(compose(["teacher=oracle"]).teacher, _convert_="all")
    trajectories = teacher.play(PlayRequest(world, tasks, 2, get_chat_format("chatml"), 2), done.append)
    assert [t.task_id for t in trajectories] == [task.id for task in tasks for _ in range(2)]
    assert sum(done) == len(trajectories) == 6
