"""User-defined worlds: a Python module of plain functions plus a YAML spec, without touching the package.

The spec names the world, the module (a ``.py`` path relative to the YAML file, or an importable dotted
module), the tools (each a function of that module, with an optional name, description, JSON schema and
timeout) and the tasks (inline, or a ``tasks_file`` relative to the YAML file: JSONL, one task per line, or
one JSON array of tasks)::

    name: weather
    module: ./weather_tools.py
    tools:
      - function: get_temperature
        name: get_temp
        description: Current temperature of a city.
        parameters: {type: object, properties: {city: {type: string}}, required: [city]}
        timeout_s: 2
    tasks:
      - {id: w1, query: How warm is it in Oslo?, answer: "4", tool_names: [get_temp]}

When ``parameters`` is omitted the schema is inferred from the signature's type hints (``str`` -> string,
``int`` -> integer, ``float`` -> number, ``bool`` -> boolean, ``list`` -> array, ``dict`` -> object,
``Literal[...]`` -> enum, ``X | None`` -> [X, null]); parameters without defaults are required and a keyword
parameter named ``state`` receives the episode state instead of a model argument, one named ``phase`` the
call's phase (``"trial"`` or ``"execution"``). A task without ``id`` gets a stable one derived from its
content (``task-`` + the first 12 hex digits of the SHA-256 of its canonical JSON).

The world's suite records how to rebuild it (``origin``: this loader and the resolved spec path), so the
tool host of process isolation (``toolmaster.envs.toolhost``) loads the same module in its own process.

Every problem is raised as a one-line ``ConfigError`` (``DataError`` for a tasks file) naming the file, the
key or line, and what is accepted, because this is where users meet the project first.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import re
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from toolmaster.envs.task import Task
from toolmaster.envs.tool import Tool, ToolSuite
from toolmaster.errors import ConfigError, DataError
from toolmaster.worlds.base import World

SPEC_KEYS = ("name", "module", "tools", "tasks", "tasks_file")
TOOL_KEYS = ("function", "name", "description", "parameters", "timeout_s")
TASK_REQUIRED = ("query", "answer")
TASK_OPTIONAL = (
    "split",
    "tool_names",
    "initial_state",
    "gold_calls",
    "family",
    "metadata",
    "follow_ups",
    "scorer",
)
SCHEMA_KEYS = ("type", "properties", "required", "description", "additionalProperties", "title")
JSON_TYPES = ("string", "integer", "number", "boolean", "array", "object", "null")
DEFAULT_SPLIT = "test"

_HINT_TYPES: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    list: "array",
    dict: "object",
    type(None): "null",
}
RESERVED = {"state": "the episode state", "phase": "the call's phase (trial or execution)"}
_TOOL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


# --------------------------------------------------------------------------------------- spec file
def _resolve_spec_path(path: str | Path) -> Path:
    spec = Path(path).expanduser()
    if spec.is_file() or spec.is_absolute():
        return spec
    try:  # Hydra may have moved the working directory; relative paths mean the launch directory
        from hydra.core.hydra_config import HydraConfig
        from hydra.utils import get_original_cwd

        if HydraConfig.initialized():
            candidate = Path(get_original_cwd()) / spec
            if candidate.is_file():
                return candidate
    except (ImportError, ValueError):
        pass
    return spec


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"{path}: custom world spec not found; pass the path of an existing YAML file")
    if not path.is_file():
        raise ConfigError(f"{path}: custom world spec is not a file; pass the path of a YAML file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: YAML syntax error: {_one_line(exc.problem or exc)}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read YAML: {_one_line(exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: a custom world spec must be a YAML mapping with keys {', '.join(SPEC_KEYS)}, "
            f"got {_type_name(data)}"
        )
    unknown = sorted(str(k) for k in data if k not in SPEC_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; accepted: {', '.join(SPEC_KEYS)}")
    for key in ("name", "module"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise ConfigError(
                f"{path}: key '{key}' must be a non-empty string, got {_type_name(data.get(key))}"
            )
    if not isinstance(data.get("tools"), list) or not data["tools"]:
        raise ConfigError(
            f"{path}: key 'tools' must be a non-empty list of tool entries (each with 'function')"
        )
    if ("tasks" in data) == ("tasks_file" in data):
        raise ConfigError(
            f"{path}: give exactly one of 'tasks' (an inline list) or 'tasks_file' (a JSONL path)"
        )
    return data


# --------------------------------------------------------------------------------------------- module
def _load_module(spec_path: Path, target: str) -> types.ModuleType:
    is_file = target.endswith(".py") or "/" in target or "\\" in target
    if not is_file:
        try:
            return importlib.import_module(target)
        except Exception as exc:  # noqa: BLE001 - any import failure is a user error here
            raise ConfigError(
                f"{spec_path}: key 'module': cannot import {target!r} ({type(exc).__name__}: {_one_line(exc)}); "
                "give a .py path relative to the YAML file or an importable dotted module name"
            ) from None
    file = (spec_path.parent / target).resolve()
    if not file.is_file():
        raise ConfigError(
            f"{spec_path}: key 'module': file {target!r} not found (looked for {file}); "
            "give a .py path relative to the YAML file or an importable dotted module name"
        )
    digest = hashlib.sha1(str(file).encode()).hexdigest()[:10]
    mod_name = f"toolmaster_custom_{re.sub(r'[^0-9A-Za-z_]', '_', file.stem)}_{digest}"
    spec = importlib.util.spec_from_file_location(mod_name, file)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{spec_path}: key 'module': cannot load {file} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module  # dataclasses and pickling look the module up by name
    sys.path.insert(0, str(file.parent))  # let the module import its siblings
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:  # noqa: BLE001 - SyntaxError, ImportError, SystemExit, ...
        sys.modules.pop(mod_name, None)
        if isinstance(exc, KeyboardInterrupt):
            raise
        line = f" line {exc.lineno}" if isinstance(exc, SyntaxError) and exc.lineno else ""
        raise ConfigError(
            f"{spec_path}: key 'module': importing {file}{line} failed: {type(exc).__name__}: {_one_line(exc)}"
        ) from None
    finally:
        if sys.path and sys.path[0] == str(file.parent):
            sys.path.pop(0)
    return module


def _public_functions(module: types.ModuleType) -> list[str]:
    return sorted(
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and inspect.isfunction(value) and value.__module__ == module.__name__
    )


# --------------------------------------------------------------------------------------------- schema
def _hint_schema(hint: Any) -> dict[str, Any] | None:
    """JSON schema fragment for a type hint; None when it cannot be expressed."""
    if hint is inspect.Parameter.empty or hint is Any:
        return {}
    if hint in _HINT_TYPES:
        return {"type": _HINT_TYPES[hint]}
    if isinstance(hint, str):  # an unresolved string annotation: accept the plain builtin names
        named = {t.__name__: name for t, name in _HINT_TYPES.items() if t is not type(None)}
        return {"type": named[hint]} if hint in named else None
    origin = typing.get_origin(hint)
    if origin is list:
        return {"type": "array"}
    if origin is dict:
        return {"type": "object"}
    if origin is typing.Literal:
        values = list(typing.get_args(hint))
        kinds = {_HINT_TYPES.get(type(v)) for v in values}
        if None in kinds:
            return None
        out: dict[str, Any] = {"enum": values}
        if len(kinds) == 1:
            out["type"] = kinds.pop()
        return out
    if origin is typing.Union or origin is types.UnionType:
        names: list[str] = []
        for arg in typing.get_args(hint):
            part = _hint_schema(arg)
            if part is None or "type" not in part or "enum" in part:
                return None
            if part["type"] not in names:
                names.append(part["type"])
        return {"type": names[0] if len(names) == 1 else names}
    return None


def infer_parameters(fn: Callable[..., Any], where: str) -> dict[str, Any]:
    """The JSON schema of ``fn``'s keyword arguments, from its type hints (``state`` excluded)."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - unresolvable forward references: fall back to raw annotations
        hints = {}
    properties: dict[str, Any] = {}
    required: list[str] = []
    for param in inspect.signature(fn).parameters.values():
        if param.name in RESERVED or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        hint = hints.get(param.name, param.annotation)
        schema = _hint_schema(hint)
        if schema is None:
            shown = hint.__name__ if isinstance(hint, type) else repr(hint)
            raise ConfigError(
                f"{where}: cannot infer a JSON type for parameter {param.name!r} from hint {shown}; use "
                "str, int, float, bool, list, dict, Literal[...] or X | None, or give 'parameters' explicitly"
            )
        properties[param.name] = schema
        if param.default is inspect.Parameter.empty:
            required.append(param.name)
    schema_out: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema_out["required"] = required
    return schema_out


