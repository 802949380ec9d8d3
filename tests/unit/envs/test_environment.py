"""ToolEnv: every error case becomes an informative observation plus counters; trials stay in the sandbox.

Every environment test runs under both isolation modes (``process``: calls in forked processes of a tool
host; ``thread``: the in-process path). Tools count their runs in a file, which both modes can see.

Also the derived views of Trajectory (``self_corrected``, ``valid_format``) and answer matching.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from toolmaster.envs.calls import Isolation
from toolmaster.envs.environment import (
    EXECUTION,
    INVALID_ARGUMENTS,
    OVER_BUDGET,
    PARSE_ERROR,
    TIMEOUT,
    TOOL_EXCEPTION,
    TRIAL,
    UNKNOWN_TOOL,
    CallRecord,
    ToolEnv,
    render_result,
)
from toolmaster.envs.task import Task, answers_match, normalize_answer
from toolmaster.envs.tool import Tool, ToolSuite
from toolmaster.trajectory import Trajectory

SLEEP_S = 30.0  # far above any call overhead on a loaded machine: only an abandoned call waits it out
TIMEOUT_S = 0.2


def _obj(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required or list(properties)}


class Tools:
    """The suite under test; records how often each function really ran (in a file, seen from any process)."""

    def __init__(self, mode: str, marks: Path) -> None:
        self.mode = mode
        self.marks = marks
        self.release = threading.Event()  # set at teardown so abandoned sleepers finish

    def _mark(self, name: str) -> None:
        with open(self.marks, "a", encoding="utf-8") as handle:
            handle.write(name + "\n")

    @property
    def ran(self) -> dict[str, int]:
        return dict(Counter(self.marks.read_text().split())) if self.marks.exists() else {}

    def suite(self) -> ToolSuite:
        def add(a: int, b: int) -> int:
            self._mark("add")
            return a + b

        def scale(x: float, mode: str = "fast") -> float:
            self._mark("scale")
            return x * (2 if mode == "fast" else 1)

        def boom() -> str:
            raise RuntimeError("disk on fire")

        def silent_boom() -> str:
            raise RuntimeError()

        def sleepy() -> str:
            self.release.wait(SLEEP_S)
            return "woke up"

        def big() -> str:
            return "x" * 5000

        def push(item: str, state: dict[str, Any]) -> int:
            self._mark("push")
            state.setdefault("items", []).append(item)
            return len(state["items"])

        def push_then_fail(item: str, state: dict[str, Any]) -> int:
            state.setdefault("items", []).append(item)
            state["dirty"] = True
            raise ValueError(f"cannot store {item!r}")

        def push_then_hang(item: str, state: dict[str, Any]) -> int:
            state.setdefault("items", []).append(item)
            state["dirty"] = True
            self.release.wait(SLEEP_S)
            return len(state["items"])

        def count(state: dict[str, Any]) -> int:
            return len(state.get("items", []))

        item = _obj({"item": {"type": "string"}})
        suite = ToolSuite.of(
            [
                Tool(
                    "add",
                    "Add two integers.",
                    _obj({"a": {"type": "integer"}, "b": {"type": "integer"}}),
                    add,
                ),
                Tool(
                    "scale",
                    "Scale a number.",
                    _obj(
                        {"x": {"type": "number"}, "mode": {"type": "string", "enum": ["fast", "slow"]}}, ["x"]
                    ),
                    scale,
                ),
                Tool("boom", "Always fails.", _obj({}), boom),
                Tool("silent_boom", "Fails without a message.", _obj({}), silent_boom),
                Tool("sleepy", "Hangs.", _obj({}), sleepy, timeout_s=TIMEOUT_S),
                Tool("big", "Huge output.", _obj({}), big),
                Tool("push", "Store an item.", item, push),
                Tool("push_then_fail", "Store, then fail.", item, push_then_fail),
                Tool("push_then_hang", "Store, then hang.", item, push_then_hang, timeout_s=TIMEOUT_S),
                Tool("count", "Count stored items.", _obj({}), count),
                Tool("hidden", "Not part of the task.", _obj({}), lambda: "should not run"),
            ]
        )
        suite.isolation = Isolation(self.mode)
        return suite


TASK_TOOLS = [
    "add",
    "scale",
    "boom",
    "silent_boom",
    "sleepy",
    "big",
    "push",
    "push_then_fail",
    "push_then_hang",
    "count",
]


@pytest.fixture(params=["process", "thread"])
def tools(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Tools]:
    t = Tools(request.param, tmp_path / "ran.txt")
    yield t
    t.release.set()


def make_env(
    tools: Tools,
    trial_budget: int = 2,
    initial_state: dict[str, Any] | None = None,
    max_observation_chars: int = 1000,
) -> tuple[ToolEnv, Task]:
    env = ToolEnv(
        tools.suite(), trial_budget=trial_budget, timeout_s=5.0, max_observation_chars=max_observation_chars
    )
    task = Task("t1", "q", "a", TASK_TOOLS, initial_state=initial_state or {"items": ["seed"]})
    env.reset(task)
    return env, task


def assert_error(env: ToolEnv, record: CallRecord, phase: str, kind: str, *parts: str) -> None:
    assert not record.ok
    assert record.error == kind
    assert record.phase == phase
    assert record.observation.startswith(f"Error ({kind}): ")
    assert "\n" not in record.observation
    for part in parts:
        assert part in record.observation, f"{part!r} not in {record.observation!r}"
    assert env.records[-1] is record
    assert env.counters[f"{phase}_calls"] >= 1
    assert env.counters[f"{phase}_errors"] >= 1
    assert env.counters[f"error/{kind}"] >= 1


# ------------------------------------------------------------------------------------------- errors
ARGUMENT_ERRORS = [
    ("missing-argument", "add", {"a": 1}, ["add", "missing required argument", "'b'"]),
    ("missing-all", "add", {}, ["add", "'a'", "'b'"]),
    ("extra-argument", "add", {"a": 1, "b": 2, "c": 3}, ["add", "unknown argument", "'c'", "accepted: a, b"]),
    ("wrong-type-string", "add", {"a": "1", "b": 2}, ["add", "'a'", "integer", "'1'"]),
    ("bool-for-integer", "add", {"a": True, "b": 2}, ["add", "'a'", "integer", "true"]),
    ("float-for-integer", "add", {"a": 1.5, "b": 2}, ["add", "'a'", "integer", "1.5"]),
    ("bool-for-number", "scale", {"x": False}, ["scale", "'x'", "number", "false"]),
    (
        "enum-violation",
        "scale",
        {"x": 2, "mode": "medium"},
        ["scale", "'mode'", "'fast'", "'slow'", "'medium'"],
    ),
    ("enum-wrong-type", "scale", {"x": 2, "mode": 1}, ["scale", "'mode'", "string"]),
    ("non-dict-list", "add", [1, 2], ["add", "JSON object", "list"]),
    ("non-dict-string", "add", '{"a": 1, "b": 2}', ["add", "JSON object", "str"]),
    ("non-dict-none", "add", None, ["add", "JSON object", "NoneType"]),
]


@pytest.mark.parametrize("phase", [TRIAL, EXECUTION])
@pytest.mark.parametrize(
    ("name", "arguments", "parts"), [c[1:] for c in ARGUMENT_ERRORS], ids=[c[0] for c in ARGUMENT_ERRORS]
)
def test_invalid_arguments(tools: Tools, phase: str, name: str, arguments: Any, parts: list[str]) -> None:
    env, _ = make_env(tools)
    record = env.execute(name, arguments, phase)
    assert_error(env, record, phase, INVALID_ARGUMENTS, *parts)
    assert tools.ran == {}, "a call with invalid arguments must not run"
    assert env.counters == {f"{phase}_calls": 1, f"{phase}_errors": 1, f"error/{INVALID_ARGUMENTS}": 1}


def test_all_argument_problems_named_at_once(tools: Tools) -> None:
    env, _ = make_env(tools)
    record = env.execute("add", {"a": "x", "c": 1}, EXECUTION)
    assert_error(env, record, EXECUTION, INVALID_ARGUMENTS, "'b'", "'c'", "'a' must be of type integer")


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("no_such_tool", ["'no_such_tool'", "available tools:", "add", "push"]),
        ("hidden", ["'hidden'", "available tools:"]),  # in the suite but not offered by the task
        (None, ["None", "available tools:"]),
        (7, ["7", "available tools:"]),
    ],
)
def test_unknown_tool(tools: Tools, name: Any, parts: list[str]) -> None:
    env, _ = make_env(tools)
    record = env.execute(name, {}, EXECUTION)
    assert_error(env, record, EXECUTION, UNKNOWN_TOOL, *parts)
    assert "hidden" not in record.observation.split("available tools:")[1]
    assert env.counters == {"execution_calls": 1, "execution_errors": 1, f"error/{UNKNOWN_TOOL}": 1}


def test_exception_inside_tool(tools: Tools) -> None:
    env, _ = make_env(tools)
    record = env.execute("boom", {}, EXECUTION)
    assert_error(env, record, EXECUTION, TOOL_EXCEPTION, "boom failed", "RuntimeError", "disk on fire")
    record = env.execute("silent_boom", {}, TRIAL)
    assert_error(env, record, TRIAL, TOOL_EXCEPTION, "silent_boom failed: RuntimeError: RuntimeError")
    assert env.counters[f"error/{TOOL_EXCEPTION}"] == 2


def test_timeout_abandons_the_call_without_stalling(tools: Tools) -> None:
    env, _ = make_env(tools)
    start = time.perf_counter()
    record = env.execute("sleepy", {}, EXECUTION)
    elapsed = time.perf_counter() - start
    assert_error(env, record, EXECUTION, TIMEOUT, "sleepy", "0.2 s", "abandoned")
    assert elapsed < SLEEP_S / 3
    assert TIMEOUT_S * 0.9 <= record.duration_s < SLEEP_S / 3
    # the rest of the batch is not stalled: other episodes, and this one, go on at once
    start = time.perf_counter()
    others = [make_env(tools)[0] for _ in range(4)]
    for other in others:
        assert not other.execute("sleepy", {}, TRIAL).ok
    assert env.execute("add", {"a": 1, "b": 2}, EXECUTION).observation == "3"
    assert time.perf_counter() - start < SLEEP_S / 3  # not stalled by the sleepers (each would take SLEEP_S)
    assert env.counters == {"execution_calls": 2, "execution_errors": 1, f"error/{TIMEOUT}": 1}


def test_environment_default_timeout_applies(tools: Tools) -> None:
    suite = ToolSuite.of([Tool("hang", "Hangs.", _obj({}), lambda: tools.release.wait(SLEEP_S))])
    env = ToolEnv(suite, timeout_s=TIMEOUT_S, isolation=Isolation(tools.mode))
    env.reset(Task("t", "q", "a", ["hang"]))
    start = time.perf_counter()
    record = env.execute("hang", {}, EXECUTION)
    assert time.perf_counter() - start < SLEEP_S / 3
    assert_error(env, record, EXECUTION, TIMEOUT, "hang", "0.2 s")


def test_oversized_output_is_truncated_with_marker(tools: Tools) -> None:
    env, _ = make_env(tools, max_observation_chars=100)
    record = env.execute("big", {}, EXECUTION)
    assert record.ok and record.output_truncated
    assert record.observation == "x" * 100 + "...[output truncated: 4900 more characters]"
    assert env.counters == {"execution_calls": 1, "outputs_truncated": 1}
    small = env.execute("add", {"a": 1, "b": 2}, EXECUTION)
    assert small.ok and not small.output_truncated


# -------------------------------------------------------------------------------------- trial budget
def test_trial_over_budget_is_refused_and_not_run(tools: Tools) -> None:
    env, _ = make_env(tools, trial_budget=2)
    assert env.execute("add", {"a": 1, "b": 1}, TRIAL).ok
    assert env.execute("add", {"a": 2, "b": 2}, TRIAL).ok
    assert env.trials_used == 2
    record = env.execute("add", {"a": 3, "b": 3}, TRIAL)
    assert_error(env, record, TRIAL, OVER_BUDGET, "all 2 trial calls are used", "execution")
    assert tools.ran["add"] == 2
    assert env.counters == {"trial_calls": 3, "trial_errors": 1, f"error/{OVER_BUDGET}": 1}
    assert env.execute("add", {"a": 3, "b": 3}, EXECUTION).observation == "6"  # execution is unaffected


def test_failed_trials_use_the_budget(tools: Tools) -> None:
    env, _ = make_env(tools, trial_budget=1)
    assert not env.execute("add", {"a": 1}, TRIAL).ok
    assert env.execute("add", {"a": 1, "b": 1}, TRIAL).error == OVER_BUDGET


def test_trial_budget_zero_refuses_trials(tools: Tools) -> None:
    env, _ = make_env(tools, trial_budget=0)
    record = env.execute("push", {"item": "a"}, TRIAL)
    assert_error(env, record, TRIAL, OVER_BUDGET, "trials are disabled", "<call>")
    assert tools.ran == {}
    assert env.state == {"items": ["seed"]} and env.sandbox == {"items": ["seed"]}
    assert env.execute("push", {"item": "a"}, EXECUTION).observation == "2"


def test_negative_budget_and_unknown_phase_are_programming_errors(tools: Tools) -> None:
    with pytest.raises(ValueError, match="trial_budget"):
        ToolEnv(tools.suite(), trial_budget=-1)
    env, _ = make_env(tools)
    with pytest.raises(ValueError, match="phase"):
        env.execute("add", {"a": 1, "b": 1}, "rehearsal")


# --------------------------------------------------------------------------------------------- state
def test_trials_build_on_each_other_in_the_sandbox_only(tools: Tools) -> None:
    env, task = make_env(tools, trial_budget=3)
    assert env.execute("push", {"item": "t1"}, TRIAL).observation == "2"
    assert env.execute("push", {"item": "t2"}, TRIAL).observation == "3"
    assert env.execute("count", {}, TRIAL).observation == "3"
    assert env.sandbox == {"items": ["seed", "t1", "t2"]}
    assert env.state == {"items": ["seed"]}
    assert env.execute("count", {}, EXECUTION).observation == "1"
    assert task.initial_state == {"items": ["seed"]}


def test_a_phase_costs_a_process_only_once_it_is_called(tmp_path: Path) -> None:
    """Process isolation forks a phase's lineage on its first call: an episode that calls nothing (or only
    trials) forks nothing for the other phase, and reading its state needs no round trip."""
    tools = Tools("process", tmp_path / "ran.txt")
    env, _ = make_env(tools, trial_budget=2)
    assert env.runner.lines == {}
    assert env.state == {"items": ["seed"]} and env.sandbox == {"items": ["seed"]}
    assert env.runner.lines == {}
    assert env.execute("push", {"item": "t1"}, TRIAL).ok
    assert list(env.runner.lines) == [TRIAL]
    assert env.sandbox == {"items": ["seed", "t1"]} and env.state == {"items": ["seed"]}
    assert env.execute("count", {}, EXECUTION).observation == "1"
    assert sorted(env.runner.lines) == sorted([TRIAL, EXECUTION])
    env.close()


def test_execution_side_effects_persist(tools: Tools) -> None:
    env, task = make_env(tools)
    assert env.execute("push", {"item": "e1"}, EXECUTION).observation == "2"
    assert env.execute("push", {"item": "e2"}, EXECUTION).observation == "3"
    assert env.state == {"items": ["seed", "e1", "e2"]}
    assert env.sandbox == {"items": ["seed"]}
    assert task.initial_state == {"items": ["seed"]}, "the task's initial state must never be mutated"
    env.reset(task)
    assert env.state == {"items": ["seed"]} and env.records == [] and not env.counters


@pytest.mark.parametrize("phase", [TRIAL, EXECUTION])
def test_failing_mutation_leaves_state_unchanged(tools: Tools, phase: str) -> None:
    env, _ = make_env(tools)
    record = env.execute("push_then_fail", {"item": "bad"}, phase)
    assert_error(env, record, phase, TOOL_EXCEPTION, "push_then_fail", "ValueError", "cannot store 'bad'")
    assert env.state == {"items": ["seed"]} and env.sandbox == {"items": ["seed"]}


@pytest.mark.parametrize("phase", [TRIAL, EXECUTION])
def test_timed_out_mutation_leaves_state_unchanged(tools: Tools, phase: str) -> None:
    env, _ = make_env(tools)
    record = env.execute("push_then_hang", {"item": "slow"}, phase)
    assert_error(env, record, phase, TIMEOUT, "push_then_hang", "abandoned")
    tools.release.set()  # let the abandoned thread finish on its own copy
    time.sleep(0.05)
    assert env.state == {"items": ["seed"]} and env.sandbox == {"items": ["seed"]}


def test_invalid_records_a_parse_error(tools: Tools) -> None:
    env, _ = make_env(tools)
    raw = '{"name": "add", "arguments": {"a": 1'
    record = env.invalid(TRIAL, raw, "invalid JSON in <trial>: Expecting ',' delimiter at character 32")
    assert_error(env, record, TRIAL, PARSE_ERROR, "invalid JSON in <trial>", "character 32")
    assert record.name is None and record.arguments == raw
    assert env.counters == {"trial_calls": 1, "trial_errors": 1, f"error/{PARSE_ERROR}": 1}
    assert record.to_dict()["error"] == PARSE_ERROR


def test_successful_call_record(tools: Tools) -> None:
    env, _ = make_env(tools)
    record = env.execute("scale", {"x": 1.5, "mode": "fast"}, EXECUTION)
    assert (record.ok, record.error, record.observation, record.name) == (True, None, "3.0", "scale")
    assert env.counters == {"execution_calls": 1}


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("plain text", "plain text"),
        (3, "3"),
        (None, "null"),
        ({"city": "Zürich", "t": [1, 2.5]}, '{"city": "Zürich", "t": [1, 2.5]}'),
        ({"when": object}, None),
    ],
)
def test_render_result(value: Any, text: str | None) -> None:
    rendered = render_result(value)
    if text is None:
        assert "when" in rendered  # not JSON-serialisable parts fall back to str()
    else:
        assert rendered == text


# ---------------------------------------------------------------------------------------- trajectory
def _call(name: str | None, ok: bool, phase: str = EXECUTION) -> dict[str, Any]:
    return {"phase": phase, "name": name, "ok": ok}


@pytest.mark.parametrize(
    ("calls", "expected"),
    [
        ([], False),
        ([_call("a", True)], False),
        ([_call("a", False)], False),
        ([_call("a", False), _call("a", True)], True),
        ([_call("a", False, TRIAL), _call("a", True, EXECUTION)], True),
        ([_call("a", True), _call("a", False)], False),
        ([_call("a", False), _call("b", True)], False),
        ([_call("a", False), _call("a", False)], False),
        ([_call(None, False), _call("b", True)], True),  # a parse error fixed by any successful call
        ([_call("b", True), _call(None, False)], False),
        ([_call("a", False), _call("b", True), _call("a", True)], True),
    ],
    ids=lambda v: None if isinstance(v, list) else str(v),
)
def test_self_corrected(calls: list[dict[str, Any]], expected: bool) -> None:
    assert Trajectory("t", "test", [], calls=calls).self_corrected is expected


@pytest.mark.parametrize(
    ("answer", "format_errors", "expected"),
    [
        ("42", 0, True),
        ("42", 1, False),
        (None, 0, False),
        (None, 2, False),
    ],
)
def test_valid_format(answer: str | None, format_errors: int, expected: bool) -> None:
    traj = Trajectory("t", "test", [], answer=answer, format_errors=format_errors)
    assert traj.valid_format is expected


def test_trajectory_counts_and_round_trip() -> None:
    calls = [_call("a", False, TRIAL), _call("a", True, TRIAL), _call("a", True), _call("b", False)]
    traj = Trajectory("t", "test", [{"role": "user", "content": "q"}], calls=calls, loss_mask=[0, 1, 1, 0])
    assert (traj.num_trial_calls, traj.num_execution_calls, traj.num_failed_calls) == (2, 2, 2)
    assert traj.num_generated_tokens == 2
    assert Trajectory.from_dict(traj.to_dict()) == traj
    with pytest.raises(ValueError, match="unknown trajectory field"):
        Trajectory.from_dict({**traj.to_dict(), "bogus": 1})


# ------------------------------------------------------------------------------------------- answers
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Oslo", "oslo"),
        ("  Hello   World. ", "hello world"),
        ('"Paris"', "paris"),
        ("'Paris.'", "paris"),
        ("`42`", "42"),
        ("3.", "3."),  # a number keeps its point
        ("12.50", "12.50"),
        ("line\none", "line one"),
        ("", ""),
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


@pytest.mark.parametrize(
    ("predicted", "expected", "match"),
    [
        ("12.50", "12.5", True),
        ("12.5", "12.50", True),
        ("12.5", "12.6", False),
        ("3.14159", "3.1416", True),  # within the relative tolerance
        ("3.14", "3.1416", False),
        ("0.0000001", "0", True),  # absolute tolerance near zero
        ("100", "101", False),
        ("1e3", "1000", True),
        ("-.5", "-0.5", True),
        ("3.", "3", True),
        ("1,234", "1234", True),
        ("1,234.5", "1234.50", True),
        ("OSLO", "oslo", True),
        ("Oslo.", "Oslo", True),
        ('"Oslo"', "Oslo", True),
        ("'oslo'", '"Oslo."', True),
        ("  New   York ", "new york", True),
        ("Bergen", "Oslo", False),
        ("a, b", "a b", False),  # commas matter outside numbers
        ("12 km", "12", False),
        (None, "12", False),
        ("", "12", False),
    ],
)
def test_answers_match(predicted: str | None, expected: str, match: bool) -> None:
    assert answers_match(predicted, expected) is match


def test_task_check_and_round_trip() -> None:
    task = Task("t", "q", "12.5", ["add"], initial_state={"x": 1})
    assert task.check("12.50") and not task.check(None)
    assert Task.from_dict(task.to_dict()) == task
    with pytest.raises(ValueError, match="unknown task field"):
        Task.from_dict({**task.to_dict(), "bogus": 1})
