"""toolworld variants: per-task tool variants, disjoint train / test conventions, the per_family control.

Under ``variants=per_task`` every task has its own tools and hidden convention; no tool name and no
(family, convention) of a test split occurs in train, for several seeds. Under ``per_family`` (the
static-tools control) test_seen reuses train's tools, as the old world did.
"""

from __future__ import annotations

import collections
import dataclasses
import random
import time
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from toolmaster.envs.environment import EXECUTION, ToolEnv
from toolmaster.envs.task import Task
from toolmaster.worlds.base import World
from toolmaster.worlds.scripted import run_policy
from toolmaster.worlds.toolworld import (
    SPLITS,
    ToolWorld,
    build_toolworld,
    docs_only_policy,
    expert_policy,
)
from toolmaster.worlds.toolworld.common import NameGen, held_out
from toolmaster.worlds.toolworld.families import ALL
from toolmaster.worlds.toolworld.scorecard import main as scorecard_main

ROOT = Path(__file__).resolve().parents[3]


def _tasks(world: World, *splits: str) -> list[Task]:
    return [task for split in splits for task in world.tasks(split)]


@pytest.fixture(scope="module")
def worlds() -> dict[int, ToolWorld]:
    return {seed: build_toolworld(seed, n_train=70, n_test=21) for seed in (0, 1, 2)}


# --------------------------------------------------------------------------------- disjointness
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_test_splits_share_no_tool_and_no_convention_with_train(worlds: dict, seed: int) -> None:
    world = worlds[seed]
    train_tools = {name for task in world.tasks("train") for name in task.tool_names}
    train_convs = {(task.family, task.metadata["conv_key"]) for task in world.tasks("train")}
    for split in SPLITS[1:]:
        for task in world.tasks(split):
            assert not set(task.tool_names) & train_tools, (split, task.id)
            assert (task.family, task.metadata["conv_key"]) not in train_convs, (split, task.id)
    # the partition itself: train conventions are never held out, test_seen ones always are
    assert not any(held_out(t.family, t.metadata["conv_key"]) for t in world.tasks("train"))
    assert all(held_out(t.family, t.metadata["conv_key"]) for t in world.tasks("test_seen"))


def test_every_task_has_its_own_tools(worlds: dict) -> None:
    world = worlds[0]
    owner: dict[str, str] = {}
    for task in _tasks(world, *SPLITS):
        variant = world.variants[task.metadata["variant"]]
        assert sorted(variant.tool_names) == sorted(task.tool_names), task.id
        assert task.metadata["conv_key"] == variant.convention
        for name in task.tool_names:
            assert name not in owner, (name, owner.get(name), task.id)
            owner[name] = task.id


def test_train_tasks_of_a_family_vary_their_conventions(worlds: dict) -> None:
    convs: dict[str, set[str]] = collections.defaultdict(set)
    for task in worlds[0].tasks("train"):
        convs[task.family].add(task.metadata["conv_key"])
    for family, keys in convs.items():
        assert len(keys) >= 4, (family, len(keys))  # 10 tasks per family here, drawn from >= 6 conventions


@pytest.mark.parametrize("family", ALL, ids=lambda f: f.name)
def test_convention_spaces_are_wide_and_split(family) -> None:  # noqa: ANN001
    names = NameGen(random.Random(0))
    rng = random.Random(1)
    base = {family.make_variant(rng, names, False).convention for _ in range(300)}
    assert len(base) >= 6, (family.name, len(base))
    if family.seen:
        evolved = {family.make_variant(rng, names, True).convention for _ in range(300)}
        assert len(evolved) >= 6, (family.name, len(evolved))
        assert not evolved & base, family.name  # the evolved space is disjoint from the base space
        pools = collections.Counter(held_out(family.name, key) for key in base)
        assert pools[True] >= 2 and pools[False] >= 4, (family.name, pools)


def test_a_task_sees_only_its_own_tools(worlds: dict) -> None:
    world = worlds[1]
    task = world.tasks("train")[0]
    other = next(t for t in world.tasks("train")[1:] if t.family == task.family)
    env = ToolEnv(world.suite, trial_budget=2)
    env.reset(task)
    assert set(env.tools) == set(task.tool_names)
    call = other.gold_calls[0]
    record = env.execute(call["name"], call["arguments"], EXECUTION)
    assert not record.ok and "unknown tool" in record.observation.lower(), record.observation


# ------------------------------------------------------------------------------- determinism, cost
def test_same_seed_same_world_in_both_modes() -> None:
    for mode in ("per_task", "per_family"):
        a, b = build_toolworld(4, 28, 7, mode), build_toolworld(4, 28, 7, mode)
        assert sorted(a.suite.tools) == sorted(b.suite.tools)
        assert [t.to_dict() for t in _tasks(a, *SPLITS)] == [t.to_dict() for t in _tasks(b, *SPLITS)]
        assert {k: v.convention for k, v in a.variants.items()} == {
            k: v.convention for k, v in b.variants.items()
        }


