"""The per-episode tool environment: executes trial and execution calls and never raises.

Departure from a plain function-calling loop, following the paper's trial-and-execution split:
- trial calls act on a *sandbox* forked from the task's initial state at ``reset``; trial calls build on
  each other inside it, and nothing they do reaches the real state used by execution calls;
- a ``trial_budget`` caps trial calls per episode (0 = direct execution, the baseline); a trial call over the
  budget is answered with an error observation and not run.

How calls run is the suite's ``isolation`` (``tools.isolation`` in the stages; a suite built in code without
an ``origin`` defaults to ``thread``):
- ``process`` (default, ``toolmaster.envs.process_runner`` / ``toolhost``): the sandbox and the real state
  are two processes forked from a tool host, and every call runs in a fork of one of them, so a trial's
  effects on module globals, ``state``, the working directory's files, cwd and environment variables never
  reach the execution calls, nor any other episode; a tool that exits, segfaults or hangs is killed;
- ``thread`` (``toolmaster.envs.thread_runner``): the old in-process path, for debugging; it isolates only
  the ``state`` argument.

Every failure (unknown tool, missing / extra / wrongly typed arguments, an exception inside the tool, a tool
running past its timeout, exiting or crashing, an unprintable return value, an oversized output) becomes an
informative observation plus a counter, because reading such feedback is exactly what the model must learn.
A failed call never changes the state it ran on.

Sessions with several user turns (``Task.follow_ups``): ``begin_user_turn`` moves the environment to the
next user turn: calls from then on record that turn in ``CallRecord.user_turn``, the turn's added tools
become callable, and the trial sandbox is forked afresh from the real state, so trials in a later turn test
tools against the state the earlier turns left (still never touching it). Under process isolation the new
sandbox is a new trial process started from a copy of the real ``state`` (module globals and files of the
execution process are not carried over: a world whose tools keep their objects in ``state``, as BFCL's do,
loses nothing).

``strict_types=False`` skips the argument type check (names, required arguments and enums are still
checked), for worlds whose own tools and checker accept loosely typed arguments.

The model calls tools by ``Tool.name``; a suite may file tools under other keys (``task.tool_names`` name the
keys), so that tasks of one world can offer different tools that share a name (BFCL's single-turn entries);
the runners run a call by its suite key.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from toolmaster.envs.calls import (
    INVALID_ARGUMENTS,
    OVER_BUDGET,
    PARSE_ERROR,
    RESOURCE_LIMIT,
    TIMEOUT,
    TOOL_CRASHED,
    TOOL_EXCEPTION,
    TOOL_EXITED,
    UNKNOWN_TOOL,
    UNPRINTABLE_RESULT,
    Isolation,
    Outcome,
    plain_phase,
    render_result,
)
from toolmaster.envs.task import Task
from toolmaster.envs.tool import Tool, ToolSuite
from toolmaster.protocol.phases import Phase

TRIAL, EXECUTION = Phase.TRIAL, Phase.EXECUTION
PHASES = tuple(Phase)

__all__ = [
    "EXECUTION",
    "INVALID_ARGUMENTS",
    "OVER_BUDGET",
    "PARSE_ERROR",
    "PHASES",
    "RESOURCE_LIMIT",
    "TIMEOUT",
    "TOOL_CRASHED",
    "TOOL_EXCEPTION",
    "TOOL_EXITED",
    "TRIAL",
    "UNKNOWN_TOOL",
    "UNPRINTABLE_RESULT",
    "CallRecord",
    "ToolEnv",
    "render_result",
]


class Runner(Protocol):
    def start(
        self, tool: Tool, arguments: dict[str, Any], phase: str, timeout: float, key: str | None = None
    ) -> Callable[[], Outcome]: ...
    def state(self, phase: str) -> dict[str, Any]: ...
    def fork_sandbox(self) -> None: ...
    def close(self) -> None: ...


def make_runner(suite: ToolSuite, initial_state: dict[str, Any], isolation: Isolation) -> Runner:
    if isolation.mode == "thread":
        from toolmaster.envs.thread_runner import ThreadRunner

        return ThreadRunner(initial_state)
    from toolmaster.envs.process_runner import ProcessRunner

    return ProcessRunner(suite, initial_state, isolation)


@dataclass
class CallRecord:
    """One call made by the model and what the environment answered."""

    phase: Phase
    name: str | None
    arguments: Any
    observation: str
    ok: bool
    error: str | None = None
    output_truncated: bool = False
    duration_s: float = 0.0
    user_turn: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON-ready dict (``Trajectory.calls`` holds these)."""
        return asdict(self)


