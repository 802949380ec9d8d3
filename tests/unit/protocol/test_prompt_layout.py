"""The system prompt's layout: tools right after the introduction (``chatml``) or after the rules
(``chatml_rules_first``), with the same paragraphs either way, and what the second buys: prompts of
different tasks that open with the same tokens (SmolLM2's real tokenizer)."""

from __future__ import annotations

import pytest

from toolmaster.protocol import get_chat_format
from toolmaster.protocol.prompt import INTRO, opening_messages
from toolmaster.protocol.tokenize import tokenize_conversation
from toolmaster.samplers.prefix_store import common_prefix_length
from toolmaster.worlds.toolworld import build_toolworld


def _opening(fmt_name: str, task, world, multi_turn: bool = False):
    """The task's opening messages under ``fmt_name`` and its tools' schemas."""
    schemas = [world.suite.tools[name].schema for name in task.tool_names]
    return opening_messages(get_chat_format(fmt_name), task.query, schemas, 2, multi_turn), schemas


def _system(fmt_name: str, task, world, multi_turn: bool = False) -> str:
    return _opening(fmt_name, task, world, multi_turn)[0][0]["content"]


@pytest.mark.parametrize("base", ["chatml", "chatml_compact"])
@pytest.mark.parametrize("multi_turn", [False, True])
def test_rules_first_has_the_same_paragraphs_with_the_tools_last(base, multi_turn):
    world = build_toolworld(seed=0)
    task = world.tasks("test_seen", 1)[0]
    tools_first = _system(base, task, world, multi_turn).split("\n\n")
    rules_first = _system(f"{base}_rules_first", task, world, multi_turn).split("\n\n")
    assert tools_first[0] == rules_first[0] == INTRO
    assert tools_first[1].startswith("Tools:\n") and rules_first[-1].startswith("Tools:\n")
    assert sorted(tools_first) == sorted(rules_first)  # nothing added, nothing lost
    assert tools_first[2:] == rules_first[1:-1]  # the rules in their order, multi-turn line included
    fmt = get_chat_format(f"{base}_rules_first")
    assert (
        fmt.tool_rendering == get_chat_format(base).tool_rendering and not get_chat_format(base).rules_first
    )


def test_rules_first_prompts_of_different_tasks_share_a_prefix_worth_reusing(smollm2_tokenizer):
    """With the tools first only the introduction is common to two tasks (under the HF engine's
    ``min_shared_tokens=64``: nothing is reused); with the rules first the rules are too."""
    world = build_toolworld(seed=0)
    tasks = world.tasks("test_seen", 6)
    assert len({tuple(task.tool_names) for task in tasks}) == len(tasks)  # every task its own tools
    shared = {}
    for name in ("chatml", "chatml_rules_first"):
        fmt = get_chat_format(name)
        prompts = []
        for task in tasks:
            messages, schemas = _opening(name, task, world)
            ids, _ = tokenize_conversation(
                smollm2_tokenizer, fmt, messages, schemas, add_generation_prompt=True
            )
            prompts.append(ids)
        shared[name] = min(common_prefix_length(prompts[0], other) for other in prompts[1:])
    assert shared["chatml"] < 64 <= shared["chatml_rules_first"]
    assert shared["chatml_rules_first"] > 4 * shared["chatml"]