def test_building_a_thousand_tasks_is_cheap() -> None:
    start = time.process_time()
    world = build_toolworld(0, n_train=1000, n_test=50)
    spent = time.process_time() - start
    assert len(world.tasks("train")) == 1000
    assert len(world.variants) == 1150
    assert spent < 15.0, spent  # about half a second on a laptop core; a generous bound on CPU work


# ------------------------------------------------------------------------------ the static control
def test_per_family_is_the_static_tools_control() -> None:
    world = build_toolworld(0, n_train=28, n_test=14, variants="per_family")
    assert world.mode == "per_family"
    by_family: dict[str, set[tuple[str, ...]]] = collections.defaultdict(set)
    for task in world.tasks("train") + world.tasks("test_seen"):
        by_family[task.family].add(tuple(sorted(task.tool_names)))
    assert all(len(tool_sets) == 1 for tool_sets in by_family.values())  # one tool set per family
    train_tools = {name for task in world.tasks("train") for name in task.tool_names}
    seen_tools = {name for task in world.tasks("test_seen") for name in task.tool_names}
    assert seen_tools <= train_tools  # test_seen reuses train's tools
    evolved_tools = {name for task in world.tasks("test_evolved") for name in task.tool_names}
    assert not evolved_tools & train_tools
    for task in world.tasks("test_seen"):
        assert task.metadata["variant"] == task.family


@pytest.mark.parametrize("mode", ["per_task", "per_family"])
def test_gap_holds_in_both_modes_and_with_a_plain_world(mode: str) -> None:
    """Scripted policies resolve each task's own variant, also from a plain World rebuilt from records."""
    world = build_toolworld(5, n_train=14, n_test=14, variants=mode)
    plain = World(name="toolworld", suite=world.suite, splits=world.splits)
    for split in SPLITS:
        tasks = world.tasks(split)
        expert = [
            run_policy(expert_policy(plain, t), t, ToolEnv(plain.suite, 2), random.Random(i)).correct
            for i, t in enumerate(tasks)
        ]
        docs = [
            run_policy(docs_only_policy(world, t), t, ToolEnv(world.suite, 2), random.Random(i)).correct
            for i, t in enumerate(tasks)
        ]
        assert sum(expert) >= 0.95 * len(tasks), (mode, split, expert)
        assert sum(docs) <= 0.5 * len(tasks), (mode, split, docs)


# --------------------------------------------------------------------------------- config, command
def test_config_defaults_to_per_task_and_builds_either_mode() -> None:
    cfg = OmegaConf.load(ROOT / "toolmaster" / "conf" / "tools" / "toolworld.yaml")
    assert cfg.world.variants == "per_task"
    node = OmegaConf.to_container(cfg.world)
    node.update(seed=3, n_train=7, n_test=3)
    assert instantiate(node).mode == "per_task"
    node["variants"] = "per_family"
    assert instantiate(node).mode == "per_family"


def test_scorecard_prints_one_row_per_split(capsys: pytest.CaptureFixture[str]) -> None:
    scorecard_main(["--n", "7", "--seeds", "0"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| split (per_task, seeds 0) | docs-only | expert with trials |")
    assert [line.split(" | ")[0] for line in lines[2:]] == [f"| {split}" for split in SPLITS]
    assert all("(7)" in line for line in lines[2:])


def test_policies_resolve_a_task_of_another_build() -> None:
    """A task played against a world of another size still gets its own variant (rebuilt from its record)."""
    small, big = build_toolworld(6, n_train=7, n_test=3), build_toolworld(6, n_train=21, n_test=7)
    for task in small.tasks("test_seen") + small.tasks("test_evolved"):
        assert task.metadata["variant"] in big.variants  # same key, other tools: the tools decide
        env = ToolEnv(small.suite, trial_budget=2)
        assert run_policy(expert_policy(big, task), task, env, random.Random(0)).correct, task.id


class _Sealed(dict):
    """A hidden-convention record that no policy may open."""

    def __getitem__(self, key: object) -> None:
        raise AssertionError(f"a scripted policy read the hidden convention {key!r}")

    get = __getitem__


def test_policies_never_read_the_hidden_convention(worlds: dict) -> None:
    """Sealing every variant's conv and data (the tools keep their own copies) changes no answer."""
    world = worlds[2]
    sealed = {
        key: dataclasses.replace(variant, conv=_Sealed(), data=_Sealed())
        for key, variant in world.variants.items()
    }
    blind = ToolWorld(name="toolworld", suite=world.suite, splits=world.splits, seed=2, variants=sealed)
    for task in _tasks(world, *SPLITS)[::3]:
        for policy_for in (expert_policy, docs_only_policy):
            ref = run_policy(policy_for(world, task), task, ToolEnv(world.suite, 2), random.Random(3))
            got = run_policy(policy_for(blind, task), task, ToolEnv(world.suite, 2), random.Random(3))
            assert got.answer == ref.answer, task.id