def _check_schema(schema: Any, where: str) -> dict[str, Any]:
    if not isinstance(schema, dict):
        raise ConfigError(f"{where}.parameters: must be a JSON schema mapping, got {_type_name(schema)}")
    unknown = sorted(str(k) for k in schema if k not in SCHEMA_KEYS)
    if unknown:
        raise ConfigError(f"{where}.parameters: unknown key(s) {unknown}; accepted: {', '.join(SCHEMA_KEYS)}")
    if schema.get("type", "object") != "object":
        raise ConfigError(f"{where}.parameters.type: must be 'object', got {schema.get('type')!r}")
    props = schema.get("properties", {})
    if not isinstance(props, dict):
        raise ConfigError(f"{where}.parameters.properties: must be a mapping of argument name -> schema")
    for name, spec in props.items():
        at = f"{where}.parameters.properties.{name}"
        if not isinstance(spec, dict):
            raise ConfigError(f"{at}: must be a mapping such as {{type: string}}, got {_type_name(spec)}")
        kind = spec.get("type")
        if kind is not None:
            kinds = kind if isinstance(kind, list) else [kind]
            bad = [k for k in kinds if k not in JSON_TYPES]
            if bad or not kinds:
                raise ConfigError(f"{at}.type: unknown type {kind!r}; accepted: {', '.join(JSON_TYPES)}")
        if "enum" in spec and (not isinstance(spec["enum"], list) or not spec["enum"]):
            raise ConfigError(f"{at}.enum: must be a non-empty list of allowed values")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise ConfigError(f"{where}.parameters.required: must be a list of argument names")
    missing = [r for r in required if r not in props]
    if missing:
        raise ConfigError(
            f"{where}.parameters.required: {missing} not in properties; accepted: {', '.join(props) or 'none'}"
        )
    return {"type": "object", **{k: v for k, v in schema.items() if k != "type"}}


