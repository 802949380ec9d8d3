"""Assistant-turn markup and its parser.

An assistant turn is optional reasoning followed by exactly one action::

    <think>The spec format is undocumented; probe it.</think>
    <trial>{"name": "qv_conv", "arguments": {"spec": "km>mi", "value": 1}}</trial>

Actions: ``<trial>{call}</trial>`` (exploratory call on the sandbox), ``<call>{call}</call>`` (execution
call on the real state) and ``<answer>text</answer>`` (ends the episode). A call is the JSON object
``{"name": str, "arguments": object}``. Anything malformed parses to an ``invalid`` action whose ``error``
is a message meant for the model; the sampler turns it into an observation, never an exception.
Generation stops at the first closing action tag, so text after it is never produced in rollouts; the
parser still ignores anything after the first action.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from typing import Any

from toolmaster.protocol.phases import ActionKind

TRIAL, CALL, ANSWER, INVALID = ActionKind.TRIAL, ActionKind.CALL, ActionKind.ANSWER, ActionKind.INVALID


@dataclass(frozen=True)
class ProtocolTags:
    """Tag names of the markup; the Qwen format uses ``tool_call`` for execution calls."""

    think: str = "think"
    trial: str = "trial"
    call: str = "call"
    answer: str = "answer"

    def closing_tags(self) -> tuple[str, ...]:
        """The closing tags of the three actions: the stop strings for generation."""
        return (f"</{self.trial}>", f"</{self.call}>", f"</{self.answer}>")

    def wrap_call(self, kind: str, name: str, arguments: dict[str, Any]) -> str:
        """A call as markup: in the trial tag when ``kind`` is ``trial``, else in the call tag."""
        tag = self.trial if kind == TRIAL else self.call
        body = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
        return f"<{tag}>{body}</{tag}>"

    def wrap_answer(self, answer: str) -> str:
        """``answer`` inside the answer tag."""
        return f"<{self.answer}>{answer}</{self.answer}>"

    def wrap_think(self, thought: str) -> str:
        """``thought`` inside the think tag."""
        return f"<{self.think}>{thought}</{self.think}>"


@dataclass
class Action:
    """One parsed assistant turn: the action, its call or answer, or the error that made it invalid."""

    kind: ActionKind  # trial | call | answer | invalid (compares equal to those strings)
    name: str | None = None
    arguments: Any = None
    answer: str | None = None
    error: str | None = None
    thought: str | None = None
    intended: str | None = None  # for invalid calls: trial or call, when the tag was recognisable


def _hint(tags: ProtocolTags) -> str:
    return (
        f'end each turn with exactly one <{tags.trial}>{{"name": ..., "arguments": {{...}}}}</{tags.trial}>, '
        f"<{tags.call}>{{...}}</{tags.call}> or <{tags.answer}>...</{tags.answer}>"
    )


def _parse_call(kind: ActionKind, body: str, tags: ProtocolTags, thought: str | None) -> Action:
    text = body.strip()
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return Action(
            INVALID,
            error=f"invalid JSON in <{getattr(tags, kind)}>: {exc.msg} at character {exc.pos}",
            thought=thought,
            intended=kind,
        )
    if not isinstance(obj, dict):
        return Action(
            INVALID,
            error=f'a call must be a JSON object with "name" and "arguments", got {type(obj).__name__}',
            thought=thought,
            intended=kind,
        )
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return Action(INVALID, error='the call has no "name" string', thought=thought, intended=kind)
    if "arguments" not in obj:
        return Action(
            INVALID,
            name=name,
            error=f'the call to {name!r} has no "arguments" object (use {{}} for a tool without arguments)',
            thought=thought,
            intended=kind,
        )
    extra = sorted(set(obj) - {"name", "arguments"})
    if extra:
        return Action(
            INVALID,
            name=name,
            error=f'unexpected key(s) {extra} in the call; only "name" and "arguments"',
            thought=thought,
            intended=kind,
        )
    args = obj["arguments"]
    if isinstance(args, str):  # some models double-encode arguments
        with contextlib.suppress(json.JSONDecodeError):
            args = json.loads(args)
    if not isinstance(args, dict):
        return Action(
            INVALID,
            name=name,
            error=f'"arguments" of {name!r} must be a JSON object, got {type(args).__name__}',
            thought=thought,
            intended=kind,
        )
    return Action(kind, name=name, arguments=args, thought=thought)


def parse_action(text: str, tags: ProtocolTags | None = None) -> Action:
    """Parse one assistant turn into an Action (never raises)."""
    tags = tags or ProtocolTags()
    think = re.search(rf"<{tags.think}>(.*?)</{tags.think}>", text, re.S)
    thought = think.group(1).strip() if think else None
    rest = text[think.end() :] if think else text
    names = {tags.trial: TRIAL, tags.call: CALL, tags.answer: ANSWER}
    opener = re.search(r"<(" + "|".join(re.escape(t) for t in names) + r")>", rest)
    if opener is None:
        return Action(INVALID, error=f"no action found; {_hint(tags)}", thought=thought)
    tag = opener.group(1)
    kind = names[tag]
    close = rest.find(f"</{tag}>", opener.end())
    if close < 0:
        return Action(
            INVALID,
            error=f"<{tag}> is never closed with </{tag}>",
            thought=thought,
            intended=kind if kind != ANSWER else None,
        )
    body = rest[opener.end() : close]
    if kind == ANSWER:
        answer = body.strip()
        if not answer:
            return Action(INVALID, error="the answer is empty", thought=thought)
        return Action(ANSWER, answer=answer, thought=thought)
    return _parse_call(kind, body, tags, thought)
