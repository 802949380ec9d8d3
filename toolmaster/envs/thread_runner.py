"""The in-process runner (``tools.isolation=thread``): each call in a daemon thread on a copy of the state.

The old path, kept for debugging (breakpoints and prints inside tools work as usual). It protects only the
``state`` argument: the copy is committed when the call returns in time, so a failing or hung tool cannot
half-mutate it, but module globals, the working directory and the environment are shared with the trainer,
a tool that calls ``os._exit`` or segfaults ends the whole run, and a timed-out call's thread is abandoned
and keeps running. Resource limits are not applied. Use ``tools.isolation=process`` for real runs.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from typing import Any

from toolmaster.envs.calls import TIMEOUT, Outcome, call_tool
from toolmaster.envs.tool import Tool
from toolmaster.protocol.phases import Phase


class ThreadRunner:
    """One episode's two states (trial sandbox and real state), each call run in a daemon thread."""

    def __init__(self, initial_state: dict[str, Any]) -> None:
        self.states: dict[str, dict[str, Any]] = {
            Phase.EXECUTION: copy.deepcopy(initial_state),
            Phase.TRIAL: copy.deepcopy(initial_state),
        }

    def fork_sandbox(self) -> None:
        """A new trial sandbox: a copy of the real state (a new user turn)."""
        self.states[Phase.TRIAL] = copy.deepcopy(self.states[Phase.EXECUTION])

    def start(
        self, tool: Tool, arguments: dict[str, Any], phase: str, timeout: float, key: str | None = None
    ) -> Callable[[], Outcome]:
        """Run ``tool`` in a thread on a copy of the phase's state, which replaces it if the call succeeds."""
        target = self.states[phase]
        working = copy.deepcopy(target) if tool.wants_state else {}
        box: dict[str, Outcome] = {}

        def call() -> None:
            box["outcome"] = call_tool(tool, arguments, working, phase)

        worker = threading.Thread(target=call, daemon=True, name=f"tool-{tool.name}")
        deadline = time.monotonic() + timeout
        worker.start()

        def wait() -> Outcome:
            worker.join(max(0.0, deadline - time.monotonic()))
            if worker.is_alive():
                msg = f"{tool.name} did not answer within {timeout:g} s and was abandoned"
                return Outcome(False, msg, TIMEOUT)
            outcome = box["outcome"]
            if outcome.ok and tool.wants_state:
                target.clear()
                target.update(working)
            return outcome

        return wait

    def state(self, phase: str) -> dict[str, Any]:
        """The phase's current state (no copy: the thread runner shares the process)."""
        return self.states[phase]

    def close(self) -> None:
        """Nothing to release: calls run in threads of this process."""
        pass