def _check_signature(fn: Callable[..., Any], schema: dict[str, Any], where: str) -> None:
    """The schema's arguments must be exactly what the function can be called with."""
    params = inspect.signature(fn).parameters
    props = schema.get("properties", {})
    for name in RESERVED:
        if name in props:
            raise ConfigError(
                f"{where}.parameters: {name!r} is reserved for {RESERVED[name]}; rename the argument"
            )
    positional_only = [p.name for p in params.values() if p.kind is p.POSITIONAL_ONLY]
    if positional_only:
        raise ConfigError(
            f"{where}: positional-only parameter(s) {positional_only}; tools are called by keyword"
        )
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    accepted = [
        n for n, p in params.items() if n not in RESERVED and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    unknown = [name for name in props if name not in accepted]
    if unknown and not takes_any:
        raise ConfigError(
            f"{where}.parameters.properties: {unknown} not accepted by the function; "
            f"its parameters: {', '.join(accepted) or 'none'}"
        )
    required = set(schema.get("required", []))
    needed = [n for n in accepted if params[n].default is inspect.Parameter.empty and n not in required]
    if needed:
        raise ConfigError(
            f"{where}.parameters.required: function parameter(s) {needed} have no default, so list them in "
            "'required' (or give them defaults)"
        )


# ---------------------------------------------------------------------------------------------- tools
def _build_tool(
    entry: Any, index: int, module: types.ModuleType, spec_path: Path, world: str, label: str
) -> Tool:
    where = f"{spec_path}: tools[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError(
            f"{where}: must be a mapping with keys {', '.join(TOOL_KEYS)}, got {_type_name(entry)}"
        )
    unknown = sorted(str(k) for k in entry if k not in TOOL_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; accepted: {', '.join(TOOL_KEYS)}")
    func_name = entry.get("function")
    if not isinstance(func_name, str) or not func_name:
        raise ConfigError(f"{where}: key 'function' (the name of a function in the module) is required")
    fn = getattr(module, func_name, None)
    if fn is None or not callable(fn):
        available = ", ".join(_public_functions(module)) or "none"
        what = "is not callable" if fn is not None else "not found"
        raise ConfigError(
            f"{where}.function: {func_name!r} {what} in module {label!r}; available: {available}"
        )
    name = entry.get("name", func_name)
    if not isinstance(name, str) or not _TOOL_NAME.match(name):
        raise ConfigError(
            f"{where}.name: {name!r} is not a valid tool name; use letters, digits, '_', '.', '-'"
        )
    where = f"{spec_path}: tools[{index}] ({name})"
    description = entry.get("description")
    if description is None:
        description = (inspect.getdoc(fn) or "").split("\n\n")[0]
    if not isinstance(description, str):
        raise ConfigError(f"{where}.description: must be a string, got {_type_name(description)}")
    description = " ".join(description.split())
    timeout = entry.get("timeout_s")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0
    ):
        raise ConfigError(f"{where}.timeout_s: must be a number of seconds > 0, got {timeout!r}")
    if "parameters" in entry:
        parameters = _check_schema(entry["parameters"], where)
    else:
        parameters = infer_parameters(fn, where)
    _check_signature(fn, parameters, where)
    try:
        return Tool(
            name,
            description,
            parameters,
            fn,
            family=world,
            timeout_s=float(timeout) if timeout is not None else None,
        )
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {_one_line(exc)}") from None


