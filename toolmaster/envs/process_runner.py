"""The trainer's side of process isolation: start a suite's tool host, and run one episode's calls in it.

``ToolHost`` is started once per ToolSuite, on first use, and kept until the process exits: spawned as
``python -m toolmaster.envs.toolhost`` (its own session, so Ctrl-C stays the trainer's) when the suite has an
``origin`` to rebuild it from, else forked from this process (suites built in code, e.g. in tests).
``ProcessRunner`` holds one episode's two lineages (execution and trials), each opened on its first call
from the task's initial state; closing the episode closes their sockets and the processes exit. See
``toolmaster.envs.toolhost`` for what runs on the other side.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import os
import socket
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

from toolmaster.envs.calls import TOOL_CRASHED, Isolation, Outcome, plain_phase
from toolmaster.envs.tool import Tool, ToolSuite
from toolmaster.envs.toolhost import recv_msg, send_msg, serve_host
from toolmaster.protocol.phases import Phase

HOST_START_TIMEOUT_S = 300.0
GRACE_S = 30.0  # how much longer than the call's timeout the trainer waits for its lineage


class ToolHostError(RuntimeError):
    """The tool host could not be started (the world failed to build in it, or it died)."""


class ToolHost:
    """A running tool host for one suite; ``open_lineage`` forks an episode process in it."""

    def __init__(self, suite: ToolSuite) -> None:
        self.lock = threading.Lock()
        self.control, theirs = socket.socketpair()
        self.process: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        try:
            if suite.origin is not None:
                self._spawn(suite, theirs)
            else:
                self._fork(suite, theirs)
        finally:
            theirs.close()

    def _spawn(self, suite: ToolSuite, theirs: socket.socket) -> None:
        env = dict(os.environ)
        paths = [p for p in sys.path if p] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "toolmaster.envs.toolhost", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            env=env,
            start_new_session=True,
        )
        send_msg(self.control, {"origin": suite.origin})
        self.control.settimeout(HOST_START_TIMEOUT_S)
        try:
            answer = recv_msg(self.control)
        except TimeoutError:
            answer = None
        self.control.settimeout(None)
        if answer is None:
            self.close()
            raise ToolHostError(f"the tool host did not start within {HOST_START_TIMEOUT_S:g} s")
        reply = answer[0]
        if "error" in reply:
            self.close()
            raise ToolHostError(f"the tool host could not build the world {suite.origin}: {reply['error']}")
        missing = sorted(set(suite.tools) - set(reply["tools"]))
        if missing:
            self.close()
            raise ToolHostError(
                f"the tool host built a different world from {suite.origin}: tools {missing} are missing there"
            )

    def _fork(self, suite: ToolSuite, theirs: socket.socket) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                keep = theirs.fileno()
                os.closerange(3, keep)  # other hosts' and episodes' sockets must not be held open here
                os.closerange(keep + 1, 1 << 16)
                os.setpgid(0, 0)
                serve_host(theirs, suite)
            except BaseException:  # noqa: BLE001 - the forked host never returns into the caller
                code = 1
            os._exit(code)
        self.pid = pid

    def open_lineage(self, state: dict[str, Any]) -> socket.socket:
        """Fork a lineage of ``state`` in the host; return the socket that talks to it."""
        mine, theirs = socket.socketpair()
        try:
            with self.lock:
                send_msg(self.control, {"state": state}, fds=[theirs.fileno()])
        finally:
            theirs.close()
        return mine

    def close(self) -> None:
        """End the tool host: close its control socket and stop its process."""
        with contextlib.suppress(OSError):
            self.control.close()
        if self.process is not None:
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.pid is not None:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
            self.pid = None


_HOSTS: dict[int, ToolHost] = {}
_HOSTS_LOCK = threading.Lock()


def host_for(suite: ToolSuite) -> ToolHost:
    """The suite's tool host, started on first use (one per suite object and process)."""
    key = id(suite)
    with _HOSTS_LOCK:
        host = _HOSTS.get(key)
        if host is None:
            host = ToolHost(suite)
            _HOSTS[key] = host
            weakref.finalize(suite, _drop_host, key)
        return host


def _drop_host(key: int) -> None:
    host = _HOSTS.pop(key, None)
    if host is not None:
        host.close()


