"""toolworld feedback levels: every task has one, every level occurs in every split (of the default build and
of the prefixes a short evaluation sees), levels are deterministic, and they mean what they say.

What they mean, checked through a real ToolEnv: the docs-only baseline solves every ``none`` task (nothing is
hidden) and no other; the scripted expert *without trials* still solves every ``example`` and ``names_fix``
task (the execution error reveals the fix, so a retry finds it) but few ``silent`` ones (nothing is said, only
a trial with a known input reveals the convention).
"""

from __future__ import annotations

import collections
import importlib
import random

import pytest

from toolmaster.envs.environment import TRIAL, ToolEnv
from toolmaster.envs.task import Task
from toolmaster.worlds.scripted import run_policy
from toolmaster.worlds.toolworld import (
    ALL_LEVELS,
    LEVELS,
    SEEN_FAMILIES,
    SPLITS,
    UNSEEN_FAMILIES,
    ToolWorld,
    build_toolworld,
    docs_only_policy,
    expert_policy,
)
from toolmaster.worlds.toolworld import feedback as fb
from toolmaster.worlds.toolworld.families import ALL, cityfacts

TEST_SPLITS = SPLITS[1:]


@pytest.fixture(scope="module")
def default() -> ToolWorld:
    return build_toolworld(seed=0, n_train=200, n_test=50)  # the sizes of conf/tools/toolworld.yaml


def _levels(world: ToolWorld, split: str, limit: int | None = None) -> collections.Counter[str]:
    return collections.Counter(task.metadata["feedback"] for task in world.tasks(split, limit=limit))


def test_every_task_has_a_level_from_its_quirks(default: ToolWorld) -> None:
    for split in SPLITS:
        for task in default.tasks(split):
            quirks = task.metadata["feedback_quirks"]
            assert isinstance(quirks, dict) and set(quirks.values()) <= set(LEVELS), task.id
            assert task.metadata["feedback"] == fb.task_level(quirks) in ALL_LEVELS, task.id
            assert (task.metadata["feedback"] == fb.NONE) == (not quirks), task.id


def test_every_level_in_every_split_of_the_default_build(default: ToolWorld) -> None:
    for split in SPLITS:
        assert set(_levels(default, split)) >= set(LEVELS), (split, _levels(default, split))


def test_every_level_in_seen_and_in_unseen_families(default: ToolWorld) -> None:
    by_kind: dict[str, set[str]] = collections.defaultdict(set)
    for split in SPLITS:
        for task in default.tasks(split):
            by_kind["seen" if task.family in SEEN_FAMILIES else "unseen"].add(task.metadata["feedback"])
    assert by_kind["seen"] >= set(LEVELS) and by_kind["unseen"] >= set(LEVELS), by_kind
    assert set(UNSEEN_FAMILIES) <= {task.family for task in default.tasks("test_unseen")}


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_every_level_in_a_60_task_prefix_of_each_test_split(seed: int) -> None:
    world = build_toolworld(seed=seed, n_train=200, n_test=60)
    for split in TEST_SPLITS:
        assert set(_levels(world, split, 60)) >= set(LEVELS), (seed, split, _levels(world, split, 60))


def test_every_level_in_a_30_task_prefix_for_the_default_seed() -> None:
    world = build_toolworld(seed=0, n_train=200, n_test=30)
    for split in SPLITS:
        assert set(_levels(world, split, 30)) >= set(LEVELS), (split, _levels(world, split, 30))


@pytest.mark.parametrize("mode", ["per_task", "per_family"])
def test_levels_are_deterministic_for_a_seed(mode: str) -> None:
    def levels(world: ToolWorld) -> list[tuple[str, str, dict[str, str]]]:
        return [
            (task.id, task.metadata["feedback"], task.metadata["feedback_quirks"])
            for split in SPLITS
            for task in world.tasks(split)
        ]

    first = levels(build_toolworld(5, 40, 20, mode))
    assert first == levels(build_toolworld(5, 40, 20, mode))
    assert {level for _, level, _ in first} >= set(LEVELS)