# ---------------------------------------------------------------------------------------------- tasks
def _check_follow_ups(data: dict, where: str, suite: ToolSuite, error: type[Exception]) -> list[str]:
    """Validate ``follow_ups`` (later user turns) and ``scorer``; returns the tools the follow-ups add."""
    follow_ups = data.get("follow_ups", [])
    if not isinstance(follow_ups, list):
        raise error(f"{where}: task field 'follow_ups' must be a list of {{query, add_tools}} mappings")
    added: list[str] = []
    for i, turn in enumerate(follow_ups):
        if (
            not isinstance(turn, dict)
            or set(turn) - {"query", "add_tools"}
            or not isinstance(turn.get("query"), str)
        ):
            raise error(
                f"{where}: follow_ups[{i}] must be a mapping with 'query' (a string) and optional 'add_tools'"
            )
        names = turn.setdefault("add_tools", [])
        unknown = [n for n in names if n not in suite] if isinstance(names, list) else [names]
        if unknown:
            raise error(
                f"{where}: follow_ups[{i}].add_tools {unknown} unknown; available: {', '.join(suite.tools)}"
            )
        added += names
    scorer = data.get("scorer")
    if scorer is not None:
        from toolmaster.envs.task import resolve_scorer

        try:
            resolve_scorer(str(scorer))
        except ValueError as exc:
            raise error(f"{where}: {exc}") from None
    return added


def content_id(record: dict[str, Any]) -> str:
    """A stable id for a task without one: ``task-`` + 12 hex digits of the SHA-256 of its canonical JSON."""
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return "task-" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


def _build_task(record: Any, where: str, suite: ToolSuite, error: type[Exception]) -> Task:
    fields = ("id",) + TASK_REQUIRED + TASK_OPTIONAL
    accepted = ", ".join(fields)
    if not isinstance(record, dict):
        raise error(f"{where}: a task must be a mapping with keys {accepted}, got {_type_name(record)}")
    unknown = sorted(str(k) for k in record if k not in fields)
    if unknown:
        raise error(f"{where}: unknown task field(s) {unknown}; accepted: {accepted}")
    missing = [k for k in TASK_REQUIRED if k not in record]
    if missing:
        raise error(
            f"{where}: task is missing required field(s) {missing}; required: {', '.join(TASK_REQUIRED)}"
        )
    data = dict(record)
    if "id" not in data:
        data["id"] = content_id(record)
    for key in ("id", "answer"):  # YAML reads `answer: 4` as a number; accept it
        value = data[key]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            data[key] = str(value)
        elif not isinstance(value, str) or not value.strip():
            raise error(f"{where}: task field '{key}' must be a non-empty string, got {value!r}")
    where = f"{where} (task {data['id']!r})"
    if not isinstance(data["query"], str) or not data["query"].strip():
        raise error(f"{where}: task field 'query' must be a non-empty string")
    data["split"] = data.get("split", DEFAULT_SPLIT)
    if not isinstance(data["split"], str) or not data["split"]:
        raise error(f"{where}: task field 'split' must be a non-empty string, got {data['split']!r}")
    tool_names = data.get("tool_names", list(suite.tools))
    if not isinstance(tool_names, list) or not tool_names or not all(isinstance(n, str) for n in tool_names):
        raise error(f"{where}: task field 'tool_names' must be a non-empty list of tool names")
    unknown_tools = [n for n in tool_names if n not in suite]
    if unknown_tools:
        raise error(f"{where}: tool_names {unknown_tools} unknown; available tools: {', '.join(suite.tools)}")
    data["tool_names"] = list(tool_names)
    for key in ("initial_state", "metadata"):
        if not isinstance(data.get(key, {}), dict):
            raise error(f"{where}: task field '{key}' must be a mapping, got {_type_name(data[key])}")
    added = _check_follow_ups(data, where, suite, error)
    gold = data.get("gold_calls", [])
    if not isinstance(gold, list):
        raise error(f"{where}: task field 'gold_calls' must be a list of {{name, arguments}} mappings")
    for i, call in enumerate(gold):
        ok = (
            isinstance(call, dict)
            and set(call) - {"user_turn"} == {"name", "arguments"}
            and isinstance(call["arguments"], dict)
        )
        if not ok:
            raise error(
                f"{where}: gold_calls[{i}] must be a mapping with exactly 'name' and 'arguments' (a mapping)"
            )
        if call["name"] not in data["tool_names"] + added:
            raise error(f"{where}: gold_calls[{i}] names {call['name']!r}, not one of the task's tool_names")
    if not isinstance(data.get("family", ""), str):
        raise error(f"{where}: task field 'family' must be a string")
    try:
        return Task.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise error(f"{where}: {_one_line(exc)}") from None


