"""Table-driven tests of ``parse_action``: every well-formed action and every way a turn can be malformed."""

from __future__ import annotations

from typing import Any

import pytest

from toolmaster.protocol.actions import ANSWER, CALL, INVALID, TRIAL, ProtocolTags, parse_action

QWEN = ProtocolTags(call="tool_call")

# (id, text, tags, expected attributes of the Action, substrings of the error message)
CASES: list[tuple[str, str, ProtocolTags | None, dict[str, Any], list[str]]] = [
    (
        "trial",
        '<trial>{"name": "qv_conv", "arguments": {"spec": "km>mi", "value": 1}}</trial>',
        None,
        {"kind": TRIAL, "name": "qv_conv", "arguments": {"spec": "km>mi", "value": 1}, "thought": None},
        [],
    ),
    (
        "call",
        '<call>{"name": "lookup", "arguments": {"id": 7}}</call>',
        None,
        {"kind": CALL, "name": "lookup", "arguments": {"id": 7}},
        [],
    ),
    (
        "call-empty-arguments",
        '<call>{"name": "now", "arguments": {}}</call>',
        None,
        {"kind": CALL, "name": "now", "arguments": {}},
        [],
    ),
    (
        "call-json-with-whitespace-and-unicode",
        '<call>\n  {"name": "say", "arguments": {"text": "héllo 世界"}}\n</call>',
        None,
        {"kind": CALL, "name": "say", "arguments": {"text": "héllo 世界"}},
        [],
    ),
    ("answer", "<answer>42</answer>", None, {"kind": ANSWER, "answer": "42"}, []),
    ("answer-stripped", "<answer>\n  Oslo \n</answer>", None, {"kind": ANSWER, "answer": "Oslo"}, []),
    (
        "think-then-trial",
        "<think> The spec format is undocumented; probe it. </think>\n"
        '<trial>{"name": "f", "arguments": {"x": 1}}</trial>',
        None,
        {"kind": TRIAL, "name": "f", "thought": "The spec format is undocumented; probe it."},
        [],
    ),
    (
        "multiline-think-then-answer",
        "<think>line one\nline two</think><answer>yes</answer>",
        None,
        {"kind": ANSWER, "answer": "yes", "thought": "line one\nline two"},
        [],
    ),
    (
        "action-inside-think-is-not-the-action",
        '<think>maybe <call>{"name": "g", "arguments": {}}</call>?</think><answer>no</answer>',
        None,
        {"kind": ANSWER, "answer": "no"},
        [],
    ),
    (
        "text-after-action-ignored",
        '<call>{"name": "f", "arguments": {"a": 1}}</call> trailing words <answer>7</answer>',
        None,
        {"kind": CALL, "name": "f", "arguments": {"a": 1}},
        [],
    ),
    (
        "text-after-answer-ignored",
        '<answer>7</answer>\n<call>{"name": "f", "arguments": {}}</call>',
        None,
        {"kind": ANSWER, "answer": "7"},
        [],
    ),
    (
        "double-encoded-arguments",
        '<call>{"name": "f", "arguments": "{\\"city\\": \\"Oslo\\"}"}</call>',
        None,
        {"kind": CALL, "name": "f", "arguments": {"city": "Oslo"}},
        [],
    ),
    (
        "bad-json",
        '<trial>{"name": "f", "arguments": {"x": 1}</trial>',
        None,
        {"kind": INVALID, "intended": TRIAL},
        ["invalid JSON", "<trial>"],
    ),
    (
        "bad-json-single-quotes",
        "<call>{'name': 'f', 'arguments': {}}</call>",
        None,
        {"kind": INVALID, "intended": CALL},
        ["invalid JSON", "<call>"],
    ),
    (
        "json-not-an-object",
        '<call>["f", {}]</call>',
        None,
        {"kind": INVALID, "intended": CALL},
        ["JSON object", "list"],
    ),
    (
        "missing-name",
        '<call>{"arguments": {"x": 1}}</call>',
        None,
        {"kind": INVALID, "name": None, "intended": CALL},
        ['"name"'],
    ),
    (
        "empty-name",
        '<trial>{"name": "", "arguments": {}}</trial>',
        None,
        {"kind": INVALID, "intended": TRIAL},
        ['"name"'],
    ),
    (
        "name-not-a-string",
        '<call>{"name": 3, "arguments": {}}</call>',
        None,
        {"kind": INVALID, "intended": CALL},
        ['"name"'],
    ),
    (
        "missing-arguments",
        '<call>{"name": "f"}</call>',
        None,
        {"kind": INVALID, "name": "f", "intended": CALL},
        ['"arguments"', "'f'", "{}"],
    ),
    (
        "arguments-a-list",
        '<call>{"name": "f", "arguments": [1, 2]}</call>',
        None,
        {"kind": INVALID, "name": "f", "intended": CALL},
        ['"arguments"', "'f'", "list"],
    ),
    (
        "arguments-a-number",
        '<trial>{"name": "f", "arguments": 5}</trial>',
        None,
        {"kind": INVALID, "name": "f", "intended": TRIAL},
        ["JSON object", "int"],
    ),
    (
        "arguments-a-non-json-string",
        '<call>{"name": "f", "arguments": "city=Oslo"}</call>',
        None,
        {"kind": INVALID, "name": "f", "intended": CALL},
        ["JSON object", "str"],
    ),
    (
        "double-encoded-arguments-not-an-object",
        '<call>{"name": "f", "arguments": "[1, 2]"}</call>',
        None,
        {"kind": INVALID, "name": "f", "intended": CALL},
        ["JSON object", "list"],
    ),
    (
        "extra-keys",
        '<call>{"name": "f", "arguments": {}, "id": 1, "type": "function"}</call>',
        None,
        {"kind": INVALID, "name": "f", "intended": CALL},
        ["unexpected key", "'id'", "'type'"],
    ),
    (
        "unclosed-trial",
        '<trial>{"name": "f", "arguments": {}}',
        None,
        {"kind": INVALID, "intended": TRIAL},
        ["<trial>", "never closed", "</trial>"],
    ),
    (
        "unclosed-answer",
        "<think>done</think><answer>42",
        None,
        {"kind": INVALID, "intended": None, "thought": "done"},
        ["<answer>", "never closed"],
    ),
    (
        "mismatched-closing-tag",
        '<trial>{"name": "f", "arguments": {}}</call>',
        None,
        {"kind": INVALID, "intended": TRIAL},
        ["never closed", "</trial>"],
    ),
    ("no-action", "I think the answer is 42.", None, {"kind": INVALID}, ["no action found", "<answer>"]),
    ("empty-text", "", None, {"kind": INVALID}, ["no action found"]),
    (
        "think-only",
        "<think>I should call a tool</think>",
        None,
        {"kind": INVALID, "thought": "I should call a tool"},
        ["no action found"],
    ),
    ("empty-answer", "<answer>   </answer>", None, {"kind": INVALID}, ["answer is empty"]),
    (
        "qwen-tool-call",
        '<think>act</think>\n<tool_call>\n{"name": "f", "arguments": {"q": "x"}}\n</tool_call>',
        QWEN,
        {"kind": CALL, "name": "f", "arguments": {"q": "x"}, "thought": "act"},
        [],
    ),
    (
        "qwen-trial-and-answer-tags-unchanged",
        '<trial>{"name": "f", "arguments": {}}</trial>',
        QWEN,
        {"kind": TRIAL, "name": "f"},
        [],
    ),
    (
        "qwen-bad-json-names-tool_call",
        '<tool_call>{"name": "f", "arguments": }</tool_call>',
        QWEN,
        {"kind": INVALID, "intended": CALL},
        ["invalid JSON", "<tool_call>"],
    ),
    (
        "qwen-does-not-accept-call",
        '<call>{"name": "f", "arguments": {}}</call>',
        QWEN,
        {"kind": INVALID},
        ["no action found", "<tool_call>"],
    ),
]


