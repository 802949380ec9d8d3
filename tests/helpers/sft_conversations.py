"""Realistic protocol episodes for SFT tests, in the JSONL format ``stage=synthesize`` writes.

Each episode opens with the protocol's system prompt (``build_messages``), then trial calls, execution
calls (one failing and corrected in some episodes) and an answer, with the tool observations in between.
Values vary with the episode index so conversations differ in content and length.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from toolmaster.protocol import build_messages
from toolmaster.protocol.actions import ProtocolTags
from toolmaster.protocol.prompt import observation_text

TOOLS: list[dict[str, Any]] = [
    {
        "name": "qv_conv",
        "description": "Convert a quantity. The spec format is not documented.",
        "parameters": {
            "type": "object",
            "properties": {"spec": {"type": "string"}, "value": {"type": "number"}},
            "required": ["spec", "value"],
        },
    },
    {
        "name": "wx_now",
        "description": "Current weather for a place.",
        "parameters": {
            "type": "object",
            "properties": {"place": {"type": "string"}, "units": {"type": "string", "enum": ["C", "F"]}},
            "required": ["place"],
        },
    },
]
CITIES = ["Oslo", "Lyon", "Kyoto", "Quito", "Perth", "Tunis", "Graz", "Cusco"]
TAGS = ProtocolTags()


def _turn(thought: str, action: str) -> str:
    return f"{TAGS.wrap_think(thought)}\n{action}" if thought else action


def episode(i: int, trial_budget: int = 2, short: bool = False) -> dict[str, Any]:
    """One episode: task id, messages (system, user, assistant and tool turns) and tool schemas.

    ``short``: one tool and one task (a failed trial, the corrected call, the answer), about 330 tokens
    instead of about 650, for tests that train the real model on CPU.
    """
    km = 3 + 7 * i
    miles = round(km * 0.621371, 2)
    city = CITIES[i % len(CITIES)]
    temp = 11 + (5 * i) % 17
    tools = TOOLS[:1] if short else TOOLS
    query = f"Convert {km} km to miles" + (
        "." if short else f", then tell me the temperature in {city} in Celsius."
    )
    messages = build_messages(query, tools, trial_budget, TAGS, include_tools=True)
    trial_used = 0

    def assistant(text: str) -> None:
        messages.append({"role": "assistant", "content": text})

    def tool(text: str, is_trial: bool) -> None:
        messages.append(
            {"role": "tool", "content": observation_text(text, is_trial, trial_used, trial_budget)}
        )

    assistant(
        _turn(
            "The spec format is undocumented; probe it first.",
            TAGS.wrap_call("trial", "qv_conv", {"spec": "km-mi", "value": 1}),
        )
    )
    trial_used += 1
    tool('error: bad spec "km-mi"; expected FROM>TO, e.g. "km>mi"', True)
    if i % 2 == 0 and not short:
        assistant(
            _turn(
                "So the separator is '>'. Check it once.",
                TAGS.wrap_call("trial", "qv_conv", {"spec": "km>mi", "value": 1}),
            )
        )
        trial_used += 1
        tool('{"value": 0.621371, "unit": "mi"}', True)
    assistant(
        _turn("Now convert for real.", TAGS.wrap_call("call", "qv_conv", {"spec": "km>mi", "value": km}))
    )
    tool(json.dumps({"value": miles, "unit": "mi"}), False)
    if short:
        assistant(_turn("Done.", TAGS.wrap_answer(f"{km} km is {miles} miles.")))
        return {
            "task_id": f"short-{i:03d}",
            "split": "train",
            "teacher": "scripted",
            "reward": 1.0,
            "messages": messages,
            "tools": tools,
        }
    if i % 3 == 1:
        assistant(TAGS.wrap_call("call", "wx_now", {"place": city, "units": "celsius"}))
        tool('error: units must be one of "C", "F"', False)
    assistant(_turn("", TAGS.wrap_call("call", "wx_now", {"place": city, "units": "C"})))
    tool(json.dumps({"place": city, "temp": temp, "units": "C", "sky": "clear" if i % 2 else "rain"}), False)
    assistant(
        _turn("Both results are in.", TAGS.wrap_answer(f"{km} km is {miles} miles; {city} is {temp} °C."))
    )
    return {
        "task_id": f"conv-{i:03d}",
        "split": "train",
        "teacher": "scripted",
        "reward": 1.0,
        "messages": messages,
        "tools": TOOLS,
    }


def write_dataset(path: Path, n: int, start: int = 0, short: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = (json.dumps(episode(start + i, short=short), ensure_ascii=False) + "\n" for i in range(n))
    path.write_text("".join(lines), encoding="utf-8")
    return path
