"""tools=bfcl_ast: BFCL's single-turn AST categories as eval-only tasks scored by BFCL's ast_checker.

Gold replays (the first possible value of every argument) through the environment score valid for 2127 of the
2151 entries. The other 24 never reach the checker in that form: their ground truth breaks the entry's own
function doc (a required argument left out, a value outside the enum, an argument the doc does not have), and
the environment answers such a call with an invalid-arguments error, as it would for a model.
"""

from __future__ import annotations

import copy
import sys

import pytest
from helpers.lookups import task_by_id

from toolmaster.envs.environment import EXECUTION, ToolEnv
from toolmaster.errors import ConfigError
from toolmaster.trajectory import Trajectory
from toolmaster.worlds.bfcl.single_turn import AST_CATEGORIES, MODEL_CONFIG, build_bfcl_ast_world

REJECTED_BY_SCHEMA = {
    "simple_python": 1,
    "multiple": 0,
    "parallel": 0,
    "parallel_multiple": 1,
    "live_simple": 3,
    "live_multiple": 18,
    "live_parallel": 0,
    "live_parallel_multiple": 1,
}


@pytest.fixture(scope="module")
def world():
    return build_bfcl_ast_world()


def replay(world, task, gold) -> tuple[bool, ToolEnv]:
    env = ToolEnv(world.suite, 0, 5.0, 1000, strict_types=False)
    env.reset(task)
    for call in gold:
        env.execute(call["name"], call["arguments"], EXECUTION)
    trajectory = Trajectory(task.id, task.split, [], calls=[r.to_dict() for r in env.records], answer="done")
    return task.score(trajectory), env


def test_categories_and_tools_per_entry(world):
    assert {name: len(tasks) for name, tasks in world.splits.items()} == {
        "simple_python": 400,
        "multiple": 200,
        "parallel": 200,
        "parallel_multiple": 200,
        "live_simple": 258,
        "live_multiple": 1053,
        "live_parallel": 16,
        "live_parallel_multiple": 24,
    }
    task = task_by_id(world, "parallel_0")
    env = ToolEnv(world.suite, 0)
    env.reset(task)
    assert list(env.tools) == ["spotify.play"]  # the model calls the function's own name
    assert task.gold_calls[1] == {"name": "spotify.play", "arguments": {"artist": "Maroon 5", "duration": 15}}
    with pytest.raises(ConfigError, match="unknown \\['nope'\\]"):
        build_bfcl_ast_world(["nope"])


def test_gold_replays_score_valid_unless_the_schema_rejects_them(world):
    assert MODEL_CONFIG not in sys.modules  # the stand-in import left nothing behind
    for category in AST_CATEGORIES:
        rejected = 0
        for task in world.splits[category]:
            valid, env = replay(world, task, task.gold_calls)
            refused = any(r.error == "invalid_arguments" for r in env.records)
            assert valid != refused, task.id
            rejected += refused
        assert rejected == REJECTED_BY_SCHEMA[category], category


@pytest.mark.parametrize("task_id", ["simple_python_0", "parallel_0", "multiple_5", "live_simple_0-0-0"])
def test_perturbed_replays_score_invalid(world, task_id):
    task = task_by_id(world, task_id)
    assert replay(world, task, task.gold_calls)[0]
    assert not replay(world, task, task.gold_calls[:-1])[0]  # a call dropped
    changed = copy.deepcopy(task.gold_calls)
    key, value = next(iter(changed[0]["arguments"].items()))
    changed[0]["arguments"][key] = value + 1 if isinstance(value, int) else f"{value}x"
    assert not replay(world, task, changed)[0]  # an argument changed
