"""The tool host: a process that holds a world's tools and runs every call in a fork of an episode process.

Process tree (process isolation, ``tools.isolation=process``)::

    trainer / eval process ──socket──> tool host  (imports the world's modules, not torch; never runs a tool)
                                        ├─ lineage: episode 1, execution   (fork of the host: fresh globals)
                                        │    └─ call process            (fork per call)
                                        ├─ lineage: episode 1, trials
                                        └─ ...

The host is started by ``toolmaster.envs.process_runner`` with ``python -m toolmaster.envs.toolhost FD``
and rebuilds the world from the suite's ``origin`` (a Hydra ``_target_`` node: same spec and seed, same
world), because tools are closures and cannot be pickled. Suites built in code without an origin are
hosted by a fork of the calling process instead.

Each episode phase (execution; trials) is a *lineage*: a fork of the host with the task's initial state, in
its own temporary working directory, where each of its calls starts. Every call runs in a fork of the lineage (its own process group, with
the optional RLIMIT_AS / RLIMIT_CPU); when the call returns a value, that child *becomes* the lineage (its
memory, module globals, cwd, environment and files are the new episode state) and the parent exits; when
it raises, exits, crashes, segfaults, returns something unprintable or overruns its timeout, the child is
killed, the working directory is restored from a snapshot and the lineage goes on from its previous state.
Trials therefore build on each other in the trial lineage and never reach the execution lineage, and no
episode sees another's effects. What a fork cannot undo: effects outside the process (a database, a
network service, files outside the working directory); tools receive ``phase`` to dry-run those.

Wire format: 8-byte big-endian length + pickle of plain data (dicts, strings, numbers).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import resource
import select
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time
from typing import Any

from toolmaster.envs.calls import (
    RESOURCE_LIMIT,
    TIMEOUT,
    TOOL_CRASHED,
    TOOL_EXITED,
    Outcome,
    call_tool,
)
from toolmaster.envs.tool import ToolSuite

_HEADER = struct.Struct(">Q")


# ------------------------------------------------------------------------------------------ wire
def send_msg(sock: socket.socket, data: Any, fds: list[int] | None = None) -> None:
    """Send one pickled message (length-prefixed), with ``fds`` passed along when given."""
    payload = pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)
    header = _HEADER.pack(len(payload))
    if fds:
        socket.send_fds(sock, [header], fds)
        sock.sendall(payload)
    else:
        sock.sendall(header + payload)


def _recv_exact(sock: socket.socket, n: int, first: bytes = b"") -> bytes | None:
    chunks = [first]
    have = len(first)
    while have < n:
        chunk = sock.recv(min(n - have, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        have += len(chunk)
    return b"".join(chunks)


def recv_msg(sock: socket.socket, with_fds: bool = False) -> tuple[Any, list[int]] | None:
    """One message (and the file descriptors sent with it); None at end of stream."""
    fds: list[int] = []
    if with_fds:
        first, fds, _, _ = socket.recv_fds(sock, _HEADER.size, 4)
        if not first:
            return None
        header = _recv_exact(sock, _HEADER.size, first)
    else:
        header = _recv_exact(sock, _HEADER.size)
    if header is None:
        return None
    payload = _recv_exact(sock, _HEADER.unpack(header)[0])
    if payload is None:
        return None
    return pickle.loads(payload), fds


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_message(fd: int, deadline: float) -> tuple[bytes | None, bool]:
    """One framed message from a pipe by ``deadline``: (payload, False), or (None, ended) where ``ended``
    says the writer is gone (end of stream) rather than still running at the deadline."""
    data = b""
    while True:
        if len(data) >= _HEADER.size and len(data) >= _HEADER.size + _HEADER.unpack(data[: _HEADER.size])[0]:
            return data[_HEADER.size :], False
        left = deadline - time.monotonic()
        if left <= 0:
            return None, False
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return None, True
        data += chunk


# ------------------------------------------------------------------------------------------ lineage
def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _snapshot(workdir: str) -> str | None:
    """A copy of the working directory to restore after a failed call (None when it is empty)."""
    if not os.listdir(workdir):
        return None
    backup = tempfile.mkdtemp(prefix="snapshot-", dir=os.path.dirname(workdir))
    shutil.copytree(workdir, backup, symlinks=True, dirs_exist_ok=True)
    return backup


def _restore(workdir: str, backup: str | None) -> None:
    for entry in os.listdir(workdir):
        path = os.path.join(workdir, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(path)
    if backup is not None:
        shutil.copytree(backup, workdir, symlinks=True, dirs_exist_ok=True)
        shutil.rmtree(backup, ignore_errors=True)


class Lineage:
    """One episode phase's process: holds ``state`` and a working directory, runs each call in a fork."""

    def __init__(self, conn: socket.socket, suite: ToolSuite, state: dict[str, Any], workdir: str):
        self.conn = conn
        self.suite = suite
        self.state = state
        self.workdir = workdir

    def serve(self) -> None:
        """Answer requests until the trainer closes the episode (or goes away), then remove the directory."""
        try:
            os.chdir(self.workdir)
            while True:
                message = recv_msg(self.conn)
                if message is None:
                    break
                request = message[0]
                if request["op"] == "state":
                    try:
                        pickle.dumps(self.state)
                        send_msg(self.conn, {"state": self.state})
                    except Exception as exc:  # noqa: BLE001 - state holding unpicklable objects
                        send_msg(self.conn, {"state": None, "error": repr(exc)})
                elif request["op"] == "call":
                    self._call(request)
        except OSError:  # the trainer closed the episode with a request or an answer in flight
            pass
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _call(self, request: dict[str, Any]) -> None:
        """Fork, run the call in the child; commit (the child becomes this lineage) or discard it."""
        tool = self.suite.tools[request["tool"]]
        timeout = float(request["timeout"])
        limits = request.get("limits") or {}
        backup = _snapshot(self.workdir)
        result_r, result_w = os.pipe()
        verdict_r, verdict_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # ------------------------------------------------------------- the call process
            os.close(result_r)
            os.close(verdict_w)
            try:
                os.setpgid(0, 0)
                os.chdir(self.workdir)  # every call starts in the episode's working directory
                restore = _apply_limits(limits)
                called = call_tool(
                    tool, request["arguments"], self.state, request["phase"], bool(limits.get("memory_mb"))
                )
                payload = pickle.dumps(called.__dict__)
                _write_all(result_w, _HEADER.pack(len(payload)) + payload)
                os.close(result_w)
                if not called.ok or os.read(verdict_r, 1) != b"c":
                    os._exit(0)
                os.close(verdict_r)
                _lift_limits(restore)
            except BaseException:  # noqa: BLE001 - anything here ends the call process quietly
                os._exit(70)
            return  # committed: this process is the lineage now and goes back to serve()
        # ---------------------------------------------------------------------------- the lineage
        os.close(result_w)
        os.close(verdict_r)
        data, ended = _read_message(result_r, time.monotonic() + timeout)
        os.close(result_r)
        outcome: Outcome | None = None
        if data is not None:
            try:
                outcome = Outcome(**pickle.loads(data))
            except Exception:  # noqa: BLE001 - a torn message: treated as a crash below
                ended = True
        if outcome is not None and outcome.ok:
            send_msg(self.conn, outcome.__dict__)
            with contextlib.suppress(OSError):  # the child carries on as the lineage
                os.write(verdict_w, b"c")
            if backup is not None:
                shutil.rmtree(backup, ignore_errors=True)
            os._exit(0)
        # failed: kill the call's process group, keep this process's state, restore the files
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        os.close(verdict_w)
        _, status = os.waitpid(pid, 0)
        if outcome is None:
            outcome = _death(tool.name, status, timeout, ended, limits)
        _restore(self.workdir, backup)
        send_msg(self.conn, outcome.__dict__)