def _read_tasks_file(spec_path: Path, target: Any) -> list[tuple[str, Any]]:
    if not isinstance(target, str) or not target:
        raise ConfigError(
            f"{spec_path}: key 'tasks_file' must be a path (relative to the YAML file) of a JSONL or JSON file"
        )
    file = spec_path.parent / target
    if not file.is_file():
        raise ConfigError(
            f"{spec_path}: key 'tasks_file': {target!r} not found (looked for {file.resolve()})"
        )
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{file}: not UTF-8 text ({_one_line(exc)}); a tasks file is JSONL (one task per line) or a JSON "
            "array of tasks"
        ) from None
    records = _read_json_array(file, text) if text.lstrip().startswith("[") else _read_jsonl(file, text)
    if not records:
        raise DataError(f"{file}: no tasks; write one JSON task object per line, or a JSON array of them")
    return records


def _read_json_array(file: Path, text: str) -> list[tuple[str, Any]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{file}:{exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno}); a tasks file starting "
            "with '[' must be one JSON array of task objects"
        ) from None
    return [(f"{file}: task [{i}]", record) for i, record in enumerate(data)]


def _read_jsonl(file: Path, text: str) -> list[tuple[str, Any]]:
    records: list[tuple[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append((f"{file}:{number}", json.loads(line)))
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{file}:{number}: not valid JSON ({exc.msg} at column {exc.colno}); each line must be one task "
                "object (or give the whole file as one JSON array)"
            ) from None
    return records


# ---------------------------------------------------------------------------------------------- world
def load_custom_world(path: str | Path) -> World:
    """Build a World from a YAML spec naming a module of functions, the tools and the tasks."""
    spec_path = _resolve_spec_path(path)
    spec = _read_yaml(spec_path)
    module = _load_module(spec_path, spec["module"].strip())
    world_name = spec["name"].strip()
    suite = ToolSuite()
    for index, entry in enumerate(spec["tools"]):
        tool = _build_tool(entry, index, module, spec_path, world_name, spec["module"].strip())
        if tool.name in suite:
            raise ConfigError(
                f"{spec_path}: tools[{index}]: duplicate tool name {tool.name!r}; set a distinct 'name'"
            )
        suite.add(tool)

    if "tasks" in spec:
        if not isinstance(spec["tasks"], list) or not spec["tasks"]:
            raise ConfigError(f"{spec_path}: key 'tasks' must be a non-empty list of task mappings")
        records = [(f"{spec_path}: tasks[{i}]", rec) for i, rec in enumerate(spec["tasks"])]
        error: type[Exception] = ConfigError
    else:
        records = _read_tasks_file(spec_path, spec["tasks_file"])
        error = DataError
    splits: dict[str, list[Task]] = {}
    seen: dict[str, str] = {}
    for where, record in records:
        task = _build_task(record, where, suite, error)
        if task.id in seen:
            raise error(f"{where}: duplicate task id {task.id!r} (first at {seen[task.id]})")
        seen[task.id] = where
        if not task.family:
            task.family = world_name
        splits.setdefault(task.split, []).append(task)
    suite.origin = {
        "_target_": "toolmaster.worlds.custom.load_custom_world",
        "path": str(spec_path.resolve()),
    }
    return World(world_name, suite, splits)
