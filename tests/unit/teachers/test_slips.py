"""``teacher.execution_slips``: the oracle, played through a real ToolEnv on toolworld train tasks, slips on its
first execution call in the chosen fraction of episodes; the environment rejects every slip before the tool
runs, the repeated call is the expert's own and the episode still solves its task; the slip's turn carries no
SFT loss; a rate of 0 changes nothing."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from toolmaster.envs.environment import EXECUTION, INVALID_ARGUMENTS
from toolmaster.errors import ConfigError, DataError
from toolmaster.protocol import get_chat_format
from toolmaster.stages.sft.data import load_sft_records
from toolmaster.teachers.base import PlayRequest
from toolmaster.teachers.expert import ExpertTeacher
from toolmaster.teachers.slips import slip_arguments
from toolmaster.trajectory import Trajectory
from toolmaster.worlds.toolworld import ToolWorld, build_toolworld

CHATML = get_chat_format("chatml")
N_TASKS = 40


@pytest.fixture(scope="module")
def world() -> ToolWorld:
    return build_toolworld(seed=5, n_train=N_TASKS, n_test=2)


def _play(world: ToolWorld, rate: float) -> list[Trajectory]:
    teacher = ExpertTeacher("oracle", seed=5, execution_slips=rate)
    return teacher.play(PlayRequest(world, world.tasks("train"), trial_budget=2, fmt=CHATML))


def _episode(traj: Trajectory) -> tuple:
    """What the teacher wrote, less the calls' wall times."""
    calls = [{k: v for k, v in c.items() if k != "duration_s"} for c in traj.calls]
    return json.dumps(traj.messages), json.dumps(calls), traj.answer, traj.correct


def _slips(traj: Trajectory) -> list[int]:
    return [i for i, m in enumerate(traj.messages) if m["role"] == "assistant" and m.get("train") is False]


def test_every_episode_slips_once_is_rejected_and_still_solves_its_task(world: ToolWorld) -> None:
    for traj in _play(world, 1.0):
        assert traj.correct, traj.task_id
        assert len(_slips(traj)) == 1, traj.task_id
        executions = [c for c in traj.calls if c["phase"] == EXECUTION]
        slip, repeat = executions[0], executions[1]
        assert slip["error"] == INVALID_ARGUMENTS and not slip["ok"]  # rejected by the schema check
        assert repeat["name"] == slip["name"] and repeat["error"] != INVALID_ARGUMENTS
        changed = set(slip["arguments"]) ^ set(repeat["arguments"])
        assert len(changed) == 1  # one argument added or left out, the rest as the expert meant it
        fix = traj.messages[_slips(traj)[0] + 2]["content"]  # slip, its observation, then the fix
        assert next(iter(changed)) in fix and "<call>" in fix


def test_rate_zero_changes_nothing_and_a_rate_slips_that_fraction(world: ToolWorld) -> None:
    plain = [
        _episode(t)
        for t in ExpertTeacher("oracle", seed=5).play(PlayRequest(world, world.tasks("train"), 2, CHATML))
    ]
    assert [_episode(t) for t in _play(world, 0.0)] == plain
    half = _play(world, 0.5)
    slipped = [bool(_slips(t)) for t in half]
    assert 0.25 * N_TASKS <= sum(slipped) <= 0.75 * N_TASKS
    assert all(t.correct for t in half)
    # an episode that did not slip is exactly the episode without slips (the slip draws its own stream)
    assert all(_episode(t) == p for t, p, s in zip(half, plain, slipped) if not s)


def test_the_slip_turn_has_no_loss_and_sft_data_keeps_the_flag(world: ToolWorld, tmp_path: Path) -> None:
    traj = _play(world, 1.0)[0]
    index = _slips(traj)[0]
    segments = CHATML.segments(traj.messages)
    slip_content = traj.messages[index]["content"]
    assert [trained for text, trained in segments if text == slip_content] == [False]
    assert any(trained for _, trained in segments)  # the other assistant turns are still trained
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps({"messages": traj.messages}) + "\n")
    (record,) = load_sft_records(path)
    assert record.messages[index] == {"role": "assistant", "content": slip_content, "train": False}
    bad = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "train": "no"}]
    path.write_text(json.dumps({"messages": bad}) + "\n")
    with pytest.raises(DataError, match="messages\\[1\\].train must be true or false"):
        load_sft_records(path)
    only_slips = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "train": False}]
    path.write_text(json.dumps({"messages": only_slips}) + "\n")
    with pytest.raises(DataError, match="no trained assistant turn"):
        load_sft_records(path)


def test_slip_kinds() -> None:
    params = {"properties": {"t": {}, "conv": {}}, "required": ["t"]}
    kinds = set()
    for seed in range(20):
        kind, argument, slipped = slip_arguments(
            {"t": 3, "conv": "c:f"}, params, ["city"], random.Random(seed)
        )
        kinds.add(kind)
        if kind == "missing":
            assert argument == "t" and slipped == {"conv": "c:f"}
        else:  # borrowed from the task's other tool, never one this tool accepts
            assert (
                argument == "city" and slipped["city"] in (3, "c:f") and set(slipped) == {"t", "conv", "city"}
            )
    assert kinds == {"missing", "unknown"}


def test_bad_rates_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="execution_slips=1.5"):
        ExpertTeacher("oracle", execution_slips=1.5)
    with pytest.raises(ConfigError, match="direct teacher"):
        ExpertTeacher("direct", execution_slips=0.5)