class ToolEnv:
    """Runs the calls of one episode. Create one per episode (tools may be stateful)."""

    def __init__(
        self,
        suite: ToolSuite,
        trial_budget: int = 2,
        timeout_s: float = 5.0,
        max_observation_chars: int = 1000,
        isolation: Isolation | None = None,
        strict_types: bool = True,
    ) -> None:
        if trial_budget < 0:
            raise ValueError(f"trial_budget must be >= 0, got {trial_budget}")
        self.suite = suite
        self.trial_budget = trial_budget
        self.timeout_s = timeout_s
        self.max_observation_chars = max_observation_chars
        self.isolation = isolation if isolation is not None else suite.effective_isolation()
        self.strict_types = strict_types
        self.user_turn = 0
        self.task: Task | None = None
        self.tools: dict[str, Tool] = {}  # Tool.name -> tool offered now
        self.keys: dict[str, str] = {}  # Tool.name -> the tool's key in the suite
        self.runner: Runner | None = None
        self.records: list[CallRecord] = []
        self.counters: Counter[str] = Counter()

    # ----------------------------------------------------------------- episode
    def reset(self, task: Task) -> None:
        """Start an episode of ``task``: offer its tools and open fresh trial and execution states."""
        self.task = task
        self.tools, self.keys = self._offered(task.tool_names)
        self.close()
        self.runner = make_runner(self.suite, task.initial_state, self.isolation)
        self.records = []
        self.counters = Counter()
        self.user_turn = 0

    def begin_user_turn(self, index: int, add_tools: list[str] | None = None) -> list[Tool]:
        """Enter user turn ``index``: add its tools, re-fork the sandbox; returns the tools added."""
        self.user_turn = index
        offered, keys = self._offered(add_tools or [])
        added = [tool for name, tool in offered.items() if name not in self.tools]
        for tool in added:
            self.tools[tool.name] = tool
            self.keys[tool.name] = keys[tool.name]
        if self.runner is not None and self.trial_budget > 0:
            self.runner.fork_sandbox()
        return added

    def _offered(self, keys: list[str]) -> tuple[dict[str, Tool], dict[str, str]]:
        """The suite's tools under ``keys`` by ``Tool.name``, and each name's suite key."""
        subset = self.suite.subset(keys)
        return {tool.name: tool for tool in subset.values()}, {tool.name: key for key, tool in subset.items()}

    def close(self) -> None:
        """End the episode's tool processes (process isolation); ``reset`` starts new ones."""
        if self.runner is not None:
            self.runner.close()
            self.runner = None

    def __enter__(self) -> ToolEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def state(self) -> dict[str, Any]:
        """The real state (a copy under process isolation)."""
        return self.runner.state(EXECUTION) if self.runner is not None else {}

    @property
    def sandbox(self) -> dict[str, Any]:
        """The trial sandbox's state (a copy under process isolation)."""
        return self.runner.state(TRIAL) if self.runner is not None else {}

    @property
    def trials_used(self) -> int:
        """Trial calls made so far in this episode (refused ones included)."""
        return self.counters[f"{TRIAL}_calls"]

    # ------------------------------------------------------------------- calls
    def invalid(self, phase: Phase, raw: str, message: str) -> CallRecord:
        """Record a call the protocol parser could not read (bad JSON, no name, ...)."""
        return self._finish(
            CallRecord(phase, None, raw, f"Error ({PARSE_ERROR}): {message}", False, PARSE_ERROR)
        )

    def execute(self, name: Any, arguments: Any, phase: str) -> CallRecord:
        """Run one call to the end and return its record (``start``, then wait for it)."""
        return self.start(name, arguments, phase)()

    def start(self, name: Any, arguments: Any, phase: str) -> Callable[[], CallRecord]:
        """Start a call and return what waits for its record, so a batch's calls run concurrently."""
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
        where = Phase(plain_phase(phase))
        refusal = self._refusal(name, arguments, where)
        if refusal is not None:
            record = self._finish(refusal)
            return lambda: record
        if self.runner is None:
            raise RuntimeError("ToolEnv.reset(task) must be called before execute")
        tool = self.tools[name]
        timeout = tool.timeout_s if tool.timeout_s is not None else self.timeout_s
        started = time.perf_counter()
        wait = self.runner.start(tool, arguments, where, timeout, self.keys.get(name, name))

        def finish() -> CallRecord:
            outcome = wait()
            duration = time.perf_counter() - started
            if not outcome.ok:
                text = f"Error ({outcome.error}): {' '.join(outcome.text.split())}"
                return self._finish(
                    CallRecord(where, tool.name, arguments, text, False, outcome.error, duration_s=duration)
                )
            text, truncated = self._clip(outcome.text)
            return self._finish(
                CallRecord(where, tool.name, arguments, text, True, None, truncated, duration)
            )

        return finish

    def _refusal(self, name: Any, arguments: Any, phase: Phase) -> CallRecord | None:
        """The record of a call that must not run (over budget, unknown tool, bad arguments), else None."""
        if phase == TRIAL and self.trials_used >= self.trial_budget:
            msg = (
                "trials are disabled in this episode; use <call> to act"
                if self.trial_budget == 0
                else f"all {self.trial_budget} trial calls are used; make execution calls or answer now"
            )
            return CallRecord(phase, name, arguments, f"Error ({OVER_BUDGET}): {msg}", False, OVER_BUDGET)
        tool = self.tools.get(name) if isinstance(name, str) else None
        if tool is None:
            known = ", ".join(sorted(self.tools)) or "none"
            msg = f"unknown tool {name!r}; available tools: {known}"
            return CallRecord(phase, name, arguments, f"Error ({UNKNOWN_TOOL}): {msg}", False, UNKNOWN_TOOL)
        problem = tool.check_arguments(arguments, check_types=self.strict_types)
        if problem is not None:
            msg = f"{name}: {problem}"
            return CallRecord(
                phase, name, arguments, f"Error ({INVALID_ARGUMENTS}): {msg}", False, INVALID_ARGUMENTS
            )
        return None

    def _clip(self, text: str) -> tuple[str, bool]:
        limit = self.max_observation_chars
        if len(text) <= limit:
            return text, False
        dropped = len(text) - limit
        return f"{text[:limit]}...[output truncated: {dropped} more characters]", True

    def _finish(self, record: CallRecord) -> CallRecord:
        record.user_turn = self.user_turn
        self.records.append(record)
        self.counters[f"{record.phase}_calls"] += 1
        if not record.ok:
            self.counters[f"{record.phase}_errors"] += 1
            self.counters[f"error/{record.error}"] += 1
        if record.output_truncated:
            self.counters["outputs_truncated"] += 1
        return record
