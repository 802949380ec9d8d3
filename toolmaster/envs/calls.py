"""One tool call run in the current process, and every way it can end turned into an ``Outcome``.

Shared by both isolation modes (``toolmaster.envs.thread_runner`` and the tool host,
``toolmaster.envs.toolhost``): the tool's keyword arguments are completed with the injected ``state`` and
``phase`` when the function declares them; an exception of any kind (``SystemExit`` from ``sys.exit`` and
``KeyboardInterrupt`` included) becomes a failed outcome; the return value is rendered to plain text here,
so a value whose ``repr``/``str`` raises is reported as ``unprintable_result`` instead of escaping. Failures
that end the process itself (``os._exit``, a segfault, a resource limit) are named by the tool host from
the process's exit status, with the kinds defined here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from toolmaster.envs.tool import Tool

# error kinds, used as counter keys and in CallRecord.error
PARSE_ERROR = "parse_error"
UNKNOWN_TOOL = "unknown_tool"
INVALID_ARGUMENTS = "invalid_arguments"
TOOL_EXCEPTION = "tool_exception"
TIMEOUT = "timeout"
OVER_BUDGET = "over_budget"
TOOL_EXITED = "tool_exited"  # sys.exit / SystemExit / os._exit inside the tool
TOOL_CRASHED = "tool_crashed"  # the call's process died from a signal (segfault, abort, killed)
UNPRINTABLE_RESULT = "unprintable_result"  # the return value's repr / str raised
RESOURCE_LIMIT = "resource_limit"  # the call ran past tools.memory_limit_mb or tools.cpu_limit_s

ISOLATION_MODES = ("process", "thread")


@dataclass(frozen=True)
class Isolation:
    """How a suite's tools run: ``process`` (tool host, a fork per episode and per call) or ``thread``.

    ``memory_limit_mb`` (RLIMIT_AS of the call's process) and ``cpu_limit_s`` (RLIMIT_CPU) apply in
    process mode only; the thread mode is the old in-process path, kept for debugging with breakpoints.
    """

    mode: Literal["process", "thread"] = "process"
    memory_limit_mb: int | None = None
    cpu_limit_s: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in ISOLATION_MODES:
            raise ValueError(
                f"tools.isolation must be one of {', '.join(ISOLATION_MODES)}, got {self.mode!r}"
            )
        if self.memory_limit_mb is not None and self.memory_limit_mb < 16:
            raise ValueError(f"tools.memory_limit_mb must be >= 16 or null, got {self.memory_limit_mb}")
        if self.cpu_limit_s is not None and self.cpu_limit_s <= 0:
            raise ValueError(f"tools.cpu_limit_s must be > 0 or null, got {self.cpu_limit_s}")


@dataclass
class Outcome:
    """What a call produced: the observation text (result, or error message without its prefix)."""

    ok: bool
    text: str
    error: str | None = None


def plain_phase(phase: Any) -> str:
    """``"trial"`` / ``"execution"`` as a plain string (also from a str-valued enum member)."""
    return str(getattr(phase, "value", phase))


def render_result(result: Any) -> str:
    """Tool return value -> observation text (strings verbatim, everything else as JSON). May raise."""
    if isinstance(result, str):
        return result
    try:
        return json.dumps(result, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(result)


def plain_text(text: str) -> str:
    """An exact ``str`` (no subclass) that encodes as UTF-8 (lone surrogates replaced)."""
    text = str.__str__(text)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def describe(exc: BaseException) -> str:
    """``Type: message`` for an exception whose ``str`` may itself raise."""
    try:
        detail = " ".join(str(exc).split())
    except BaseException:  # noqa: BLE001 - a hostile __str__
        detail = ""
    return f"{type(exc).__name__}: {detail or type(exc).__name__}"


def call_tool(
    tool: Tool, arguments: dict[str, Any], state: dict[str, Any], phase: str, memory_limited: bool = False
) -> Outcome:
    """Run ``tool`` with ``arguments`` (plus ``state``/``phase`` when declared); never raises."""
    kwargs = dict(arguments)
    if tool.wants_state:
        kwargs["state"] = state
    if tool.wants_phase:
        kwargs["phase"] = plain_phase(phase)
    try:
        result = tool.fn(**kwargs)
    except SystemExit as exc:
        return Outcome(False, f"{tool.name} called sys.exit({exc.code!r}) instead of returning", TOOL_EXITED)
    except MemoryError as exc:
        if memory_limited:
            return Outcome(
                False,
                f"{tool.name} ran out of memory (tools.memory_limit_mb): {describe(exc)}",
                RESOURCE_LIMIT,
            )
        return Outcome(False, f"{tool.name} failed: {describe(exc)}", TOOL_EXCEPTION)
    except BaseException as exc:  # noqa: BLE001 - any tool failure (KeyboardInterrupt too) is an observation
        return Outcome(False, f"{tool.name} failed: {describe(exc)}", TOOL_EXCEPTION)
    try:
        return Outcome(True, plain_text(render_result(result)))
    except BaseException as exc:  # noqa: BLE001 - a return value whose repr/str raises
        kind = type(result).__name__
        return Outcome(
            False,
            f"{tool.name} returned a {kind} that cannot be printed: {describe(exc)}",
            UNPRINTABLE_RESULT,
        )
