"""``teacher.trials=when_needed``: played through a real ToolEnv on toolworld train tasks, the oracle writes the
tasks its budget-0 play solves without trials (an execution error corrected instead, no refused trial left in
the episode, no "trials are off" wording) and every other task exactly as ``always`` does; every episode still
solves its task; the prompt offers the same trial budget; bad settings are one-line ConfigErrors."""

from __future__ import annotations

import json

import pytest

from toolmaster.envs.calls import OVER_BUDGET
from toolmaster.envs.environment import EXECUTION, TRIAL
from toolmaster.errors import ConfigError
from toolmaster.protocol import get_chat_format
from toolmaster.teachers.base import PlayRequest
from toolmaster.teachers.expert import ExpertTeacher
from toolmaster.teachers.trial_mix import declined
from toolmaster.trajectory import Trajectory
from toolmaster.worlds.toolworld import ToolWorld, build_toolworld

CHATML = get_chat_format("chatml")
N_TASKS = 40


@pytest.fixture(scope="module")
def world() -> ToolWorld:
    return build_toolworld(seed=5, n_train=N_TASKS, n_test=2)


def _play(world: ToolWorld, trials: str) -> list[Trajectory]:
    teacher = ExpertTeacher("oracle", seed=5, trials=trials)
    return teacher.play(PlayRequest(world, world.tasks("train"), trial_budget=2, fmt=CHATML))


def _episode(traj: Trajectory) -> tuple:
    calls = [{k: v for k, v in c.items() if k != "duration_s"} for c in traj.calls]
    return json.dumps(traj.messages), json.dumps(calls), traj.answer, traj.correct


def _budget0_solves(world: ToolWorld) -> dict[str, bool]:
    plays = ExpertTeacher("oracle", seed=5).play(
        PlayRequest(world, world.tasks("train"), trial_budget=0, fmt=CHATML)
    )
    return {traj.task_id: traj.correct for traj in plays}


def test_tasks_an_execution_error_solves_are_written_without_trials(world: ToolWorld) -> None:
    always = {traj.task_id: traj for traj in _play(world, "always")}
    mixed = _play(world, "when_needed")
    budget0 = _budget0_solves(world)
    assert 0.15 * N_TASKS <= sum(budget0.values()) <= 0.7 * N_TASKS  # both kinds of task occur
    corrected = 0
    for traj in mixed:
        assert traj.correct, traj.task_id
        assert traj.trial_budget == 2
        assert traj.messages[:2] == always[traj.task_id].messages[:2]  # the same prompt, budget and task
        if budget0[traj.task_id]:
            assert not any(call["phase"] == TRIAL for call in traj.calls), traj.task_id
            assert not any(call["error"] == OVER_BUDGET for call in traj.calls)
            text = " ".join(m["content"] for m in traj.messages if m["role"] == "assistant")
            assert "Trials are off" not in text and "No trials" not in text
            executions = [call for call in traj.calls if call["phase"] == EXECUTION]
            corrected += any(not call["ok"] for call in executions)
        else:
            assert _episode(traj) == _episode(always[traj.task_id])  # trials needed: the usual episode
    assert corrected >= 1  # some kept episodes show an execution call rejected, then repaired


def test_declined_rewords_only_the_refusal() -> None:
    assert declined("Trials are off, so book for real.") == "No trial needed, so book for real."
    assert declined("No trials allowed; call x with 'a' and read any error.").startswith(
        "No trial needed; call"
    )
    assert declined("No trials; read s1 directly.") == "No trial needed; read s1 directly."
    assert declined("The error shows the format: 'a'. Retry.") == "The error shows the format: 'a'. Retry."


def test_bad_trials_settings_are_one_line_errors() -> None:
    with pytest.raises(ConfigError, match="teacher.trials='sometimes' must be one of always, when_needed"):
        ExpertTeacher("oracle", trials="sometimes")
    with pytest.raises(ConfigError, match="direct teacher"):
        ExpertTeacher("direct", trials="when_needed")