@atexit.register
def _close_hosts() -> None:
    for key in list(_HOSTS):
        _drop_host(key)


class ProcessRunner:
    """Runs one episode's calls in its lineages (one per phase) in the suite's tool host.

    A phase's lineage is forked on its first call, never at reset: an episode that makes no call in a phase
    costs no process and no round trip for it (its state is the task's initial state, copied here). Opening
    both lineages at reset cost about 0.17 s per episode with SmolLM2 on 2 cores, measured with
    ``toolmaster.bench.isolation``, even for episodes that called nothing.
    """

    def __init__(
        self,
        suite: ToolSuite,
        initial_state: dict[str, Any],
        isolation: Isolation,
    ) -> None:
        self.suite = suite
        self.initial_state = initial_state
        self.starts: dict[str, dict[str, Any]] = {}  # phase -> its lineage's start state when not the initial
        self.limits = {"memory_mb": isolation.memory_limit_mb, "cpu_s": isolation.cpu_limit_s}
        self.lines: dict[str, socket.socket | None] = {}  # phase -> lineage; None once lost

    def _line(self, phase: str) -> socket.socket | None:
        if phase not in self.lines:
            self.lines[phase] = host_for(self.suite).open_lineage(self.starts.get(phase, self.initial_state))
        return self.lines[phase]

    def _send(self, phase: str, request: dict[str, Any]) -> socket.socket | None:
        line = self._line(phase)
        if line is None:
            return None
        try:
            send_msg(line, request)
        except OSError:
            self._lose(phase)
            return None
        return line

    def _receive(self, phase: str, line: socket.socket | None, timeout: float) -> dict[str, Any] | None:
        if line is None:
            return None
        try:
            line.settimeout(timeout)
            answer = recv_msg(line)
        except OSError:
            answer = None
        if answer is None:
            self._lose(phase)
            return None
        message: dict[str, Any] = answer[0]
        return message

    def _lose(self, phase: str) -> None:
        line = self.lines.get(phase)
        if line is not None:
            line.close()
        self.lines[phase] = None

    def fork_sandbox(self) -> None:
        """Replace the trial lineage by a new one started from a copy of the execution state (a new user turn)."""
        state = self.state(Phase.EXECUTION)
        was_open = Phase.TRIAL in self.lines
        self._lose(Phase.TRIAL)
        del self.lines[Phase.TRIAL]
        self.starts[Phase.TRIAL] = state
        if was_open:
            self._line(Phase.TRIAL)

    def start(
        self, tool: Tool, arguments: dict[str, Any], phase: str, timeout: float, key: str | None = None
    ) -> Callable[[], Outcome]:
        """Start ``tool`` (filed under ``key`` in the suite, default its name) in the phase's lineage."""
        request: dict[str, Any] = {
            "op": "call",
            "tool": key or tool.name,
            "arguments": arguments,
            "phase": plain_phase(phase),
        }
        request.update(timeout=timeout, limits=self.limits)
        line = self._send(phase, request)

        def wait() -> Outcome:
            answer = self._receive(phase, line, timeout + GRACE_S)
            if answer is None:
                return Outcome(
                    False,
                    f"{tool.name}: the episode's tool process is gone, so its {phase} state is lost",
                    TOOL_CRASHED,
                )
            return Outcome(**answer)

        return wait

    def state(self, phase: str) -> dict[str, Any]:
        """A copy of the phase's current state (the task's initial state before its first call)."""
        line = self._send(phase, {"op": "state"}) if self.lines.get(phase) is not None else None
        if line is None:
            return copy.deepcopy(self.starts.get(phase, self.initial_state))
        answer = self._receive(phase, line, GRACE_S)
        if answer is None or answer.get("state") is None:
            raise ToolHostError(f"cannot read the {phase} state from the tool host")
        state: dict[str, Any] = answer["state"]
        return state

    def close(self) -> None:
        """Close the episode's lineages (their processes end with their sockets)."""
        for line in self.lines.values():
            if line is not None:
                line.close()
        self.lines.clear()

    def __del__(self) -> None:  # an episode dropped without close(): its processes end with its sockets
        self.close()


__all__ = ["ProcessRunner", "ToolHost", "ToolHostError", "host_for"]
