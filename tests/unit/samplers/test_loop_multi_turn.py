"""General multi-turn capabilities of the rollout loop (any world): several user turns per task, tools added at a
later turn, the task scorer hook (used by the loop's success and the outcome reward), per-user-turn step limits,
the prompt-too-long warning, lenient argument types and per-category metrics. Scripted engine, real tokenizer."""

from __future__ import annotations

import json
import logging

import pytest

from toolmaster.envs import Task, Tool, ToolSuite
from toolmaster.envs.calls import Isolation
from toolmaster.metrics import summarize_by_category
from toolmaster.protocol import get_chat_format, tokenize_conversation
from toolmaster.rewards.components import Outcome
from toolmaster.samplers.loop import RolloutConfig, rollout
from toolmaster.samplers.scripted import ScriptedEngine

FMT = get_chat_format("chatml")


def _suite() -> ToolSuite:
    def kv_put(key: str, value: int, state: dict) -> str:
        state.setdefault("kv", {})[key] = value
        return "stored"

    def kv_sum(state: dict) -> int:
        return sum(state.get("kv", {}).values())

    put = {
        "type": "object",
        "properties": {"key": {"type": "string"}, "value": {"type": "integer"}},
        "required": ["key", "value"],
    }
    return ToolSuite.of(
        [Tool("kv_put", "Store a value.", put, kv_put), Tool("kv_sum", "Sum of all values.", {}, kv_sum)]
    )


def state_scorer(task: Task, trajectory, final_state) -> bool:
    """Success by state: the real store holds exactly the task's expected values (from the calls when replayed)."""
    want = task.metadata["want"]
    if final_state is not None:
        return final_state.get("kv") == want
    got = {}
    for call in trajectory.calls:
        if call["phase"] == "execution" and call["ok"] and call["name"] == "kv_put":
            got[call["arguments"]["key"]] = call["arguments"]["value"]
    return got == want


def state_only_scorer(task: Task, trajectory, final_state) -> bool:
    """Success only from the episode's final real state (fails when the rollout could not pass it)."""
    return final_state is not None and final_state.get("kv") == task.metadata["want"]


def _task(**extra) -> Task:
    fields = {
        "id": "s0",
        "query": "Store a=1.",
        "answer": "",
        "tool_names": ["kv_put"],
        "follow_ups": [
            {"query": "Store b=2.", "add_tools": []},
            {"query": "What is the sum?", "add_tools": ["kv_sum"]},
        ],
        "scorer": f"{__name__}:state_scorer",
        "metadata": {"want": {"a": 1, "b": 2}, "category": "base"},
    }
    return Task(**{**fields, **extra})


def _call(kind: str, name: str, arguments: dict) -> str:
    return f"<{kind}>{json.dumps({'name': name, 'arguments': arguments})}</{kind}>"


def _by_assistant_turn(turns: list[str]):
    def respond(prompt: str) -> str:
        return turns[min(prompt.count("<|im_start|>assistant") - 1, len(turns) - 1)]

    return respond


def _run(turns, tokenizer, tasks=None, isolation: Isolation | None = None, **cfg):
    engine = ScriptedEngine(tokenizer, _by_assistant_turn(turns))
    suite = _suite()
    suite.isolation = isolation
    return rollout(
        engine, tokenizer, FMT, suite, tasks or [_task()], RolloutConfig(**{"max_turns": 12, **cfg})
    )


GOOD = [
    _call("call", "kv_put", {"key": "a", "value": 1}),
    "<answer>stored a</answer>",
    _call("trial", "kv_put", {"key": "b", "value": 99}),
    _call("call", "kv_put", {"key": "b", "value": 2}),
    "<answer>stored b</answer>",
    _call("call", "kv_sum", {}),
    "<answer>3</answer>",
]


def test_user_turns_follow_answers_and_calls_record_their_turn(smollm2_tokenizer):
    (traj,) = _run(GOOD, smollm2_tokenizer)
    assert not traj.truncated and traj.answer == "3" and traj.turns == 7
    users = [m["content"] for m in traj.messages if m["role"] == "user"]
    assert users[:2] == ["Store a=1.", "Store b=2."]
    assert [(c["name"], c["phase"], c["user_turn"]) for c in traj.calls] == [
        ("kv_put", "execution", 0),
        ("kv_put", "trial", 1),
        ("kv_put", "execution", 1),
        ("kv_sum", "execution", 2),
    ]
    assert traj.calls[-1]["observation"] == "3"  # the trial's b=99 never reached the real store
    assert "The user may send further requests" in traj.messages[0]["content"]
    ids, _ = tokenize_conversation(smollm2_tokenizer, FMT, traj.messages, traj.tools)
    assert traj.token_ids == ids  # the user turns keep the ids prefix-preserving


