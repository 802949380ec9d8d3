"""User-defined worlds from YAML + a module of functions: the shipped example, and every way to get it wrong.

Each broken spec must raise ConfigError (DataError for a tasks file) with a one-line message naming the file
and the problem.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers.lookups import task_by_id

from toolmaster.envs.environment import EXECUTION, TRIAL, CallRecord, ToolEnv
from toolmaster.errors import ConfigError, DataError
from toolmaster.worlds.base import World
from toolmaster.worlds.custom import infer_parameters, load_custom_world

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "custom_tools" / "weather.yaml"

MODULE = '''
from typing import Literal, Optional

LIMIT = 3


def get_temperature(city: str) -> float:
    """Current temperature of a city.

    More details that are not part of the description.
    """
    return {"oslo": 4.0}.get(city.lower(), 10.0)


def add(a: int, b: int = 0) -> int:
    return a + b


def store(key: str, value: str, state) -> int:
    state[key] = value
    return len(state)


def typed(name: str, count: int, ratio: float, flag: bool, items: list, options: dict,
          unit: Literal["C", "F"] = "C", note: Optional[str] = None, tags: "list[str] | None" = None) -> str:
    return "ok"


def takes_tuple(pair: tuple) -> str:
    return "ok"


def _private() -> None:
    pass
'''

TOOLS = """
tools:
  - function: get_temperature
    name: get_temp
    description: Current temperature of a city.
    parameters:
      type: object
      properties: {city: {type: string}}
      required: [city]
    timeout_s: 2
  - function: add
  - function: store
"""

TASKS = """
tasks:
  - id: w1
    query: How warm is it in Oslo?
    answer: "4"
    tool_names: [get_temp]
  - id: w2
    split: train
    query: 2 + 3?
    answer: 5
    tool_names: [add]