def test_each_family_states_its_quirks() -> None:
    for family in ALL:
        module = importlib.import_module(family.make_task.__module__)
        assert module.FEEDBACK and set(module.FEEDBACK.values()) <= set(LEVELS), family.name
        assert family.feedback is module.feedback, family.name


def test_task_level_is_the_least_revealing_quirk() -> None:
    assert fb.task_level({}) == fb.NONE
    assert fb.task_level({"a": fb.NAMES_FIX, "b": fb.EXAMPLE}) == fb.EXAMPLE
    assert fb.task_level({"a": fb.NAMES_FIX, "b": fb.SILENT, "c": fb.EXAMPLE}) == fb.SILENT
    with pytest.raises(ValueError, match="unknown feedback level"):
        fb.task_level({"a": "loud"})
    with pytest.raises(KeyError):
        fb.quirks({"a": fb.SILENT}, "b")
    assert fb.substream("x", [1, 2]).random() == fb.substream("x", [1, 2]).random()


def test_levels_mean_what_they_say() -> None:
    world = build_toolworld(seed=1, n_train=66, n_test=40)
    solved: dict[tuple[str, str], list[bool]] = collections.defaultdict(list)
    for split in SPLITS:
        for i, task in enumerate(world.tasks(split)):
            level = task.metadata["feedback"]
            for arm, policy_for, budget in (("docs", docs_only_policy, 2), ("blind", expert_policy, 0)):
                env = ToolEnv(world.suite, trial_budget=budget)
                solved[(arm, level)].append(
                    run_policy(policy_for(world, task), task, env, random.Random(i)).correct
                )

    def rate(arm: str, level: str) -> float:
        return sum(solved[(arm, level)]) / len(solved[(arm, level)])

    assert rate("docs", fb.NONE) == 1.0  # nothing hidden: the docs suffice
    assert max(rate("docs", level) for level in LEVELS) <= 0.05  # a hidden convention defeats them
    assert rate("blind", fb.EXAMPLE) == rate("blind", fb.NAMES_FIX) == 1.0  # the execution error reveals it
    assert rate("blind", fb.SILENT) <= 0.2  # nothing is said: only a trial reveals it


def _first_error(world: ToolWorld, task: Task, **logical: str) -> str:
    """The observation of the task's main tool called with its gold arguments but ``logical`` ones replaced."""
    variant = world.variants[task.metadata["variant"]]
    call = next(c for c in task.gold_calls if c["name"] == variant.roles["main"])
    env = ToolEnv(world.suite, trial_budget=1)
    env.reset(task)
    record = env.execute(call["name"], {**call["arguments"], **variant.args("main", **logical)}, TRIAL)
    assert not record.ok, record.observation
    return record.observation


def test_what_the_errors_of_the_changed_families_reveal(default: ToolWorld) -> None:
    # seen names_fix: the seen directory's error names the very id ("did you mean"); the evolved one only
    # shows an example id (of another number)
    for split, level in (("test_seen", fb.NAMES_FIX), ("test_evolved", fb.EXAMPLE)):
        task = next(t for t in default.tasks(split) if t.metadata["kind"] == "by_number")
        assert task.metadata["feedback"] == level
        observation = _first_error(default, task, id=str(task.metadata["intent"]["number"]))
        gold_id = task.gold_calls[0]["arguments"]
        assert any(repr(v) in observation for v in gold_id.values()) == (level == fb.NAMES_FIX), observation
    # unseen example: a census question's error quotes the field of another census year, to adapt
    census = [t for t in default.tasks("test_unseen") if t.metadata["kind"] == "census"]
    assert census and all(t.metadata["feedback"] == fb.EXAMPLE for t in census)
    for task in census:
        year = task.metadata["intent"]["year"]
        observation = _first_error(default, task, field=f"population {year}")
        field_arg = default.variants[task.metadata["variant"]].params["main"]["field"]
        gold_field = task.gold_calls[0]["arguments"][field_arg]
        assert "census counts: e.g." in observation and repr(gold_field) not in observation, observation
        assert cityfacts.learn_census(observation, year) == gold_field
    # each census slot asks its own years and is deduplicated as its old task: no question repeats
    queries = [t.query for t in default.tasks("test_unseen")]
    assert len(queries) == len(set(queries))
