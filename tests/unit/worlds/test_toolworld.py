"""toolworld: determinism, splits, task records, gold calls, decoys, and the point of the world (on the default
per-task world; the variant switch and the disjointness of the splits are in test_toolworld_variants.py).

The point: through a real ToolEnv, a docs-only policy (no trials, docs at face value) fails on most
tasks while the scripted expert (trials first, corrections parsed from what it observed) solves nearly
all of them, and the same expert does worse when its trials are refused.
"""

from __future__ import annotations

import collections
import json
import os
import random
import re
import subprocess
import sys
from typing import Any

import pytest

from toolmaster.envs.environment import EXECUTION, OVER_BUDGET, TRIAL, ToolEnv
from toolmaster.envs.task import Task
from toolmaster.errors import ConfigError
from toolmaster.worlds.base import World
from toolmaster.worlds.scripted import ScriptedEpisode, run_policy
from toolmaster.worlds.toolworld import (
    FAMILIES,
    SEEN_FAMILIES,
    SPLITS,
    UNSEEN_FAMILIES,
    ToolWorld,
    build_toolworld,
    docs_only_policy,
    expert_policy,
)

N_EVAL = 30  # tasks per split for the policy checks


@pytest.fixture(scope="module")
def world() -> ToolWorld:
    return build_toolworld(seed=0, n_train=70, n_test=N_EVAL)


def _dump(world: World) -> dict[str, Any]:
    return {
        "tools": sorted(world.suite.tools),
        "schemas": [world.suite.tools[name].schema for name in sorted(world.suite.tools)],
        "splits": {split: [task.to_dict() for task in tasks] for split, tasks in world.splits.items()},
    }


def _all_tasks(world: World) -> list[Task]:
    return [task for tasks in world.splits.values() for task in tasks]


# ------------------------------------------------------------------------------------ determinism
def test_same_seed_gives_identical_world() -> None:
    assert _dump(build_toolworld(3, 21, 9)) == _dump(build_toolworld(3, 21, 9))


def test_different_seeds_differ() -> None:
    a, b = build_toolworld(0, 21, 9), build_toolworld(1, 21, 9)
    assert set(a.suite.tools) != set(b.suite.tools)
    queries_a = [t.query for t in _all_tasks(a)]
    queries_b = [t.query for t in _all_tasks(b)]
    assert queries_a != queries_b


