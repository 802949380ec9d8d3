"""Scores an episode with BFCL's own ``multi_turn_checker`` (state and response checks after every user turn).

The episode's execution calls become BFCL's decoded model result: per user turn, one step per call, each a
Python call string (``name(k=v, ...)``, values written with ``repr``). Trial calls are left out (they acted on
the sandbox), and so are calls the environment refused before running them (unknown tool, bad arguments,
over budget), which BFCL would run only to get an error back. The checker then replays the calls and the
ground truth on fresh class instances of its own and compares them after each turn, as the leaderboard does.

An episode that did not reach every user turn, or ended truncated, fails, as a force-terminated BFCL entry
does. The checker caches class instances in its module globals by model name and entry id; every check here
uses a model name of its own and deletes its instances afterwards, so checks never see each other's state.
The irrelevance check BFCL keeps beside the checker (no calls in turns whose ground truth is empty) is not
applied, as in the leaderboard's multi-turn runner.
"""

from __future__ import annotations

import itertools
import os
import re
import threading
from typing import Any

from toolmaster.envs.environment import EXECUTION, TIMEOUT, TOOL_EXCEPTION
from toolmaster.envs.task import Task
from toolmaster.worlds.bfcl.package import import_module

CHECKER = "bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker"
UTILS = "bfcl_eval.eval_checker.multi_turn_eval.multi_turn_utils"
RAN = (None, TOOL_EXCEPTION, TIMEOUT)  # errors of calls that reached the tool
_counter = itertools.count()
_lock = threading.Lock()


def call_string(name: str, arguments: dict[str, Any]) -> str:
    return f"{name}({', '.join(f'{key}={value!r}' for key, value in arguments.items())})"


def decoded_calls(trajectory: Any, num_turns: int) -> list[list[list[str]]]:
    """Execution calls per user turn, one single-call step each (BFCL's decoded result layout)."""
    turns: list[list[list[str]]] = [[] for _ in range(num_turns)]
    for call in trajectory.calls:
        if call["phase"] != EXECUTION or call.get("error") not in RAN or not isinstance(call["name"], str):
            continue
        if not isinstance(call["arguments"], dict):
            continue
        turn = int(call.get("user_turn", 0))
        if 0 <= turn < num_turns:
            turns[turn].append([call_string(call["name"], call["arguments"])])
    return turns


def reached_turns(trajectory: Any) -> int:
    return sum(1 for m in trajectory.messages if m["role"] == "user")


def check(task: Task, decoded: list[list[list[str]]]) -> dict[str, Any]:
    """BFCL's checker result (``{"valid": bool, ...}``) for ``decoded`` against the task's ground truth."""
    checker = import_module(CHECKER)
    utils = import_module(UTILS)
    with _lock:
        model_name = f"toolmaster_{os.getpid()}_{next(_counter)}_check"  # no name is a prefix of another
    spec = task.initial_state["bfcl"]
    entry = {"id": task.id, "initial_config": spec["config"], "involved_classes": spec["classes"]}
    try:
        return checker.multi_turn_checker(
            decoded, task.metadata["ground_truth"], entry, task.metadata["category"], model_name
        )
    except Exception as exc:  # noqa: BLE001 - a checker failure scores the episode invalid, never crashes it
        return {"valid": False, "error_message": f"checker failed: {type(exc).__name__}: {exc}"}
    finally:
        prefix = re.sub(r"[-./:]", "_", model_name)
        for key in [k for k in vars(utils) if k.startswith(prefix)]:
            vars(utils).pop(key, None)


def score(task: Task, trajectory: Any, final_state: dict[str, Any] | None = None) -> bool:
    """The task's scorer hook: True when the episode reached every user turn and BFCL's checker accepts it."""
    if trajectory.truncated or trajectory.answer is None or reached_turns(trajectory) < task.num_user_turns:
        return False
    return bool(check(task, decoded_calls(trajectory, task.num_user_turns))["valid"])
