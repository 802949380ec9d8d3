"""The per-episode tool environment: executes trial and execution calls and never raises.

Departure from a plain function-calling loop, following the paper's trial-and-execution split:
- trial calls act on a *sandbox*, a deep copy of the episode state forked at ``reset``; trial calls build on
  each other inside it, and nothing they do reaches the real state used by execution calls;
- a ``trial_budget`` caps trial calls per episode (0 = direct execution, the baseline); a trial call over the
  budget is answered with an error observation and not run.

Every failure (unknown tool, missing / extra / wrongly typed arguments, an exception inside the tool, a tool
running past its timeout, an oversized output) becomes an informative observation plus a counter, because
reading such feedback is exactly what the model must learn. Each call runs in a daemon thread on a copy of
the state; the copy is committed only when the call returns in time, so a hung tool can neither stall the
batch nor half-mutate the state (the abandoned thread is left to finish on its own copy).

Sessions with several user turns (``Task.follow_ups``): ``begin_user_turn`` moves the environment to the
next user turn: calls from then on record that turn in ``CallRecord.user_turn``, the turn's added tools
become callable, and the trial sandbox is forked afresh from the real state, so trials in a later turn test
tools against the state the earlier turns left (still never touching it).

``strict_types=False`` skips the argument type check (names, required arguments and enums are still
checked), for worlds whose own tools and checker accept loosely typed arguments.

The model calls tools by ``Tool.name``; a suite may file tools under other keys (``task.tool_names`` name the
keys), so that tasks of one world can offer different tools that share a name (BFCL's single-turn entries).
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from toolmaster.envs.task import Task
from toolmaster.envs.tool import Tool, ToolSuite

TRIAL = "trial"
EXECUTION = "execution"
PHASES = (TRIAL, EXECUTION)

# error kinds, used as counter keys and in CallRecord.error
PARSE_ERROR = "parse_error"
UNKNOWN_TOOL = "unknown_tool"
INVALID_ARGUMENTS = "invalid_arguments"
TOOL_EXCEPTION = "tool_exception"
TIMEOUT = "timeout"
OVER_BUDGET = "over_budget"


@dataclass
class CallRecord:
    """One call made by the model and what the environment answered."""

    phase: str
    name: str | None
    arguments: Any
    observation: str
    ok: bool
    error: str | None = None
    output_truncated: bool = False
    duration_s: float = 0.0
    user_turn: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def render_result(result: Any) -> str:
    """Tool return value -> observation text (strings verbatim, everything else as JSON)."""
    if isinstance(result, str):
        return result
    try:
        return json.dumps(result, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(result)


class ToolEnv:
    """Runs the calls of one episode. Create one per episode (tools may be stateful)."""

    def __init__(
        self,
        suite: ToolSuite,
        trial_budget: int = 2,
        timeout_s: float = 5.0,
        max_observation_chars: int = 1000,
        strict_types: bool = True,
    ) -> None:
        if trial_budget < 0:
            raise ValueError(f"trial_budget must be >= 0, got {trial_budget}")
        self.suite = suite
        self.trial_budget = trial_budget
        self.timeout_s = timeout_s
        self.max_observation_chars = max_observation_chars
        self.strict_types = strict_types
        self.user_turn = 0
        self.task: Task | None = None
        self.tools: dict[str, Tool] = {}
        self.state: dict[str, Any] = {}
        self.sandbox: dict[str, Any] = {}
        self.records: list[CallRecord] = []
        self.counters: Counter[str] = Counter()

    # ----------------------------------------------------------------- episode
    def reset(self, task: Task) -> None:
        self.task = task
        self.tools = {tool.name: tool for tool in self.suite.subset(task.tool_names).values()}
        self.state = copy.deepcopy(task.initial_state)
        self.sandbox = copy.deepcopy(task.initial_state)
        self.records = []
        self.counters = Counter()
        self.user_turn = 0

    def begin_user_turn(self, index: int, add_tools: list[str] | None = None) -> list[Tool]:
        """Enter user turn ``index``: add its tools, re-fork the sandbox; returns the tools added."""
        self.user_turn = index
        added = [tool for tool in self.suite.subset(add_tools or []).values() if tool.name not in self.tools]
        for tool in added:
            self.tools[tool.name] = tool
        self.sandbox = copy.deepcopy(self.state)
        return added

    @property
    def trials_used(self) -> int:
        return self.counters[f"{TRIAL}_calls"]

    # ------------------------------------------------------------------- calls
    def invalid(self, phase: str, raw: str, message: str) -> CallRecord:
        """Record a call the protocol parser could not read (bad JSON, no name, ...)."""
        return self._finish(
            CallRecord(phase, None, raw, f"Error ({PARSE_ERROR}): {message}", False, PARSE_ERROR)
        )

    def execute(self, name: Any, arguments: Any, phase: str) -> CallRecord:
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
        if phase == TRIAL and self.trials_used >= self.trial_budget:
            msg = (
                "trials are disabled in this episode; use <call> to act"
                if self.trial_budget == 0
                else f"all {self.trial_budget} trial calls are used; make execution calls or answer now"
            )
            return self._finish(
                CallRecord(phase, name, arguments, f"Error ({OVER_BUDGET}): {msg}", False, OVER_BUDGET)
            )
        tool = self.tools.get(name) if isinstance(name, str) else None
        if tool is None:
            known = ", ".join(sorted(self.tools)) or "none"
            msg = f"unknown tool {name!r}; available tools: {known}"
            return self._finish(
                CallRecord(phase, name, arguments, f"Error ({UNKNOWN_TOOL}): {msg}", False, UNKNOWN_TOOL)
            )
        problem = tool.check_arguments(arguments, check_types=self.strict_types)
        if problem is not None:
            msg = f"{name}: {problem}"
            return self._finish(
                CallRecord(
                    phase, name, arguments, f"Error ({INVALID_ARGUMENTS}): {msg}", False, INVALID_ARGUMENTS
                )
            )
        return self._finish(self._run(tool, arguments, phase))

    def _run(self, tool: Tool, arguments: dict[str, Any], phase: str) -> CallRecord:
        target = self.sandbox if phase == TRIAL else self.state
        working = copy.deepcopy(target) if tool.wants_state else None
        box: dict[str, Any] = {}

        def call() -> None:
            try:
                kwargs = dict(arguments)
                if working is not None:
                    kwargs["state"] = working
                box["result"] = tool.fn(**kwargs)
            except Exception as exc:  # noqa: BLE001 - any tool failure becomes an observation
                box["error"] = exc

        timeout = tool.timeout_s if tool.timeout_s is not None else self.timeout_s
        start = time.perf_counter()
        worker = threading.Thread(target=call, daemon=True, name=f"tool-{tool.name}")
        worker.start()
        worker.join(timeout)
        duration = time.perf_counter() - start
        if worker.is_alive():
            msg = f"{tool.name} did not answer within {timeout:g} s and was abandoned"
            return CallRecord(
                phase, tool.name, arguments, f"Error ({TIMEOUT}): {msg}", False, TIMEOUT, duration_s=duration
            )
        if "error" in box:
            exc = box["error"]
            detail = str(exc) or type(exc).__name__
            msg = f"{tool.name} failed: {type(exc).__name__}: {detail}"
            return CallRecord(
                phase,
                tool.name,
                arguments,
                f"Error ({TOOL_EXCEPTION}): {msg}",
                False,
                TOOL_EXCEPTION,
                duration_s=duration,
            )
        if working is not None:
            target.clear()
            target.update(working)
        text, truncated = self._clip(render_result(box.get("result")))
        return CallRecord(phase, tool.name, arguments, text, True, None, truncated, duration)

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
