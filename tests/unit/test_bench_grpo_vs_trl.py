"""The TRL benchmark's bridges: toolworld tools as plain functions whose JSON schema (as transformers derives
it for ``tools=``) matches the tool's own, and the task picker's guarantees (one shared, stateless tool set)."""

from __future__ import annotations

import pytest
from transformers.utils import get_json_schema

from toolmaster.bench.grpo_vs_trl import pick_tasks, step_times, tool_function
from toolmaster.errors import ToolMasterError
from toolmaster.worlds.toolworld import build_toolworld


@pytest.fixture(scope="module")
def world():
    return build_toolworld(seed=0, variants="per_family")


def test_tool_functions_carry_the_tools_schema_and_check_arguments(world):
    tasks = pick_tasks(world, "convert", 2)
    assert tasks[0].tool_names and set(tasks[0].tool_names) == set(tasks[1].tool_names)
    for name in tasks[0].tool_names:
        tool = world.suite.tools[name]
        fn = tool_function(tool)
        schema = get_json_schema(fn)["function"]
        assert schema["name"] == tool.name and schema["description"] == tool.description
        props = tool.parameters["properties"]
        assert set(schema["parameters"]["properties"]) == set(props)
        assert set(schema["parameters"].get("required", [])) == set(tool.parameters.get("required", []))
        with pytest.raises(ValueError, match="unknown argument"):
            fn(**{name: 1 for name in props}, bogus=1)
    gold = tasks[0].gold_calls[0]
    assert str(tool_function(world.suite.tools[gold["name"]])(**gold["arguments"]))  # a real result


def test_pick_tasks_rejects_stateful_families_and_too_many(world):
    with pytest.raises(ToolMasterError, match="stateful"):
        pick_tasks(world, "orders", 1)
    with pytest.raises(ToolMasterError, match="asked for 100000"):
        pick_tasks(world, "convert", 100000)
    assert step_times([9.0]) == 9.0 and step_times([9.0, 2.0, 4.0]) == 3.0


def test_an_unknown_rollout_dtype_is_a_usage_error(capsys):
    from toolmaster.bench.grpo_vs_trl import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--rollout-dtypes", "auto,int8"])
    assert exit_info.value.code == 2
    assert "'int8' is not one of auto, bfloat16, float16, null" in capsys.readouterr().err