def test_independent_of_hash_seed() -> None:
    code = (
        "import json, hashlib; from toolmaster.worlds.toolworld import build_toolworld; "
        "w = build_toolworld(5, 14, 6); "
        "d = {s: [t.to_dict() for t in ts] for s, ts in w.splits.items()}; "
        "print(hashlib.sha256(json.dumps([sorted(w.suite.tools), d], sort_keys=True).encode()).hexdigest())"
    )
    digests = set()
    for hash_seed in ("1", "977"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        digests.add(out.stdout.strip())
    assert len(digests) == 1


# ---------------------------------------------------------------------------------------- splits
def test_api_shape(world: ToolWorld) -> None:
    assert world.name == "toolworld"
    assert tuple(world.splits) == SPLITS
    assert len(world.tasks("train")) == 70
    for split in SPLITS[1:]:
        assert len(world.tasks(split)) == N_EVAL
    assert len(FAMILIES) >= 16
    assert len(UNSEEN_FAMILIES) >= 5 and len(SEEN_FAMILIES) + len(UNSEEN_FAMILIES) == len(FAMILIES)
    assert set(FAMILIES.values()) == {"seen", "unseen"}
    with pytest.raises(ConfigError):
        build_toolworld(0, n_train=-1)
    with pytest.raises(ConfigError, match="per_task, per_family"):
        build_toolworld(0, variants="sometimes")


def test_splits_use_the_right_families_balanced(world: ToolWorld) -> None:
    expected = {
        "train": set(SEEN_FAMILIES),
        "test_seen": set(SEEN_FAMILIES),
        "test_unseen": set(UNSEEN_FAMILIES),
        "test_evolved": set(SEEN_FAMILIES),
    }
    for split, families in expected.items():
        counts = collections.Counter(task.family for task in world.tasks(split))
        assert set(counts) == families, split
        assert max(counts.values()) - min(counts.values()) <= 1, (split, counts)
        assert all(task.split == split for task in world.tasks(split))
    for split in SPLITS:
        for task in world.tasks(split):
            assert world.variants[task.metadata["variant"]].evolved == (split == "test_evolved")


def test_unseen_families_absent_from_train(world: ToolWorld) -> None:
    train_families = {task.family for task in world.tasks("train")}
    assert not train_families & set(UNSEEN_FAMILIES)


def test_evolved_tool_names_absent_from_train(world: ToolWorld) -> None:
    train_tools = {name for task in world.tasks("train") for name in task.tool_names}
    evolved_tools = {name for task in world.tasks("test_evolved") for name in task.tool_names}
    unseen_tools = {name for task in world.tasks("test_unseen") for name in task.tool_names}
    assert evolved_tools and not evolved_tools & train_tools
    assert unseen_tools and not unseen_tools & train_tools

    # evolved variants also rename parameters: no evolved argument name occurs in the family's train tasks
    def params(split: str, family: str) -> set[str]:
        return {
            name
            for task in world.tasks(split)
            if task.family == family
            for name in world.variants[task.metadata["variant"]].params["main"].values()
        }

    for family in SEEN_FAMILIES:
        assert params("test_evolved", family) and not params("test_evolved", family) & params("train", family)


def test_test_seen_tasks_are_new(world: ToolWorld) -> None:
    train_queries = {task.query for task in world.tasks("train")}
    assert not any(task.query in train_queries for task in world.tasks("test_seen"))


# ---------------------------------------------------------------------------------------- records
def test_tasks_are_well_formed(world: ToolWorld) -> None:
    tasks = _all_tasks(world)
    ids = [task.id for task in tasks]
    assert len(ids) == len(set(ids))
    for task in tasks:
        assert re.fullmatch(r"tw-[a-z_]+-[a-z]+-\d{4}", task.id), task.id
        assert task.family in FAMILIES
        assert 2 <= len(task.tool_names) <= 4
        assert len(set(task.tool_names)) == len(task.tool_names)
        assert all(name in world.suite for name in task.tool_names)
        assert world.suite.subset(task.tool_names)
        assert task.answer and isinstance(task.answer, str)
        assert task.check(task.answer)
        assert re.search(r"(Answer|Reply)[^.]*\.\s*$|Answer as [^?]+\.?$|\)\.?$", task.query), task.query
        assert task.gold_calls and 1 <= len(task.gold_calls) <= 3
        assert set(task.metadata) >= {"seed", "variant", "conv_key", "intent", "convention", "kind"}
        data = json.loads(json.dumps(task.to_dict()))
        assert Task.from_dict(data) == task


def test_tool_schemas_are_small(world: ToolWorld) -> None:
    assert len(world.suite) == len(set(world.suite.tools))
    for tool in world.suite.tools.values():
        assert len(tool.description.split()) < 25, tool.description
        assert 1 <= len(tool.parameters["properties"]) <= 3, tool.name
        assert re.fullmatch(r"[a-z]+_[a-z]+", tool.name), tool.name
        assert tool.family in FAMILIES


def test_gold_calls_execute_without_errors(world: ToolWorld) -> None:
    for task in _all_tasks(world):
        env = ToolEnv(world.suite, trial_budget=2)
        env.reset(task)
        for call in task.gold_calls:
            record = env.execute(call["name"], call["arguments"], EXECUTION)
            assert record.ok, (task.id, call, record.observation)
        assert env.counters["execution_errors"] == 0


def test_decoys_do_something_different(world: ToolWorld) -> None:
    checked = collections.Counter()
    for task in _all_tasks(world):
        variant = world.variants[task.metadata["variant"]]
        decoy = variant.roles["decoy"]
        assert decoy in task.tool_names
        main_call = next(call for call in task.gold_calls if call["name"] == variant.roles["main"])
        decoy_props = world.suite.tools[decoy].parameters["properties"]
        decoy_args = {k: v for k, v in main_call["arguments"].items() if k in decoy_props}
        env = ToolEnv(world.suite, trial_budget=2)
        env.reset(task)
        real = env.execute(main_call["name"], main_call["arguments"], TRIAL)
        fake = env.execute(decoy, decoy_args, TRIAL)
        assert real.ok and fake.ok, (task.id, real.observation, fake.observation)
        assert real.observation != fake.observation, task.id
        checked[task.family] += 1
    assert set(checked) == set(FAMILIES)


def test_initial_state_is_never_mutated(world: ToolWorld) -> None:
    for task in world.tasks("train")[:21]:
        before = json.dumps(task.initial_state, sort_keys=True)
        run_policy(expert_policy(world, task), task, ToolEnv(world.suite, trial_budget=2), random.Random(0))
        assert json.dumps(task.initial_state, sort_keys=True) == before


# ----------------------------------------------------------------------------- the point of the world
def _play(world: World, tasks: list[Task], policy_for: Any, budget: int) -> list[ScriptedEpisode]:
    episodes = []
    for i, task in enumerate(tasks):
        env = ToolEnv(world.suite, trial_budget=budget)
        episodes.append(run_policy(policy_for(world, task), task, env, random.Random(i)))
    return episodes


def _rate(episodes: list[ScriptedEpisode]) -> float:
    return sum(ep.correct for ep in episodes) / len(episodes)


@pytest.fixture(scope="module")
def played(world: ToolWorld) -> dict[str, dict[str, list[ScriptedEpisode]]]:
    out: dict[str, dict[str, list[ScriptedEpisode]]] = {}
    for split in SPLITS:
        tasks = world.tasks(split, limit=N_EVAL)
        out[split] = {
            "docs": _play(world, tasks, docs_only_policy, 2),
            "expert": _play(world, tasks, expert_policy, 2),
            "expert_no_trials": _play(world, tasks, expert_policy, 0),
        }
    return out


@pytest.mark.parametrize("split", SPLITS)
def test_docs_only_fails_and_expert_succeeds(played: dict[str, Any], split: str) -> None:
    docs, expert = _rate(played[split]["docs"]), _rate(played[split]["expert"])
    assert docs <= 0.5, (split, docs)
    assert expert >= 0.95, (split, expert)
    assert expert - docs >= 0.4, (split, docs, expert)


@pytest.mark.parametrize("split", SPLITS)
def test_expert_really_trials(played: dict[str, Any], split: str) -> None:
    episodes = played[split]["expert"]
    trials = [sum(step.kind == "trial" for step in ep.steps) for ep in episodes]
    assert all(n <= 2 for n in trials)
    assert sum(n > 0 for n in trials) >= 0.9 * len(episodes)
    for ep in episodes:
        assert all(record is None or record.error != OVER_BUDGET for record in ep.records)
        assert ep.steps[-1].kind == "answer"
        assert all(step.thought for step in ep.steps)


@pytest.mark.parametrize("split", SPLITS)
def test_docs_only_never_trials(played: dict[str, Any], split: str) -> None:
    for ep in played[split]["docs"]:
        assert not any(step.kind == "trial" for step in ep.steps)
        assert sum(step.kind == "call" for step in ep.steps) <= 3


def test_expert_without_trials_does_worse(played: dict[str, Any]) -> None:
    for split in SPLITS:
        with_trials = _rate(played[split]["expert"])
        without = _rate(played[split]["expert_no_trials"])
        assert without <= with_trials - 0.2, (split, with_trials, without)
        # refused trials are noticed once; the expert then acts with execution calls
        for ep in played[split]["expert_no_trials"]:
            assert sum(step.kind == "trial" for step in ep.steps) <= 1
            assert ep.steps[-1].kind == "answer"


def test_expert_does_not_read_the_solution(world: ToolWorld) -> None:
    """Blanking gold calls, answer and convention changes nothing: corrections come from observations."""
    for task in world.tasks("test_seen") + world.tasks("test_unseen") + world.tasks("test_evolved"):
        data = task.to_dict()
        data["gold_calls"], data["answer"] = [], "?"
        data["metadata"] = {k: v for k, v in data["metadata"].items() if k not in ("convention", "conv_key")}
        blind = Task.from_dict(data)
        policy = expert_policy(world, blind)
        ep = run_policy(policy, blind, ToolEnv(world.suite, trial_budget=2), random.Random(7))
        ref = run_policy(
            expert_policy(world, task), task, ToolEnv(world.suite, trial_budget=2), random.Random(7)
        )
        assert ep.answer == ref.answer, task.id


def test_expert_thoughts_vary_with_rng(world: ToolWorld) -> None:
    thoughts = set()
    for seed in range(8):
        for task in world.tasks("train")[:7]:
            ep = run_policy(expert_policy(world, task), task, ToolEnv(world.suite, 2), random.Random(seed))
            thoughts.update(step.thought for step in ep.steps)
    assert len(thoughts) >= 40


def test_trials_keep_the_real_state_safe(world: ToolWorld) -> None:
    """Orders are stateful: the expert's trial orders stay in the sandbox; the real stock moves once."""
    tasks = [task for task in world.tasks("train") if task.family == "orders"]
    assert tasks
    for task in tasks:
        env = ToolEnv(world.suite, trial_budget=2)
        ep = run_policy(expert_policy(world, task), task, env, random.Random(0))
        assert ep.correct
        item, units = task.metadata["intent"]["item"], task.metadata["intent"]["units"]
        start = task.initial_state["stock"][item]["on_hand"]
        assert env.state["stock"][item]["on_hand"] == start - units
        assert len(env.state["orders"]) == 1


def test_policies_work_with_a_plain_world(world: ToolWorld) -> None:
    plain = World(name="toolworld", suite=world.suite, splits=world.splits)
    task = world.tasks("test_unseen")[0]
    ep = run_policy(expert_policy(plain, task), task, ToolEnv(plain.suite, 2), random.Random(0))
    assert ep.correct