"""


def write_world(tmp_path: Path, spec: str, module: str | None = MODULE, header: str | None = None) -> Path:
    if module is not None:
        (tmp_path / "my_tools.py").write_text(module, encoding="utf-8")
    head = "name: mine\nmodule: ./my_tools.py\n" if header is None else header
    path = tmp_path / "world.yaml"
    path.write_text(head + spec, encoding="utf-8")
    return path


def load_error(path: Path, kind: type[Exception] = ConfigError) -> str:
    with pytest.raises(kind) as info:
        load_custom_world(path)
    message = str(info.value)
    assert "\n" not in message, f"message is not one line: {message!r}"
    return message


# ------------------------------------------------------------------------------------ shipped example
def _number(record: CallRecord) -> float:
    return float(record.observation)


# how each example task's answer follows from the observations of its gold calls
DERIVE: dict[str, Callable[[list[CallRecord]], float]] = {
    "w1": lambda r: _number(r[0]),
    "w2": lambda r: _number(r[1]),
    "w3": lambda r: max(json.loads(r[0].observation)),
    "w4": lambda r: _number(r[0]),
    "w5": lambda r: int(r[-1].observation.split("; ")[1].split()[0]),
    "w6": lambda r: _number(r[0]) - _number(r[1]),
}


@pytest.fixture(scope="module")
def example() -> World:
    return load_custom_world(EXAMPLE)


def test_example_loads(example: World) -> None:
    assert example.name == "weather"
    assert sorted(example.suite.tools) == ["convert_temp", "forecast", "get_temp", "set_alert"]
    assert {split: [t.id for t in tasks] for split, tasks in example.splits.items()} == {
        "train": ["w1", "w2"],
        "test": ["w3", "w4", "w5", "w6"],
    }
    assert sorted(DERIVE) == sorted(t.id for tasks in example.splits.values() for t in tasks)
    forecast = example.suite.tools["forecast"]
    assert forecast.parameters == {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"],
    }
    set_alert = example.suite.tools["set_alert"]
    assert set_alert.wants_state and "state" not in set_alert.parameters["properties"]
    assert example.suite.tools["get_temp"].timeout_s == 2.0
    assert task_by_id(example, "w6").tool_names == list(example.suite.tools)
    assert all(t.family == "weather" for t in example.suite.tools.values())


@pytest.mark.parametrize("task_id", sorted(DERIVE))
def test_example_tasks_are_solved_by_their_gold_calls(example: World, task_id: str) -> None:
    task = task_by_id(example, task_id)
    assert task.gold_calls
    env = ToolEnv(example.suite, trial_budget=2)
    env.reset(task)
    records = [env.execute(call["name"], call["arguments"], EXECUTION) for call in task.gold_calls]
    assert all(r.ok for r in records), [r.observation for r in records]
    answer = DERIVE[task_id](records)
    assert task.check(f"{answer:g}"), f"{answer:g} != {task.answer}"
    assert not task.check(f"{answer + 1:g}")


def test_example_undocumented_format_errors_informatively(example: World) -> None:
    env = ToolEnv(example.suite, trial_budget=2)
    env.reset(task_by_id(example, "w4"))
    record = env.execute("convert_temp", {"spec": "kelvin to fahrenheit", "value": 300}, TRIAL)
    assert not record.ok
    assert "bad spec 'kelvin to fahrenheit'" in record.observation and "'C->F'" in record.observation
    assert env.execute("convert_temp", {"spec": "K->F", "value": 300}, TRIAL).observation == "80.33"


def test_example_unknown_city_lists_the_known_ones(example: World) -> None:
    env = ToolEnv(example.suite)
    env.reset(task_by_id(example, "w1"))
    record = env.execute("get_temp", {"city": "Paris"}, EXECUTION)
    assert not record.ok and "unknown city 'Paris'" in record.observation and "Oslo" in record.observation


def test_example_stateful_tool_trials_do_not_leak(example: World) -> None:
    task = task_by_id(example, "w5")
    env = ToolEnv(example.suite, trial_budget=2)
    env.reset(task)
    trial = env.execute("set_alert", {"city": "Rome", "below": 5}, TRIAL)
    assert trial.ok and "2 alert(s) active" in trial.observation
    assert env.state == task.initial_state
    real = env.execute("set_alert", {"city": "Lima", "below": 15}, EXECUTION)
    assert "2 alert(s) active" in real.observation
    again = env.execute("set_alert", {"city": "Lima", "below": 15}, EXECUTION)
    assert not again.ok and "already exists" in again.observation
    assert len(env.state["alerts"]) == 2 and len(task.initial_state["alerts"]) == 1


# ----------------------------------------------------------------------------------- valid user specs
def test_user_world_with_inline_tasks(tmp_path: Path) -> None:
    world = load_custom_world(str(write_world(tmp_path, TOOLS + TASKS)))
    assert world.name == "mine"
    get_temp = world.suite.tools["get_temp"]
    assert get_temp.description == "Current temperature of a city." and get_temp.timeout_s == 2.0
    add = world.suite.tools["add"]
    assert add.description == ""
    assert add.parameters == {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a"],
    }
    store = world.suite.tools["store"]
    assert store.wants_state and store.parameters["required"] == ["key", "value"]
    assert [t.id for t in world.tasks("test")] == ["w1"]
    w2 = task_by_id(world, "w2")
    assert (w2.split, w2.answer) == ("train", "5")
    env = ToolEnv(world.suite)
    env.reset(task_by_id(world, "w1"))
    assert env.execute("get_temp", {"city": "Oslo"}, EXECUTION).observation == "4.0"
    env.reset(task_by_id(world, "w2"))
    assert task_by_id(world, "w2").check(env.execute("add", {"a": 2, "b": 3}, EXECUTION).observation)


def test_description_defaults_to_the_docstring_summary(tmp_path: Path) -> None:
    world = load_custom_world(
        write_world(
            tmp_path,
            "tools:\n  - function: get_temperature\n"
            + TASKS.replace("tool_names: [get_temp]", "tool_names: [get_temperature]").replace(
                "tool_names: [add]", ""
            ),
        )
    )
    assert world.suite.tools["get_temperature"].description == "Current temperature of a city."
    assert task_by_id(world, "w2").tool_names == ["get_temperature"]


def test_stateful_tool_receives_the_episode_state(tmp_path: Path) -> None:
    spec = (
        TOOLS
        + 'tasks:\n  - {id: s1, query: store it, answer: "2", tool_names: [store], initial_state: {existing: 1}}\n'
    )
    world = load_custom_world(write_world(tmp_path, spec))
    env = ToolEnv(world.suite)
    env.reset(task_by_id(world, "s1"))
    assert env.execute("store", {"key": "k", "value": "v"}, EXECUTION).observation == "2"
    assert env.state == {"existing": 1, "k": "v"}


def test_tasks_file(tmp_path: Path) -> None:
    lines = [
        {"id": "f1", "query": "How warm is Oslo?", "answer": "4", "tool_names": ["get_temp"]},
        {
            "id": "f2",
            "query": "1+1?",
            "answer": "2",
            "split": "train",
            "gold_calls": [{"name": "add", "arguments": {"a": 1, "b": 1}}],
        },
    ]
    (tmp_path / "tasks.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n", encoding="utf-8")
    world = load_custom_world(write_world(tmp_path, TOOLS + "tasks_file: tasks.jsonl\n"))
    assert [t.id for t in world.tasks("test")] == ["f1"]
    assert task_by_id(world, "f2").tool_names == ["get_temp", "add", "store"]


def test_dotted_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "pkg_custom_tools_test"
    package.mkdir()
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "tools.py").write_text(MODULE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = write_world(
        tmp_path, TOOLS + TASKS, module=None, header="name: dotted\nmodule: pkg_custom_tools_test.tools\n"
    )
    assert sorted(load_custom_world(path).suite.tools) == ["add", "get_temp", "store"]


def test_schema_inference_from_type_hints(tmp_path: Path) -> None:
    world = load_custom_world(
        write_world(tmp_path, "tools:\n  - function: typed\ntasks:\n  - {id: t, query: q, answer: a}\n")
    )
    assert world.suite.tools["typed"].parameters == {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "count": {"type": "integer"},
            "ratio": {"type": "number"},
            "flag": {"type": "boolean"},
            "items": {"type": "array"},
            "options": {"type": "object"},
            "unit": {"enum": ["C", "F"], "type": "string"},
            "note": {"type": ["string", "null"]},
            "tags": {"type": ["array", "null"]},
        },
        "required": ["name", "count", "ratio", "flag", "items", "options"],
    }


def test_infer_parameters_excludes_state_and_var_arguments() -> None:
    def fn(x: int, *args: Any, state: dict[str, Any], y: str = "", **kwargs: Any) -> None:
        return None

    assert infer_parameters(fn, "here") == {
        "type": "object",
        "properties": {"x": {"type": "integer"}, "y": {"type": "string"}},
        "required": ["x"],
    }


# ------------------------------------------------------------------------------------- broken specs
def test_missing_file(tmp_path: Path) -> None:
    message = load_error(tmp_path / "nope.yaml")
    assert "nope.yaml" in message and "not found" in message


def test_directory_instead_of_file(tmp_path: Path) -> None:
    assert "not a file" in load_error(tmp_path)


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write_world(tmp_path, "tools:\n  - function: add\n    name: [unclosed\ntasks: []\n")
    message = load_error(path)
    assert "world.yaml:" in message and "YAML syntax error" in message
    line = int(message.split("world.yaml:")[1].split(":")[0])
    assert 4 <= line <= 6


@pytest.mark.parametrize(
    ("spec", "parts"),
    [
        ("", ["YAML mapping", "name, module, tools"]),
        ("- a\n- b\n", ["YAML mapping", "list"]),
    ],
)
def test_spec_not_a_mapping(tmp_path: Path, spec: str, parts: list[str]) -> None:
    message = load_error(write_world(tmp_path, spec, header=""))
    assert "world.yaml" in message and all(p in message for p in parts)


# (id, spec body after the name/module header, substrings of the message)
SPEC_ERRORS: list[tuple[str, str, list[str]]] = [
    (
        "unknown-top-level-key",
        TOOLS + TASKS + "extra: 1\n",
        ["unknown key", "'extra'", "accepted: name, module"],
    ),
    ("no-tools", TASKS, ["'tools'", "non-empty list"]),
    ("empty-tools", "tools: []\n" + TASKS, ["'tools'", "non-empty list"]),
    ("no-tasks", TOOLS, ["exactly one of 'tasks'", "'tasks_file'"]),
    ("tasks-and-tasks-file", TOOLS + TASKS + "tasks_file: t.jsonl\n", ["exactly one of 'tasks'"]),
    ("empty-tasks", TOOLS + "tasks: []\n", ["'tasks'", "non-empty list"]),
    ("tool-not-a-mapping", "tools:\n  - add\n" + TASKS, ["tools[0]", "mapping", "str"]),
    (
        "tool-unknown-key",
        "tools:\n  - {function: add, args: {}}\n" + TASKS,
        ["tools[0]", "unknown key", "'args'", "accepted: function, name"],
    ),
    ("tool-no-function", "tools:\n  - {name: add}\n" + TASKS, ["tools[0]", "'function'", "required"]),
    (
        "function-not-found",
        "tools:\n  - {function: get_temprature}\n" + TASKS,
        [
            "tools[0].function",
            "'get_temprature' not found",
            "available: add, get_temperature, store, takes_tuple, typed",
        ],
    ),
    (
        "function-not-callable",
        "tools:\n  - {function: LIMIT}\n" + TASKS,
        ["'LIMIT' is not callable", "available:"],
    ),
    (
        "bad-tool-name",
        "tools:\n  - {function: add, name: 'add numbers'}\n" + TASKS,
        ["tools[0].name", "'add numbers'", "not a valid tool name"],
    ),
    (
        "duplicate-tool-name",
        "tools:\n  - {function: add}\n  - {function: get_temperature, name: add}\n" + TASKS,
        ["tools[1]", "duplicate tool name 'add'"],
    ),
    (
        "bad-timeout",
        "tools:\n  - {function: add, timeout_s: -1}\n" + TASKS,
        ["tools[0] (add).timeout_s", "> 0", "-1"],
    ),
    (
        "timeout-not-a-number",
        "tools:\n  - {function: add, timeout_s: soon}\n" + TASKS,
        ["timeout_s", "'soon'"],
    ),
    (
        "description-not-a-string",
        "tools:\n  - {function: add, description: [a]}\n" + TASKS,
        ["(add).description", "must be a string"],
    ),
    (
        "schema-not-a-mapping",
        "tools:\n  - {function: add, parameters: [a, b]}\n" + TASKS,
        ["(add).parameters", "JSON schema mapping", "list"],
    ),
    (
        "schema-not-object",
        "tools:\n  - {function: add, parameters: {type: string}}\n" + TASKS,
        ["(add).parameters.type", "'object'", "'string'"],
    ),
    (
        "schema-unknown-key",
        "tools:\n  - {function: add, parameters: {type: object, props: {}}}\n" + TASKS,
        ["(add).parameters", "unknown key", "'props'", "accepted: type, properties"],
    ),
    (
        "schema-properties-not-a-mapping",
        "tools:\n  - {function: add, parameters: {properties: [a]}}\n" + TASKS,
        ["(add).parameters.properties", "mapping"],
    ),
    (
        "schema-property-not-a-mapping",
        "tools:\n  - {function: add, parameters: {properties: {a: integer}}}\n" + TASKS,
        ["parameters.properties.a", "{type: string}", "str"],
    ),
    (
        "schema-unknown-type",
        "tools:\n  - {function: add, parameters: {properties: {a: {type: int}}, required: [a]}}\n" + TASKS,
        ["parameters.properties.a.type", "unknown type 'int'", "accepted: string, integer"],
    ),
    (
        "schema-bad-enum",
        "tools:\n  - {function: add, parameters: {properties: {a: {enum: 3}}, required: [a]}}\n" + TASKS,
        ["parameters.properties.a.enum", "non-empty list"],
    ),
    (
        "schema-required-unknown",
        "tools:\n  - {function: add, parameters: {properties: {a: {}}, required: [a, c]}}\n" + TASKS,
        ["parameters.required", "['c']", "not in properties", "accepted: a"],
    ),
    (
        "schema-required-not-a-list",
        "tools:\n  - {function: add, parameters: {properties: {a: {}}, required: a}}\n" + TASKS,
        ["parameters.required", "list of argument names"],
    ),
    (
        "schema-argument-not-accepted",
        "tools:\n  - {function: add, parameters: {properties: {a: {}, c: {}}, required: [a]}}\n" + TASKS,
        ["(add).parameters.properties", "['c'] not accepted", "its parameters: a, b"],
    ),
    (
        "schema-misses-required-parameter",
        "tools:\n  - {function: add, parameters: {properties: {a: {}, b: {}}}}\n" + TASKS,
        ["(add).parameters.required", "['a']", "no default"],
    ),
    (
        "schema-names-state",
        "tools:\n  - {function: store, parameters: {properties: {key: {}, value: {}, state: {}}, "
        "required: [key, value]}}\n" + TASKS,
        ["(store).parameters", "'state' is reserved"],
    ),
    (
        "uninferable-hint",
        "tools:\n  - {function: takes_tuple}\n" + TASKS,
        ["(takes_tuple)", "parameter 'pair'", "tuple", "give 'parameters' explicitly"],
    ),
    ("task-not-a-mapping", TOOLS + "tasks:\n  - just a string\n", ["tasks[0]", "mapping", "str"]),
    (
        "task-missing-fields",
        TOOLS + "tasks:\n  - {id: t1, query: q}\n",
        ["tasks[0]", "missing required field(s) ['answer']", "required: query, answer"],
    ),
    (
        "task-missing-everything",
        TOOLS + "tasks:\n  - {split: test}\n",
        ["tasks[0]", "['query', 'answer']"],
    ),
    (
        "task-unknown-field",
        TOOLS + "tasks:\n  - {id: t1, query: q, answer: a, tools: [add]}\n",
        ["tasks[0]", "unknown task field(s) ['tools']", "accepted: id, query, answer, split, tool_names"],
    ),
    (
        "task-unknown-tool",
        TOOLS + "tasks:\n  - {id: t1, query: q, answer: a}\n  - {id: t2, query: q, answer: a, "
        "tool_names: [get_temp, gte_temp]}\n",
        ["tasks[1]", "'t2'", "['gte_temp'] unknown", "available tools: get_temp"],
    ),
    (
        "task-tool-names-not-a-list",
        TOOLS + "tasks:\n  - {id: t1, query: q, answer: a, tool_names: add}\n",
        ["tasks[0]", "'tool_names'", "list"],
    ),
    (
        "task-empty-answer",
        TOOLS + "tasks:\n  - {id: t1, query: q, answer: ''}\n",
        ["tasks[0]", "'answer'", "non-empty"],
    ),
    (
        "task-bool-answer",
        TOOLS + "tasks:\n  - {id: t1, query: q, answer: yes}\n",
        ["tasks[0]", "'answer'", "True"],
    ),
    ("task-empty-query", TOOLS + "tasks:\n  - {id: t1, query: '', answer: a}\n", ["'t1'", "'query'"]),
    (
        "task-state-not-a-mapping",
        TOOLS + "tasks:\n  - {id: t1, query: q, answer: a, initial_state: [1]}\n",
        ["'t1'", "'initial_state'", "mapping", "list"],
    ),
    (
        "task-bad-gold-call",
        TOOLS + "tasks:\n  - {id: t1, query: q, answer: a, gold_calls: [{name: add}]}\n",
        ["'t1'", "gold_calls[0]", "'name' and 'arguments'"],
    ),
    (
        "task-gold-call-other-tool",
        TOOLS
        + "tasks:\n  - {id: t1, query: q, answer: a, tool_names: [add], gold_calls: [{name: store, arguments: {}}]}\n",
        ["'t1'", "gold_calls[0]", "'store'", "tool_names"],
    ),
    (
        "duplicate-task-id",
        TOOLS + "tasks:\n  - {id: t1, query: q, answer: a}\n  - {id: t1, query: q2, answer: b}\n",
        ["tasks[1]", "duplicate task id 't1'", "tasks[0]"],
    ),
]


@pytest.mark.parametrize(("spec", "parts"), [c[1:] for c in SPEC_ERRORS], ids=[c[0] for c in SPEC_ERRORS])
def test_spec_errors(tmp_path: Path, spec: str, parts: list[str]) -> None:
    message = load_error(write_world(tmp_path, spec))
    assert str(tmp_path / "world.yaml") in message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


def test_function_not_found_lists_public_functions_only(tmp_path: Path) -> None:
    message = load_error(write_world(tmp_path, "tools:\n  - {function: nothing}\n" + TASKS))
    assert "in module './my_tools.py'" in message and "available: add," in message
    assert "_private" not in message and "Literal" not in message and "LIMIT" not in message


@pytest.mark.parametrize(
    ("header", "parts"),
    [
        ("module: ./my_tools.py\n", ["'name'", "non-empty string", "null"]),
        ("name: mine\n", ["'module'", "non-empty string"]),
        ("name: mine\nmodule: 3\n", ["'module'", "int"]),
    ],
)
def test_missing_name_or_module(tmp_path: Path, header: str, parts: list[str]) -> None:
    message = load_error(write_world(tmp_path, TOOLS + TASKS, header=header))
    assert "world.yaml" in message and all(p in message for p in parts)


@pytest.mark.parametrize(
    ("module_line", "module_text", "parts"),
    [
        (
            "./missing_tools.py",
            None,
            ["key 'module'", "'./missing_tools.py' not found", "relative to the YAML file"],
        ),
        ("./my_tools.py", "def broken(:\n    pass\n", ["key 'module'", "my_tools.py line 1", "SyntaxError"]),
        (
            "./my_tools.py",
            "import no_such_dependency_xyz\n",
            ["key 'module'", "ModuleNotFoundError", "no_such_dependency_xyz"],
        ),
        ("./my_tools.py", "raise RuntimeError('needs an API key')\n", ["RuntimeError", "needs an API key"]),
        ("./my_tools.py", "import sys\nsys.exit(3)\n", ["SystemExit"]),
        (
            "no_such_package_xyz.tools",
            None,
            ["cannot import 'no_such_package_xyz.tools'", "ModuleNotFoundError", "dotted module name"],
        ),
    ],
)
def test_module_errors(tmp_path: Path, module_line: str, module_text: str | None, parts: list[str]) -> None:
    path = write_world(
        tmp_path, TOOLS + TASKS, module=module_text, header=f"name: mine\nmodule: {module_line}\n"
    )
    message = load_error(path)
    assert str(path) in message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


def test_module_importing_its_sibling(tmp_path: Path) -> None:
    (tmp_path / "helpers_sibling_xyz.py").write_text(
        "def double(x: int) -> int:\n    return 2 * x\n", encoding="utf-8"
    )
    module = "from helpers_sibling_xyz import double\n\n\ndef twice(x: int) -> int:\n    return double(x)\n"
    path = write_world(
        tmp_path, "tools:\n  - function: twice\ntasks:\n  - {id: t, query: q, answer: '4'}\n", module
    )
    world = load_custom_world(path)
    assert world.suite.tools["twice"].fn(x=2) == 4


def _jsonl_world(tmp_path: Path, text: str | None) -> Path:
    if text is not None:
        (tmp_path / "tasks.jsonl").write_text(text, encoding="utf-8")
    return write_world(tmp_path, TOOLS + "tasks_file: tasks.jsonl\n")


GOOD_LINE = json.dumps({"id": "f1", "query": "q", "answer": "a"})


@pytest.mark.parametrize(
    ("text", "kind", "parts"),
    [
        (None, ConfigError, ["world.yaml", "key 'tasks_file'", "'tasks.jsonl' not found"]),
        (GOOD_LINE + "\n\n{'id': 'f2'}\n", DataError, ["tasks.jsonl:3", "not valid JSON", "one task object"]),
        (GOOD_LINE + "\n" + GOOD_LINE[:-1] + "\n", DataError, ["tasks.jsonl:2", "not valid JSON"]),
        (
            GOOD_LINE + "\n" + json.dumps({"id": "f2", "query": "q", "answer": "a", "extra": 1}),
            DataError,
            ["tasks.jsonl:2", "unknown task field(s) ['extra']"],
        ),
        (
            json.dumps({"id": "f1", "query": "q"}),
            DataError,
            ["tasks.jsonl:1", "missing required field(s) ['answer']"],
        ),
        (
            json.dumps({"id": "f1", "query": "q", "answer": "a", "tool_names": ["nope"]}),
            DataError,
            ["tasks.jsonl:1", "['nope'] unknown", "available tools"],
        ),
        (
            GOOD_LINE + "\n" + GOOD_LINE + "\n",
            DataError,
            ["tasks.jsonl:2", "duplicate task id 'f1'", "tasks.jsonl:1"],
        ),
        ("[1, 2]\n", DataError, ["tasks.jsonl: task [0]", "mapping", "int"]),  # read as one JSON array
        ("\n\n", DataError, ["tasks.jsonl", "no tasks"]),
    ],
)
def test_tasks_file_errors(tmp_path: Path, text: str | None, kind: type[Exception], parts: list[str]) -> None:
    message = load_error(_jsonl_world(tmp_path, text), kind)
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


def test_tasks_file_not_a_string(tmp_path: Path) -> None:
    message = load_error(write_world(tmp_path, TOOLS + "tasks_file: [a.jsonl]\n"))
    assert "world.yaml" in message and "'tasks_file'" in message and "JSONL" in message


def test_errors_are_user_facing(tmp_path: Path) -> None:
    from toolmaster.errors import ToolMasterError

    with pytest.raises(ToolMasterError):
        load_custom_world(tmp_path / "absent.yaml")


def test_relative_path_from_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_world(tmp_path, TOOLS + TASKS)
    monkeypatch.chdir(tmp_path)
    world: Any = load_custom_world("world.yaml")
    assert world.name == "mine"


# ------------------------------------------------------------------ JSON array tasks, derived ids, phase
def test_tasks_file_as_json_array_with_derived_ids(tmp_path: Path) -> None:
    tasks = [
        {"query": "How warm is Oslo?", "answer": "4", "tool_names": ["get_temp"]},
        {"query": "1+1?", "answer": "2", "split": "train"},
        {"id": "given", "query": "1+2?", "answer": "3", "split": "train"},
    ]
    (tmp_path / "tasks.json").write_text(json.dumps(tasks, indent=2), encoding="utf-8")
    world = load_custom_world(write_world(tmp_path, TOOLS + "tasks_file: tasks.json\n"))
    first, second = world.tasks("test")[0], world.tasks("train")[0]
    assert first.id.startswith("task-") and len(first.id) == len("task-") + 12
    assert first.id != second.id and world.tasks("train")[1].id == "given"
    # stable: the same content gives the same id in another load, in JSONL too, whatever the key order
    lines = [json.dumps(dict(reversed(list(t.items())))) for t in tasks]
    (tmp_path / "tasks.jsonl").write_text("\n".join(lines), encoding="utf-8")
    again = load_custom_world(write_world(tmp_path, TOOLS + "tasks_file: tasks.jsonl\n"))
    assert [t.id for t in again.tasks("test")] == [first.id]
    assert [t.id for t in again.tasks("train")] == [second.id, "given"]


def test_inline_task_without_id_and_duplicate_content(tmp_path: Path) -> None:
    world = load_custom_world(write_world(tmp_path, TOOLS + "tasks:\n  - {query: q, answer: a}\n"))
    assert world.tasks("test")[0].id.startswith("task-")
    message = load_error(
        write_world(tmp_path, TOOLS + "tasks:\n  - {query: q, answer: a}\n  - {query: q, answer: a}\n")
    )
    assert "duplicate task id 'task-" in message and "tasks[0]" in message


def test_json_array_syntax_error_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "tasks.json").write_text('[\n {"query": "q", "answer": "a"},\n', encoding="utf-8")
    message = load_error(write_world(tmp_path, TOOLS + "tasks_file: tasks.json\n"), DataError)
    assert "tasks.json:3" in message and "JSON array" in message


def test_phase_parameter_is_injected_and_reserved(tmp_path: Path) -> None:
    module = MODULE + '\n\ndef book(room: str, phase: str) -> str:\n    return f"{phase}:{room}"\n'
    spec = "tools:\n  - function: book\ntasks:\n  - {id: b, query: q, answer: a}\n"
    world = load_custom_world(write_world(tmp_path, spec, module=module))
    book = world.suite.tools["book"]
    assert book.wants_phase and book.parameters["properties"] == {"room": {"type": "string"}}
    env = ToolEnv(world.suite, trial_budget=1)
    env.reset(task_by_id(world, "b"))
    assert env.execute("book", {"room": "r1"}, TRIAL).observation == "trial:r1"
    assert env.execute("book", {"room": "r1"}, EXECUTION).observation == "execution:r1"
    env.close()
    explicit = (
        "tools:\n  - function: book\n    parameters: {type: object, properties: {room: {type: string}, "
        "phase: {type: string}}, required: [room]}\ntasks:\n  - {id: b, query: q, answer: a}\n"
    )
    assert "'phase' is reserved" in load_error(write_world(tmp_path, explicit, module=module))


def test_world_records_its_origin_for_the_tool_host(tmp_path: Path) -> None:
    path = write_world(tmp_path, TOOLS + TASKS)
    world = load_custom_world(path)
    assert world.suite.origin == {
        "_target_": "toolmaster.worlds.custom.load_custom_world",
        "path": str(path.resolve()),
    }
