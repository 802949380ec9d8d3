"""A task: a user query, the tools it may use, the initial environment state and a checkable answer.

Tasks are plain JSON-serialisable records, so datasets of tasks and trajectories can be written, shared
and reloaded; the callables behind ``tool_names`` live in the world's ToolSuite.

Two optional extensions serve worlds beyond one-question-one-answer (any world may use them):

- ``follow_ups``: later user turns of the same session, each ``{"query": str, "add_tools": [names]}``.
  After the model answers a user turn, the episode continues with the next one; ``add_tools`` are tools
  that become available from that turn on (announced in that turn's user message). A gold call may carry
  ``"user_turn": i`` (0 = ``query``) to say which turn it belongs to.
- ``scorer``: ``"module:function"``, a callable ``(task, trajectory, final_state) -> bool`` that decides
  success instead of comparing the final answer (e.g. by the tools' state). ``final_state`` is the episode's
  real state when the rollout scores it, and None when a reward recomputes the score from a saved trajectory.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")


def normalize_answer(text: str) -> str:
    """Lower-case, collapse white space, strip surrounding quotes and a trailing full stop."""
    text = " ".join(str(text).strip().split()).lower()
    text = text.strip("\"'` ")
    return text[:-1].rstrip() if text.endswith(".") and not _NUMBER.match(text) else text


def answers_match(predicted: str | None, expected: str, rel_tol: float = 1e-4, abs_tol: float = 1e-6) -> bool:
    """Exact match after normalisation; numbers compare with a small tolerance (``12.50`` == ``12.5``)."""
    if predicted is None:
        return False
    got, want = normalize_answer(predicted), normalize_answer(expected)
    if got == want:
        return True
    got_num, want_num = got.replace(",", ""), want.replace(",", "")
    if _NUMBER.match(got_num) and _NUMBER.match(want_num):
        return math.isclose(float(got_num), float(want_num), rel_tol=rel_tol, abs_tol=abs_tol)
    return False


@dataclass
class Task:
    """One tool-use task. ``gold_calls`` are ground-truth execution calls ({"name", "arguments"})."""

    id: str
    query: str
    answer: str
    tool_names: list[str]
    split: str = "train"
    family: str = ""
    initial_state: dict[str, Any] = field(default_factory=dict)
    gold_calls: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    follow_ups: list[dict[str, Any]] = field(default_factory=list)
    scorer: str | None = None

    def check(self, predicted: str | None) -> bool:
        """Whether ``predicted`` matches the task's answer (``answers_match``)."""
        return answers_match(predicted, self.answer)

    @property
    def num_user_turns(self) -> int:
        """How many user turns the session has: the query plus each follow-up."""
        return 1 + len(self.follow_ups)

    def score(self, trajectory: Any, final_state: dict[str, Any] | None = None) -> bool:
        """Success of a finished episode: the task's ``scorer`` when it has one, else the answer check."""
        if self.scorer is None:
            return self.check(trajectory.answer)
        return bool(resolve_scorer(self.scorer)(self, trajectory, final_state))

    def to_dict(self) -> dict[str, Any]:
        """The task as a JSON-ready dict (what a tasks file holds)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Task:
        """A task from a dict of its fields; an unknown field is a ``ValueError`` naming the known ones."""
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown task field(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)


_SCORERS: dict[str, Callable[..., bool]] = {}


def resolve_scorer(spec: str) -> Callable[..., bool]:
    """Import a ``"module:function"`` scorer once; a bad spec raises ValueError naming it."""
    if spec not in _SCORERS:
        module_name, _, attr = spec.partition(":")
        try:
            fn = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ValueError(f"task scorer {spec!r} cannot be imported: {exc}") from None
        _SCORERS[spec] = fn
    return _SCORERS[spec]