def _death(name: str, status: int, timeout: float, ended: bool, limits: dict[str, Any]) -> Outcome:
    """Name how a call process ended without an answer."""
    if not ended:
        return Outcome(
            False,
            f"{name} did not answer within {timeout:g} s and was abandoned (its process was killed)",
            TIMEOUT,
        )
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGXCPU and limits.get("cpu_s"):
            return Outcome(
                False,
                f"{name} used more than {limits.get('cpu_s'):g} s of CPU time (tools.cpu_limit_s)",
                RESOURCE_LIMIT,
            )
        return Outcome(False, f"{name} crashed: its process was killed by {_signal_name(sig)}", TOOL_CRASHED)
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1
    return Outcome(
        False, f"{name} ended its process with exit code {code} (os._exit or a C-level exit)", TOOL_EXITED
    )


def _apply_limits(limits: dict[str, Any]) -> list[tuple[int, tuple[int, int]]]:
    """Lower the soft limits of this call process; returns what to restore if it becomes the lineage."""
    restore = []
    resource.setrlimit(
        resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1])
    )  # no core files
    memory_mb = limits.get("memory_mb")
    if memory_mb:
        old = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (int(memory_mb) << 20, old[1]))
        restore.append((resource.RLIMIT_AS, old))
    cpu_s = limits.get("cpu_s")
    if cpu_s:
        old = resource.getrlimit(resource.RLIMIT_CPU)
        used = resource.getrusage(resource.RUSAGE_SELF)
        seconds = int(used.ru_utime + used.ru_stime + max(1.0, float(cpu_s)) + 0.999)
        resource.setrlimit(resource.RLIMIT_CPU, (seconds, old[1]))
        restore.append((resource.RLIMIT_CPU, old))
    return restore


