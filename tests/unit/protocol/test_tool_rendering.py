"""The compact tool rendering (``model.chat_format=chatml_compact``): every tool of toolworld, BFCL and a custom
world renders to one line that parses back into its schema, the protocol still parses the calls a compact-prompted
episode makes, and the loss mask covers exactly the same assistant tokens as under the JSON rendering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.compact_tools import normalised, parse_compact

from toolmaster.protocol import get_chat_format
from toolmaster.protocol.actions import parse_action
from toolmaster.protocol.prompt import build_messages, system_prompt, user_turn_message
from toolmaster.protocol.tokenize import tokenize_conversation
from toolmaster.protocol.tool_rendering import compact_signature, render_tools
from toolmaster.worlds.custom import load_custom_world
from toolmaster.worlds.toolworld import build_toolworld

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "custom_tools" / "weather.yaml"


def _schemas(world) -> list[dict]:
    return [tool.schema for tool in world.suite.tools.values()]


def _round_trip(schemas: list[dict]) -> None:
    assert schemas
    for schema in schemas:
        line = compact_signature(schema)
        assert "\n" not in line
        assert parse_compact(line) == normalised(schema), line


def test_every_toolworld_tool_round_trips():
    _round_trip(_schemas(build_toolworld(seed=0, n_train=64, n_test=16)))


def test_every_bfcl_tool_round_trips():
    pytest.importorskip("bfcl_eval", reason="needs bfcl-eval (make bfcl; make test installs it)")
    from toolmaster.worlds.bfcl import build_bfcl_world

    _round_trip(_schemas(build_bfcl_world()))


def test_every_custom_world_tool_round_trips():
    _round_trip(_schemas(load_custom_world(str(EXAMPLE))))


def test_hard_schemas_round_trip():
    """Optional arguments, defaults, enums, unions, nested objects, arrays of objects, keywords the grammar has
    no place for, names that need quoting and descriptions with quotes and newlines."""
    schemas = [
        {
            "name": "bk_find",
            "description": 'Search "rooms".\n  Second line.',
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": 'a "quoted", comma, name'},
                    "day": {"type": "integer", "default": 1, "minimum": 0},
                    "unit": {"type": "string", "enum": ["C", "F"], "description": ""},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "legs": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {"from": {"type": "string"}},
                            "required": ["from"],
                        },
                    },
                    "when": {"type": ["string", "null"]},
                    "meta": {
                        "type": "object",
                        "properties": {"k": {"type": "number", "description": "key"}, "v": {}},
                        "required": ["k"],
                        "additionalProperties": False,
                    },
                    "blob": {"type": "object"},
                    "weird name": {"description": "no type at all"},
                    "pairs": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
                    "anything": {"anyOf": [{"type": "string"}, {"type": "number"}]},
                },
                "required": ["city", "legs", "weird name"],
            },
        },
        {"name": "noop", "parameters": {"type": "object", "properties": {}}},
        {"name": "bare", "description": "No parameters key at all."},
    ]
    for schema in schemas:
        schema.setdefault("parameters", {"type": "object", "properties": {}})
    _round_trip(schemas)
    assert compact_signature(schemas[1]) == "noop()"


def test_compact_is_shorter_than_json_and_unknown_renderings_fail():
    schemas = _schemas(build_toolworld(seed=0, n_train=32, n_test=8))
    compact, full = render_tools(schemas, "compact"), render_tools(schemas, "json")
    assert len(compact) < 0.5 * len(full)
    assert full.splitlines()[0] == json.dumps(schemas[0], ensure_ascii=False, separators=(", ", ": "))
    with pytest.raises(ValueError, match="unknown tool rendering 'yaml'"):
        render_tools(schemas, "yaml")


def test_compact_prompt_keeps_every_rule_and_the_budget():
    schemas = _schemas(build_toolworld(seed=0, n_train=8, n_test=2))[:2]
    tags = get_chat_format("chatml_compact").tags
    prompt = system_prompt(schemas, 3, tags, rendering="compact")
    for text in (
        "<trial>",
        "</trial>",
        "<call>",
        "<answer>",
        "<think>",
        "3 trials",
        compact_signature(schemas[0]),
    ):
        assert text in prompt
    direct = system_prompt(schemas, 0, tags, rendering="compact")
    assert "<trial>" not in direct and "<call>" in direct
    later = user_turn_message("next", schemas[:1], "compact")
    assert compact_signature(schemas[0]) in later["content"] and '{"name"' not in later["content"]


def test_calls_parse_and_loss_mask_is_unchanged_under_the_compact_rendering(tiny_tokenizer):
    """The same assistant turns under both renderings: identical trainable token ids, fewer prompt tokens; the
    protocol's parser reads the calls the compact prompt's instructions describe."""
    world = build_toolworld(seed=0, n_train=8, n_test=2)
    task = world.splits["train"][0]
    schemas = [world.suite.tools[name].schema for name in task.tool_names]
    call = {"name": schemas[0]["name"], "arguments": {"x": 1}}
    turns = [
        {"role": "assistant", "content": f"<think>try</think><trial>{json.dumps(call)}</trial>"},
        {"role": "tool", "content": "[trial 1/2] Error: bad x"},
        {"role": "assistant", "content": f"<call>{json.dumps(call)}</call>"},
        {"role": "tool", "content": "42"},
        {"role": "assistant", "content": "<answer>42</answer>"},
    ]
    labelled = {}
    lengths = {}
    for name in ("chatml", "chatml_compact"):
        fmt = get_chat_format(name)
        messages = build_messages(task.query, schemas, 2, fmt.tags, rendering=fmt.tool_rendering) + turns
        ids, mask = tokenize_conversation(tiny_tokenizer, fmt, messages, schemas)
        labelled[name] = [i for i, m in zip(ids, mask) if m]
        lengths[name] = len(ids)
        action = parse_action(turns[0]["content"], fmt.tags)
        assert (
            action.kind == "trial" and action.name == call["name"] and action.arguments == call["arguments"]
        )
    assert labelled["chatml"] == labelled["chatml_compact"] and labelled["chatml"]
    assert lengths["chatml_compact"] < lengths["chatml"]