@pytest.mark.parametrize(
    ("text", "tags", "expected", "error_parts"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_parse_action(
    text: str, tags: ProtocolTags | None, expected: dict[str, Any], error_parts: list[str]
) -> None:
    action = parse_action(text, tags)
    for key, value in expected.items():
        assert getattr(action, key) == value, f"{key}: {getattr(action, key)!r} != {value!r}"
    if action.kind == INVALID:
        assert action.error, "an invalid action must carry a message for the model"
        assert "\n" not in action.error
        for part in error_parts:
            assert part in action.error, f"{part!r} not in {action.error!r}"
    else:
        assert action.error is None
        assert not error_parts


@pytest.mark.parametrize("tags", [ProtocolTags(), QWEN], ids=["default", "qwen"])
def test_wrapped_actions_round_trip(tags: ProtocolTags) -> None:
    args = {"city": "Zürich", "n": 2, "nested": {"a": [1, 2]}}
    text = tags.wrap_think("probe first") + "\n" + tags.wrap_call(TRIAL, "get", args)
    action = parse_action(text, tags)
    assert (action.kind, action.name, action.arguments, action.thought) == (TRIAL, "get", args, "probe first")
    action = parse_action(tags.wrap_call(CALL, "get", args), tags)
    assert (action.kind, action.name, action.arguments) == (CALL, "get", args)
    action = parse_action(tags.wrap_answer("12.5"), tags)
    assert (action.kind, action.answer) == (ANSWER, "12.5")


def test_closing_tags_stop_generation_at_every_action() -> None:
    assert set(QWEN.closing_tags()) == {"</trial>", "</tool_call>", "</answer>"}
    assert set(ProtocolTags().closing_tags()) == {"</trial>", "</call>", "</answer>"}
