"""teacher=gold_trials on BFCL and on a user's own world, and the rollout loop replaying its episodes.

The replay plays each teacher episode's assistant turns through the real rollout loop (scripted engine, real
tokenizer): the loop must rebuild the same conversation (system prompt, user turns, the announcement of a
miss_func tool at its turn, observations) and BFCL's checker must accept it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.lookups import task_by_id

from toolmaster.errors import ConfigError
from toolmaster.protocol import get_chat_format
from toolmaster.protocol.actions import parse_action
from toolmaster.samplers.loop import RolloutConfig, rollout
from toolmaster.samplers.scripted import ScriptedEngine
from toolmaster.teachers.base import PlayRequest
from toolmaster.teachers.expert import ExpertTeacher
from toolmaster.teachers.gold_trials import GoldTrialsTeacher
from toolmaster.worlds.bfcl import build_bfcl_world
from toolmaster.worlds.custom import load_custom_world

FMT = get_chat_format("chatml")
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def world():
    return build_bfcl_world()


@pytest.fixture(scope="module")
def episodes(world):
    tasks = [task for tasks in world.splits.values() for task in tasks]
    teacher = GoldTrialsTeacher(strict_types=False)
    return world, teacher.play(PlayRequest(world, tasks, 4, FMT, timeout_s=10.0, max_observation_chars=1200))


def test_gold_trials_episodes_score_valid_with_trials_and_self_corrections(episodes):
    world, trajs = episodes
    assert {t.task_id for t in trajs if not t.correct} == {"multi_turn_miss_func_49"}  # see test_bfcl.py
    assert sum(t.self_corrected for t in trajs) > len(trajs) / 2
    for traj in trajs:
        first_trial, first_call = {}, {}
        for i, call in enumerate(traj.calls):
            store = first_trial if call["phase"] == "trial" else first_call
            store.setdefault(call["name"], i)
        # every tool is trialled before its first real use, as long as the budget lasts
        tested_in_budget = [n for n in first_call if n in first_trial]
        assert all(first_trial[n] < first_call[n] for n in tested_in_budget)
        assert traj.num_trial_calls <= 4
        for message in traj.messages:
            if message["role"] == "assistant":
                assert parse_action(message["content"], FMT.tags).kind in ("trial", "call", "answer")


def test_wrong_format_trials_are_corrected_from_the_real_error(episodes):
    _, trajs = episodes
    corrected = 0
    for traj in trajs:
        calls = traj.calls
        for before, after in zip(calls, calls[1:]):
            if before["phase"] == after["phase"] == "trial" and not before["ok"] and after["ok"]:
                assert before["name"] == after["name"] and before["error"] == "invalid_arguments"
                corrected += 1
    assert corrected > 100


@pytest.mark.parametrize(
    "task_id", ["multi_turn_miss_func_0", "multi_turn_miss_param_3", "multi_turn_base_120"]
)
def test_the_loop_replays_teacher_episodes_identically(episodes, smollm2_tokenizer, task_id):
    world, trajs = episodes
    teacher_traj = next(t for t in trajs if t.task_id == task_id)
    turns = [m["content"] for m in teacher_traj.messages if m["role"] == "assistant"]

    def respond(prompt: str) -> str:
        return turns[prompt.count("<|im_start|>assistant") - 1]

    config = RolloutConfig(
        max_turns=60,
        max_new_tokens=400,
        max_total_tokens=100_000,
        trial_budget=4,
        tool_timeout_s=10.0,
        max_observation_chars=1200,
        strict_types=False,
    )
    task = task_by_id(world, task_id)
    (traj,) = rollout(
        ScriptedEngine(smollm2_tokenizer, respond), smollm2_tokenizer, FMT, world.suite, [task], config
    )
    assert traj.messages == teacher_traj.messages and traj.correct
    if task_id == "multi_turn_miss_func_0":  # 'sort' is announced in user turn 3 (0-based), not before
        users = [m["content"] for m in traj.messages if m["role"] == "user"]
        assert [i for i, text in enumerate(users) if '{"name": "sort"' in text] == [3]
        assert '"name": "sort"' not in traj.messages[0]["content"]
        assert {c["name"] for c in traj.calls if c["user_turn"] < 3}.isdisjoint({"sort"})


def test_gold_trials_on_a_users_own_world():
    world = load_custom_world(str(REPO / "examples/custom_tools/weather.yaml"))
    tasks = [task for tasks in world.splits.values() for task in tasks if task.gold_calls]
    trajs = GoldTrialsTeacher(wrong_first_p=1.0).play(PlayRequest(world, tasks, 2, FMT))
    assert trajs and all(t.correct for t in trajs)
    assert all(t.num_trial_calls >= 1 and t.calls[0]["phase"] == "trial" for t in trajs)


def test_oracle_on_another_world_is_a_one_line_error(world):
    task = world.splits["train"][0]
    with pytest.raises(ConfigError, match="teacher=oracle plays only toolworld tasks.*teacher=gold_trials"):
        ExpertTeacher("oracle").play(PlayRequest(world, [task], 2, FMT))


def counter_at_least(task, trajectory, final_state) -> bool:
    """A state scorer for the custom world below: the real counter reached the task's target."""
    if final_state is None:
        return False
    return final_state.get("count", 0) >= task.metadata["target"]


