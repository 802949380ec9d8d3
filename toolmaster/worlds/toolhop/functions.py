"""A ToolHop function as a tool: its Python source is executed only when it is called, in the call's process.

Process isolation (``tools.isolation=process``, the tool host of ``toolmaster.envs.toolhost``) runs every call
in a fork of an episode process, so the source executes there and nowhere else: a function that calls
``os._exit``, hangs past ``tools.timeout_s`` (ToolHop's own evaluation uses 10 s), segfaults or allocates past
``tools.memory_limit_mb`` is killed and becomes an error observation, and whatever it does to module globals or
its working directory is discarded with its process. The trainer's process builds these callables (to show the
tools) but never runs them: a call made in the process that built the tool, which is what
``tools.isolation=thread`` would do, is refused with an error observation naming the setting.

As in ToolHop's evaluation, the whole source string is executed (an ``# Example usage`` tail included) and then
the function it defines is called with the model's arguments. Departures: each call starts from a fresh
namespace holding only that function's source (ToolHop's ``exec`` runs in the evaluator's own frame); anything
the code prints is discarded instead of reaching the terminal; a result longer than ``max_result_chars`` is cut
here, in the call's process, before it is sent back (the observation is clipped further by
``tools.max_observation_chars``). The process boundary contains what happens inside the process; like ToolHop's
``exec``, it is not a security sandbox for files outside the working directory or the network.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import os
from dataclasses import dataclass, field
from typing import Any

from toolmaster.envs.calls import render_result


class _Discard(io.TextIOBase):
    """A text stream that drops what is written (a function that prints megabytes costs no memory)."""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        return len(text)


class RefusedInTrainer(RuntimeError):
    """A ToolHop function was called in the process that built it (the trainer): not allowed."""


@dataclass(frozen=True)
class ToolHopFunction:
    """Runs ``name`` from ``sources`` when called (a picklable callable with no code object inside)."""

    name: str
    sources: tuple[str, ...]
    max_result_chars: int = 20_000
    built_in: int = field(default_factory=os.getpid)  # the process that built the tool must never run it

    def __call__(self, **arguments: Any) -> Any:
        if os.getpid() == self.built_in:
            raise RefusedInTrainer(
                f"ToolHop function {self.name} runs only in the tool host's call processes, never in the "
                "trainer's process: use tools.isolation=process"
            )
        namespace: dict[str, Any] = {"__name__": f"toolhop_{self.name}", "__builtins__": builtins}
        sink = _Discard()
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            for source in self.sources:
                exec(compile(source, f"<ToolHop function {self.name}>", "exec"), namespace)  # noqa: S102
            function = namespace.get(self.name)
            if not callable(function):
                raise NameError(f"the source of {self.name} does not define a function {self.name}")
            result = function(**arguments)
        text = render_result(result)
        if len(text) > self.max_result_chars:
            cut = len(text) - self.max_result_chars
            return f"{text[: self.max_result_chars]}...[result cut: {cut} more characters]"
        return result
