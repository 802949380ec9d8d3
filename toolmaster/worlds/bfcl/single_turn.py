"""``tools=bfcl_ast``: BFCL's single-turn AST categories as eval-only tasks, scored by BFCL's ``ast_checker``.

Categories: simple_python, multiple, parallel, parallel_multiple and live_simple, live_multiple,
live_parallel, live_parallel_multiple (Python only; the Java / JavaScript categories need BFCL's string type
conversions and are left out). Each entry becomes one task in the split named after its category, offering the
entry's own functions (schemas converted as for multi-turn; the suite files them under ``<entry id>/<name>``,
since different entries define different functions with the same name). The functions are not executable:
a call is checked against the schema and answered ``Call recorded.``. The episode's accepted execution calls,
in order, are the model output BFCL's ``ast_checker`` compares with the entry's possible answers (a parallel
entry's calls are several execution calls, one per assistant turn). Gold calls take the first possible value of
each argument, recursively inside dict arguments (an optional argument whose first possible value is "" is left
out).

Stand-in: ``ast_checker`` imports ``bfcl_eval.constants.model_config``, which imports every provider SDK;
while it is imported, a small stand-in module takes that name (a mapping whose every entry has
``underscore_to_dot=False``, the only field the checker reads), and is removed from ``sys.modules`` right after,
so only the checker holds it.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from functools import cache
from typing import Any

from toolmaster.envs.environment import EXECUTION
from toolmaster.envs.task import Task
from toolmaster.envs.tool import Tool, ToolSuite
from toolmaster.errors import ConfigError
from toolmaster.worlds.base import World
from toolmaster.worlds.bfcl.package import data_dir, import_module, read_jsonl
from toolmaster.worlds.bfcl.schema import tool_schema

AST_CATEGORIES = (
    "simple_python",
    "multiple",
    "parallel",
    "parallel_multiple",
    "live_simple",
    "live_multiple",
    "live_parallel",
    "live_parallel_multiple",
)
SCORER = "toolmaster.worlds.bfcl.single_turn:score"
MODEL_CONFIG = "bfcl_eval.constants.model_config"


@dataclass(frozen=True)
class _NoDots:
    underscore_to_dot: bool = False


class _AnyModel(dict):
    def __missing__(self, key: str) -> _NoDots:
        return _NoDots()


@cache
def ast_checker_module() -> types.ModuleType:
    """BFCL's ast_checker module, imported with the stand-in for ``model_config`` (see the module docstring)."""
    import_module("bfcl_eval.constants.enums")  # sets BFCL_PROJECT_ROOT first
    previous = sys.modules.get(MODEL_CONFIG)
    stand_in = types.ModuleType(MODEL_CONFIG)
    stand_in.MODEL_CONFIG_MAPPING = _AnyModel()  # type: ignore[attr-defined]
    sys.modules[MODEL_CONFIG] = stand_in
    try:
        return import_module("bfcl_eval.eval_checker.ast_eval.ast_checker")
    finally:
        if previous is None:
            sys.modules.pop(MODEL_CONFIG, None)
        else:
            sys.modules[MODEL_CONFIG] = previous


@dataclass(frozen=True)
class RecordOnly:
    """A non-executable function: the call is only recorded."""

    def __call__(self, **arguments: Any) -> str:
        return "Call recorded."


def _query(entry: dict[str, Any]) -> str:
    return "\n".join(str(m["content"]) for m in entry["question"][0] if m.get("role") in ("system", "user"))


def _first(params: dict[str, list[Any]]) -> dict[str, Any]:
    """Each argument's first possible value; nested dicts of possible values recursively; "" = left out."""
    out = {}
    for key, values in params.items():
        if not isinstance(values, list):  # a literal, not a list of possible values
            out[key] = values
            continue
        if not values or values[0] == "":
            continue
        value = values[0]
        if _possibilities(value):
            value = _first(value)
        elif isinstance(value, list):
            value = [_first(v) if _possibilities(v) else v for v in value]
        out[key] = value
    return out


def _possibilities(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(v, list) for v in value.values())


def _gold(possible: list[dict[str, Any]]) -> list[dict[str, Any]]:
    calls = []
    for option in possible:
        ((name, params),) = option.items()
        calls.append({"name": name, "arguments": _first(params)})
    return calls


def build_bfcl_ast_world(categories: list[str] | None = None) -> World:
    """Eval-only world: one split per single-turn AST category."""
    categories = list(categories or AST_CATEGORIES)
    unknown = [c for c in categories if c not in AST_CATEGORIES]
    if unknown:
        raise ConfigError(
            f"tools.world.categories: unknown {unknown}; available: {', '.join(AST_CATEGORIES)}"
        )
    suite = ToolSuite()
    splits: dict[str, list[Task]] = {}
    for category in categories:
        name = f"BFCL_v4_{category}.json"
        answers = {a["id"]: a["ground_truth"] for a in read_jsonl(data_dir() / "possible_answer" / name)}
        tasks = []
        for entry in read_jsonl(data_dir() / name):
            keys = []
            for doc in entry["function"]:
                key = f"{entry['id']}/{doc['name']}"
                suite.tools[key] = Tool(**tool_schema(doc), fn=RecordOnly(), family=category)
                keys.append(key)
            tasks.append(
                Task(
                    id=entry["id"],
                    query=_query(entry),
                    answer="",
                    tool_names=keys,
                    split=category,
                    family=category,
                    gold_calls=_gold(answers[entry["id"]]),
                    metadata={
                        "category": category,
                        "functions": entry["function"],
                        "possible_answer": answers[entry["id"]],
                    },
                    scorer=SCORER,
                )
            )
        splits[category] = tasks
    return World(name="bfcl_ast", suite=suite, splits=splits)


def model_output(trajectory: Any) -> list[dict[str, Any]]:
    """The accepted execution calls as BFCL's decoded AST output: ``[{name: {argument: value}}, ...]``."""
    return [
        {call["name"]: dict(call["arguments"])}
        for call in trajectory.calls
        if call["phase"] == EXECUTION and call["ok"]
    ]


def score(task: Task, trajectory: Any, final_state: dict[str, Any] | None = None) -> bool:
    """True when the episode ended with an answer and BFCL's ast_checker accepts its calls."""
    output = model_output(trajectory)
    if trajectory.truncated or trajectory.answer is None or not output:
        return False
    checker = ast_checker_module()
    language = import_module("bfcl_eval.constants.enums").Language.PYTHON
    try:
        result = checker.ast_checker(
            task.metadata["functions"],
            output,
            task.metadata["possible_answer"],
            language,
            task.metadata["category"],
            "toolmaster",
        )
    except Exception:  # noqa: BLE001 - a checker failure scores the episode invalid, never crashes it
        return False
    return bool(result["valid"])
