"""The rollout loop with a scripted engine: a real (tiny BPE) tokenizer, real ToolEnv, deterministic turns."""

from __future__ import annotations

import json

import pytest

from toolmaster.envs import Task, Tool, ToolSuite
from toolmaster.protocol import get_chat_format, tokenize_conversation
from toolmaster.samplers.loop import RolloutConfig, rollout
from toolmaster.samplers.scripted import ScriptedEngine

FMT = get_chat_format("chatml")


def _suite() -> ToolSuite:
    def zq_add(a: int, b: int, state: dict) -> int:
        state["log"] = state.get("log", []) + [a + b]
        return a + b

    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    }
    return ToolSuite.of([Tool("zq_add", "Adds.", schema, zq_add)])


def _task(i: int = 0) -> Task:
    return Task(id=f"t{i}", query=f"Add {i} and 2.", answer=str(i + 2), tool_names=["zq_add"])


def _call(kind: str, a: int, b: int) -> str:
    return f"<think>try it</think><{kind}>{json.dumps({'name': 'zq_add', 'arguments': {'a': a, 'b': b}})}</{kind}>"


def _script(turns: list[str]):
    """Reply by the number of assistant turns already in the prompt."""

    def respond(prompt: str) -> str:
        done = prompt.count("<|im_start|>assistant") - 1
        return turns[min(done, len(turns) - 1)]

    return respond


def _run(turns: list[str], tokenizer, tasks=None, **cfg) -> list:
    engine = ScriptedEngine(tokenizer, _script(turns))
    config = RolloutConfig(**{"max_turns": 6, **cfg})
    return rollout(engine, tokenizer, FMT, _suite(), tasks or [_task()], config), engine


def test_trial_then_call_then_answer(tiny_tokenizer):
    (traj,), _ = _run([_call("trial", 1, 1), _call("call", 0, 2), "<answer>2</answer>"], tiny_tokenizer)
    assert traj.correct and traj.answer == "2" and traj.turns == 3 and not traj.truncated
    assert [c["phase"] for c in traj.calls] == ["trial", "execution"]
    assert traj.calls[0]["observation"] == "2" and all(c["ok"] for c in traj.calls)
    assert traj.messages[3]["content"].startswith("[trial 1/2] ")
    # ids are exactly the rendering of the finished conversation (prefix-preserving, no drift)
    ids, mask = tokenize_conversation(tiny_tokenizer, FMT, traj.messages)
    assert traj.token_ids == ids
    # loss mask: 1 only on generated tokens, identical to the render's mask for eos-terminated turns
    assert traj.loss_mask == mask
    assert sum(traj.loss_mask) == sum(
        len(tiny_tokenizer(m["content"], add_special_tokens=False)["input_ids"]) + 1
        for m in traj.messages
        if m["role"] == "assistant"
    )
    assert len(traj.logprobs) == len(traj.token_ids)
    assert traj.prompt_length == len(
        tokenize_conversation(tiny_tokenizer, FMT, traj.messages[:2], add_generation_prompt=True)[0]
    )


def test_malformed_call_becomes_observation_and_episode_continues(tiny_tokenizer):
    bad = '<call>{"name": "zq_add", "arguments": {"a": 1,}</call>'
    (traj,), _ = _run([bad, _call("call", 0, 2), "<answer>2</answer>"], tiny_tokenizer)
    assert traj.format_errors == 1 and traj.correct
    assert traj.calls[0]["error"] == "parse_error" and "invalid JSON" in traj.calls[0]["observation"]
    assert traj.self_corrected and not traj.valid_format


def test_no_action_is_a_format_error_not_a_call(tiny_tokenizer):
    (traj,), _ = _run(["I think the answer is 2", "<answer>2</answer>"], tiny_tokenizer)
    assert traj.format_errors == 1 and traj.calls == []
    assert traj.messages[3]["role"] == "tool" and traj.messages[3]["content"].startswith(
        "Format error: no action"
    )


def test_wrong_arguments_get_informative_observation(tiny_tokenizer):
    wrong = '<call>{"name": "zq_add", "arguments": {"a": "1", "c": 2}}</call>'
    (traj,), _ = _run([wrong, "<answer>x</answer>"], tiny_tokenizer)
    obs = traj.calls[0]["observation"]
    assert (
        "missing required argument(s): 'b'" in obs
        and "unknown argument(s): 'c'" in obs
        and "'a' must be of type integer" in obs
    )
    assert traj.counters["execution_errors"] == 1 and not traj.correct


def test_trial_budget_enforced_in_loop(tiny_tokenizer):
    turns = [_call("trial", 1, 1)] * 3 + ["<answer>2</answer>"]
    (traj,), _ = _run(turns, tiny_tokenizer, trial_budget=2)
    assert [c["ok"] for c in traj.calls] == [True, True, False]
    assert traj.calls[2]["error"] == "over_budget"


def test_max_turns_truncates_and_flags(tiny_tokenizer):
    (traj,), _ = _run([_call("call", 1, 1)], tiny_tokenizer, max_turns=3)
    assert (
        traj.truncated and traj.truncation_reason == "max_turns" and traj.turns == 3 and traj.answer is None
    )
    ids, _ = tokenize_conversation(tiny_tokenizer, FMT, traj.messages)
    assert traj.token_ids == ids  # ends on the last observation, no dangling generation prompt


def test_max_new_tokens_truncates_turn(tiny_tokenizer):
    (traj,), _ = _run(["<think>" + "very long reasoning " * 50], tiny_tokenizer, max_new_tokens=20)
    assert traj.truncated and traj.truncation_reason == "max_new_tokens" and traj.turns == 1
    assert sum(traj.loss_mask) == 20  # the forced end-of-turn token is not a model token


def test_max_total_tokens_truncates_episode(tiny_tokenizer):
    (traj,), _ = _run([_call("call", 1, 1)], tiny_tokenizer, max_total_tokens=420, max_turns=50)
    assert traj.truncated and traj.truncation_reason == "max_total_tokens"
    assert len(traj.token_ids) <= 420 + 2


def test_continuous_batching_keeps_order_and_batch_cap(tiny_tokenizer):
    tasks = [_task(i) for i in range(5)]

    def respond(prompt: str) -> str:
        i = int(prompt.split("Add ")[1].split(" ")[0])
        # task i answers after i % 3 calls, so episodes finish at different turns
        done = prompt.count("<|im_start|>assistant") - 1
        return _call("call", i, 2) if done < i % 3 else f"<answer>{i + 2}</answer>"

    engine = ScriptedEngine(tiny_tokenizer, respond)
    trajs = rollout(engine, tiny_tokenizer, FMT, _suite(), tasks, RolloutConfig(batch_size=2, n_samples=2))
    assert [(t.task_id, t.sample_index) for t in trajs] == [(f"t{i}", k) for i in range(5) for k in range(2)]
    assert all(t.correct for t in trajs)
    assert max(engine.batch_sizes) == 2 and sum(engine.batch_sizes) == sum(t.turns for t in trajs)


@pytest.mark.parametrize("budget", [0, 2])
def test_system_prompt_mentions_budget(tiny_tokenizer, budget):
    (traj,), _ = _run(["<answer>2</answer>"], tiny_tokenizer, trial_budget=budget)
    system = traj.messages[0]["content"]
    assert ("You have 2 trial calls" in system) == (budget == 2)
    assert '"name": "zq_add"' in system
