"""A Tool is a name, a JSON schema for its arguments and a Python callable; a ToolSuite is a set of them.

Argument checking implements the subset of JSON Schema that tool definitions use (object with
``properties``/``required``; types string, integer, number, boolean, array, object, null; ``enum``).
Every problem is reported as a message meant for the model, which is how it learns an unfamiliar tool.

A callable may declare a keyword parameter named ``state``: it then receives the episode's mutable state
dict (the trial sandbox or the real state, depending on the phase) in addition to the model's arguments;
one named ``phase`` receives ``"trial"`` or ``"execution"``, so a tool with effects outside its process
(a database, a network service, files outside its working directory), which no fork can undo, can dry-run
during trials.

A ToolSuite also says how it can be rebuilt in another process (``origin``: a Hydra ``_target_`` node, set
by the world loaders and ``build_world``) and how its tools run (``isolation``, set from ``tools.isolation`` by
``build_world``; unset, it is process isolation for a suite with an origin and the in-thread path for a suite
built in code, whose tool host would have to be a fork of the calling process), see ``toolmaster.envs.toolhost``.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from toolmaster.envs.calls import Isolation

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
    "null": (type(None),),
}


def _type_ok(value: Any, expected: str | list[str]) -> bool:
    names = [expected] if isinstance(expected, str) else list(expected)
    for name in names:
        kinds = _JSON_TYPES.get(name)
        if kinds is None:
            return True  # unknown type keyword: do not block the call
        if isinstance(value, bool) and name in ("integer", "number"):
            continue  # JSON booleans are not numbers
        if isinstance(value, kinds):
            return True
    return False


def _describe(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass
class Tool:
    """One callable tool: what the model sees (name, description, parameters) and what runs."""

    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., Any]
    family: str = ""
    timeout_s: float | None = None  # overrides the environment's default when set

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"tool name must be a non-empty string, got {self.name!r}")
        if self.parameters.get("type", "object") != "object":
            raise ValueError(f"tool {self.name!r}: parameters must be a JSON schema of type 'object'")
        self.parameters.setdefault("type", "object")
        self.parameters.setdefault("properties", {})
        sig = inspect.signature(self.fn)
        self.wants_state = "state" in sig.parameters
        self.wants_phase = "phase" in sig.parameters

    @property
    def schema(self) -> dict[str, Any]:
        """The OpenAI-style function schema shown to the model."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters}

    def check_arguments(self, arguments: Any, check_types: bool = True) -> str | None:
        """Return None when ``arguments`` fit the schema, else one message naming every problem.

        ``check_types=False`` skips the JSON type of each argument (names, required and enums still count)."""
        if not isinstance(arguments, dict):
            return f"arguments must be a JSON object, got {type(arguments).__name__}"
        props: dict[str, Any] = self.parameters.get("properties", {})
        required: list[str] = list(self.parameters.get("required", []))
        problems: list[str] = []
        missing = [name for name in required if name not in arguments]
        if missing:
            problems.append("missing required argument(s): " + ", ".join(repr(m) for m in missing))
        extra = [name for name in arguments if name not in props]
        if extra:
            problems.append(
                "unknown argument(s): "
                + ", ".join(repr(e) for e in extra)
                + f"; accepted: {', '.join(props) or 'none'}"
            )
        for name, value in arguments.items():
            spec = props.get(name)
            if spec is None:
                continue
            expected = spec.get("type")
            if check_types and expected is not None and not _type_ok(value, expected):
                problems.append(f"argument {name!r} must be of type {expected}, got {_describe(value)}")
            elif "enum" in spec and value not in spec["enum"]:
                allowed = ", ".join(_describe(v) for v in spec["enum"])
                problems.append(f"argument {name!r} must be one of [{allowed}], got {_describe(value)}")
        return "; ".join(problems) if problems else None


@dataclass
class ToolSuite:
    """A named collection of tools; tasks name the subset they may use."""

    tools: dict[str, Tool] = field(default_factory=dict)
    origin: dict[str, Any] | None = None  # how to rebuild the world in a tool host (Hydra _target_ node)
    isolation: Isolation | None = None  # None: process isolation when the suite has an origin, else thread

    @classmethod
    def of(cls, tools: Iterable[Tool]) -> ToolSuite:
        """A suite of ``tools`` (names must be distinct)."""
        suite = cls()
        for tool in tools:
            suite.add(tool)
        return suite

    def effective_isolation(self) -> Isolation:
        """How its calls run: its ``isolation``, else processes when it can be rebuilt, else threads."""
        if self.isolation is not None:
            return self.isolation
        return Isolation("process" if self.origin is not None else "thread")

    def add(self, tool: Tool) -> None:
        """Add ``tool``; a name already in the suite is a ``ValueError``."""
        if tool.name in self.tools:
            raise ValueError(f"duplicate tool name {tool.name!r}")
        self.tools[tool.name] = tool

    def subset(self, names: Iterable[str]) -> dict[str, Tool]:
        """The tools named by a task, by name; an unknown name is a ``KeyError``."""
        out: dict[str, Tool] = {}
        for name in names:
            if name not in self.tools:
                raise KeyError(f"task names unknown tool {name!r}")
            out[name] = self.tools[name]
        return out

    def __contains__(self, name: object) -> bool:
        return name in self.tools

    def __len__(self) -> int:
        return len(self.tools)