def test_added_tool_is_announced_in_its_turn_and_unknown_before(smollm2_tokenizer):
    early = [_call("call", "kv_sum", {}), *GOOD]
    (traj,) = _run(early, smollm2_tokenizer)
    assert traj.calls[0]["error"] == "unknown_tool"
    assert "kv_sum" not in traj.messages[0]["content"]  # not in the system prompt's tool list
    users = [m["content"] for m in traj.messages if m["role"] == "user"]
    assert "kv_sum" not in users[1]
    assert users[2].startswith('New tools you can use from now on:\n{"name": "kv_sum"')
    assert users[2].endswith("What is the sum?")
    assert traj.tools == [_suite().tools["kv_put"].schema]


def test_scorer_decides_success_for_the_loop_and_the_outcome_reward(smollm2_tokenizer):
    task = _task()
    (good,) = _run(GOOD, smollm2_tokenizer, [task])
    wrong = [GOOD[0], GOOD[1], _call("call", "kv_put", {"key": "b", "value": 5}), *GOOD[4:]]
    (bad,) = _run(wrong, smollm2_tokenizer, [task])
    assert good.correct and not bad.correct  # both answer "3": the state decides, not the text
    assert Outcome()(good, task) == 1.0 and Outcome()(bad, task) == 0.0  # recomputed without the final state
    plain = Task(id="p", query="q", answer="3", tool_names=["kv_put"])
    assert Outcome()(good, plain) == 1.0  # no scorer: the answer check as before


def test_step_limit_per_user_turn(smollm2_tokenizer):
    stuck = [_call("call", "kv_put", {"key": "a", "value": 1})] * 5
    (traj,) = _run(stuck, smollm2_tokenizer, max_steps_per_user_turn=3)
    assert traj.truncated and traj.truncation_reason == "max_steps_per_user_turn" and traj.turns == 3
    (ok,) = _run(GOOD, smollm2_tokenizer, max_steps_per_user_turn=3)  # 3 steps in turn 1 at most: fine
    assert not ok.truncated and ok.correct


def test_prompt_longer_than_the_budget_warns_and_is_flagged(smollm2_tokenizer, caplog):
    with caplog.at_level(logging.WARNING, logger="toolmaster.samplers.loop"):
        trajs = _run(GOOD, smollm2_tokenizer, max_total_tokens=50)
    assert trajs[0].truncation_reason == "prompt_too_long" and trajs[0].turns == 0
    assert "1 of 1 episodes have a prompt longer than sampler.max_total_tokens=50" in caplog.text
    metrics = summarize_by_category(trajs, {"s0": "base"})
    assert metrics["base"]["prompt_too_long"] == 1.0 and metrics["base"]["truncated"] == 1.0


def test_lenient_types_accept_what_strict_types_reject(smollm2_tokenizer):
    loose = [_call("call", "kv_put", {"key": "a", "value": "1"}), "<answer>x</answer>"]
    task = Task(id="t", query="q", answer="x", tool_names=["kv_put"])
    (strict,) = _run(loose, smollm2_tokenizer, [task])
    (lenient,) = _run(loose, smollm2_tokenizer, [task], strict_types=False)
    assert strict.calls[0]["error"] == "invalid_arguments" and lenient.calls[0]["ok"]


def test_metrics_per_category(smollm2_tokenizer):
    tasks = [_task(id="a", metadata={"want": {"a": 1, "b": 2}}), _task(id="b", metadata={"want": {}})]
    trajs = _run(GOOD, smollm2_tokenizer, tasks)
    metrics = summarize_by_category(trajs, {"a": "base", "b": "miss_param"})
    assert metrics["base"]["success"] == 1.0 and metrics["miss_param"]["success"] == 0.0
    assert metrics["base"]["episodes"] == metrics["miss_param"]["episodes"] == 1.0


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_sessions_under_either_isolation(smollm2_tokenizer, mode):
    """Each new user turn forks the sandbox from the real state (in a new trial process under process isolation),
    and the scorer receives the final real state, read before the episode's processes close."""
    turns = [*GOOD[:5], _call("trial", "kv_sum", {}), *GOOD[5:]]
    task = _task(scorer=f"{__name__}:state_only_scorer")
    (traj,) = _run(turns, smollm2_tokenizer, [task], Isolation(mode))
    assert [(c["name"], c["phase"], c["user_turn"], c["observation"]) for c in traj.calls] == [
        ("kv_put", "execution", 0, "stored"),
        ("kv_put", "trial", 1, "stored"),
        ("kv_put", "execution", 1, "stored"),
        ("kv_sum", "trial", 2, "3"),  # turn 2's sandbox is the real a=1, b=2, not turn 1's trial b=99
        ("kv_sum", "execution", 2, "3"),
    ]
    assert traj.correct
