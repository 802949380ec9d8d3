"""ToolHop's answer check: the gold answer contained in the final reply (or in the tool result just before it).

ToolHop's evaluation marks a query correct when the episode's last message is the model's reply and the gold
answer, lower-cased, occurs in that reply, lower-cased with commas removed (``str.rstrip('.0')`` applied to both
first); failing that, when the message before the reply is a tool result that contains the answer the same way.
An episode whose last message is not a reply (it ran out of turns after a call) is wrong.

``match="official"`` (default) reproduces that check exactly, quirk included: ``rstrip('.0')`` strips *every*
trailing ``.`` and ``0``, so a gold answer of ``100`` becomes ``1`` (found in ``1``, ``12``, ``2021``) and ``0``
becomes the empty string (found everywhere). ``match="strict"`` removes only a trailing ``.0`` (``12.0`` ->
``12``) and otherwise checks the same containment, which is the check ToolHop's formatting rules intend.
Here the reply is the final assistant turn as generated (its ``<answer>`` markup and any reasoning included,
as ToolHop checks the reply's whole content).
"""

from __future__ import annotations

from typing import Any

from toolmaster.envs.task import Task

MATCHES = ("official", "strict")


def _official(text: str) -> str:
    return text.rstrip(".0")


def _strict(text: str) -> str:
    text = text.strip()
    return text[:-2] if text.endswith(".0") else text


def contains_answer(gold: str, text: str, match: str = "official") -> bool:
    """ToolHop's containment of ``gold`` in ``text`` (``match``: official | strict)."""
    clean = _official if match == "official" else _strict
    return clean(gold).lower() in clean(text).replace(",", "").lower()


def score(task: Task, trajectory: Any, final_state: dict[str, Any] | None = None) -> bool:
    """The task's scorer hook (``Task.scorer``): ToolHop's check on the episode's last two messages."""
    match = str(task.metadata.get("match", "official"))
    messages = trajectory.messages
    if not messages or messages[-1]["role"] != "assistant" or not messages[-1]["content"]:
        return False
    if contains_answer(task.answer, messages[-1]["content"], match):
        return True
    before = messages[-2] if len(messages) >= 2 else None
    return (
        before is not None
        and before["role"] == "tool"
        and contains_answer(task.answer, before["content"], match)
    )
