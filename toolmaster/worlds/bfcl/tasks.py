"""BFCL multi-turn entries -> Tasks with several user turns, gold calls and BFCL's checker as scorer.

Per entry: ``query`` is the first user turn; each later turn is a ``follow_up``. The tools offered at the start
are the function docs of the entry's involved classes, minus ``excluded_function`` and minus the functions
``missed_function`` holds back (miss_func), which join at their turn (``add_tools``); such a turn has no user
text in BFCL, so the follow-up asks to retry the earlier request with the new tools. Ground-truth calls (Python
call strings such as ``mv(source='a', destination='b')``, some with positional arguments) are parsed into gold
calls ``{"name", "arguments", "user_turn"}``; the raw strings stay in ``metadata["ground_truth"]`` for the
checker. ``metadata``: category, scenario (the entry's index: entry i of every category is the same scenario)
and classes.
"""

from __future__ import annotations

import ast
from typing import Any

from toolmaster.envs.task import Task
from toolmaster.worlds.bfcl.package import function_docs
from toolmaster.worlds.bfcl.tools import initial_state, parameter_names

SCORER = "toolmaster.worlds.bfcl.scorer:score"
RETRY_WITH_NEW_TOOLS = "Please try my earlier request again now that you have these tools."


def turn_text(messages: list[dict[str, Any]]) -> str:
    return "\n".join(str(m["content"]) for m in messages if m.get("role") == "user")


def parse_call(text: str, owner: dict[str, str]) -> dict[str, Any]:
    """``"name(a, k=v)"`` -> ``{"name", "arguments"}`` (positional values named from the method's signature)."""
    node = ast.parse(text.strip(), mode="eval").body
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise ValueError(f"not a plain function call: {text!r}")
    name = node.func.id
    arguments: dict[str, Any] = {}
    if node.args:
        names = parameter_names(owner[name], name)
        for position, value in enumerate(node.args):
            arguments[names[position]] = ast.literal_eval(value)
    for keyword in node.keywords:
        arguments[str(keyword.arg)] = ast.literal_eval(keyword.value)
    return {"name": name, "arguments": arguments}


def entry_task(entry: dict[str, Any], category: str, scenario: int, split: str) -> Task:
    classes = list(entry["involved_classes"])
    owner = {doc["name"]: cls for cls in classes for doc in function_docs(cls)}
    excluded = set(entry.get("excluded_function", []))
    held_back = {int(turn): list(names) for turn, names in entry.get("missed_function", {}).items()}
    held = {name for names in held_back.values() for name in names}
    tool_names = [name for name in owner if name not in excluded and name not in held]
    questions = entry["question"]
    follow_ups = []
    for turn in range(1, len(questions)):
        text = turn_text(questions[turn])
        added = held_back.get(turn, [])
        follow_ups.append({"query": text or RETRY_WITH_NEW_TOOLS, "add_tools": added})
    gold = [
        {**parse_call(call, owner), "user_turn": turn}
        for turn, calls in enumerate(entry["ground_truth"])
        for call in calls
    ]
    return Task(
        id=entry["id"],
        query=turn_text(questions[0]),
        answer="",
        tool_names=tool_names,
        split=split,
        family=category,
        initial_state=initial_state(classes, entry["initial_config"], category == "long_context"),
        gold_calls=gold,
        metadata={
            "category": category,
            "scenario": scenario,
            "classes": classes,
            "ground_truth": entry["ground_truth"],
        },
        follow_ups=follow_ups,
        scorer=SCORER,
    )