def _lift_limits(restore: list[tuple[int, tuple[int, int]]]) -> None:
    for which, old in restore:
        resource.setrlimit(which, old)


# ------------------------------------------------------------------------------------------- host
def _become_subreaper() -> None:
    """Orphaned lineages (their parent committed a call and exited) are reparented here and reaped."""
    with contextlib.suppress(OSError, AttributeError):  # PR_SET_CHILD_SUBREAPER = 36
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)


def serve_host(control: socket.socket, suite: ToolSuite) -> None:
    """Fork a lineage for every request on ``control`` until it closes. Never returns in a lineage."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # lineages are reaped automatically
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the trainer's to handle
    _become_subreaper()
    root = tempfile.mkdtemp(prefix="toolmaster-tools-")
    try:
        while True:
            message = recv_msg(control, with_fds=True)
            if message is None:
                break
            request, fds = message
            if not fds:
                continue
            workdir = tempfile.mkdtemp(prefix="episode-", dir=root)  # before the fork: no race with cleanup
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    control.close()
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    conn = socket.socket(fileno=fds[0])
                    Lineage(conn, suite, request["state"], workdir).serve()
                except BaseException:  # noqa: BLE001 - a lineage never returns into the host's caller
                    code = 1
                os._exit(code)
            for fd in fds:
                os.close(fd)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def build_suite(origin: dict[str, Any]) -> ToolSuite:
    """Rebuild a world's suite from its ``origin`` node (how the host gets the trainer's tools)."""
    from hydra.utils import instantiate

    built = instantiate(origin, _convert_="all")
    suite: ToolSuite = getattr(built, "suite", built)  # a World's suite, or a suite
    return suite


def main(argv: list[str] | None = None) -> None:
    """The tool host process: serve lineage requests on the control socket given in ``argv``."""
    # Ctrl-C reaches the whole process group: it is the trainer's to handle, and the host ends with it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    args = sys.argv[1:] if argv is None else argv
    control = socket.socket(fileno=int(args[0]))
    try:
        message = recv_msg(control)
        if message is None:
            return
        try:
            suite = build_suite(message[0]["origin"])
        except BaseException as exc:  # noqa: BLE001 - reported to the trainer as one line
            from toolmaster.envs.calls import describe

            send_msg(control, {"error": describe(exc)})
            return
        send_msg(control, {"tools": sorted(suite.tools), "torch": "torch" in sys.modules})
    except (BrokenPipeError, ConnectionError):
        return  # the trainer went away while the host was starting (interrupted or finished): nothing to serve
    serve_host(control, suite)


if __name__ == "__main__":
    main()