SPEC = """
name: counters
module: ./counter_tools.py
tools:
  - function: bump
    description: Add to the counter.
    parameters: {type: object, properties: {by_amount: {type: integer}}, required: [by_amount]}
  - function: peek
    description: Read the counter.
tasks:
  - id: c1
    query: Add 2 to the counter.
    answer: done
    tool_names: [bump]
    follow_ups:
      - {query: "Add 3 more, then read it.", add_tools: [peek]}
    scorer: "%s:counter_at_least"
    metadata: {target: 5}
    gold_calls:
      - {name: bump, arguments: {by_amount: 2}, user_turn: 0}
      - {name: bump, arguments: {by_amount: 3}, user_turn: 1}
      - {name: peek, arguments: {}, user_turn: 1}
"""
TOOLS = """
def bump(by_amount: int, state: dict) -> int:
    state["count"] = state.get("count", 0) + by_amount
    return state["count"]


def peek(state: dict) -> int:
    return state.get("count", 0)
"""


def test_a_users_multi_turn_world_with_a_state_scorer(tmp_path):
    (tmp_path / "counter_tools.py").write_text(TOOLS)
    (tmp_path / "spec.yaml").write_text(SPEC % __name__)
    world = load_custom_world(str(tmp_path / "spec.yaml"))
    (task,) = world.tasks("test")
    assert task.follow_ups == [{"query": "Add 3 more, then read it.", "add_tools": ["peek"]}]
    (traj,) = GoldTrialsTeacher(wrong_first_p=1.0).play(PlayRequest(world, [task], 3, FMT))
    assert traj.correct and traj.answer == "done"
    assert [(c["name"], c["phase"], c["user_turn"], c["ok"]) for c in traj.calls] == [
        ("bump", "trial", 0, False),  # by_amount -> 'byamount': the wrong format, rejected
        ("bump", "trial", 0, True),  # corrected from the error
        ("bump", "execution", 0, True),
        ("peek", "trial", 1, True),  # one trial left: no replay of bump first, peek tried on the turn's start
        ("bump", "execution", 1, True),
        ("peek", "execution", 1, True),
    ]
    assert traj.calls[3]["observation"] == "2" and traj.calls[5]["observation"] == "5"
    assert "accepted: by_amount" in traj.calls[0]["observation"]
    bad = tmp_path / "bad.yaml"
    bad.write_text((SPEC % __name__).replace("add_tools: [peek]", "add_tools: [nope]"))
    with pytest.raises(ConfigError, match=r"follow_ups\[0\].add_tools \['nope'\] unknown"):
        load_custom_world(str(bad))


def test_gold_trials_on_toolworld_matches_the_task_answers():
    from toolmaster.worlds.toolworld import build_toolworld

    world = build_toolworld(seed=0, n_train=20, n_test=2)
    trajs = GoldTrialsTeacher().play(PlayRequest(world, world.tasks("train"), 2, FMT))
    assert all(t.correct for t in trajs) and sum(t.self_corrected for t in trajs) >= 5
