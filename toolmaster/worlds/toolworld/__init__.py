"""toolworld: the embedded, seeded world of unfamiliar tools (10 families, 4 splits).

Every family is built so that calling its tools from the docs alone often fails, while one or two trial
calls reveal what the docs leave out: an argument format shown by an error message, or a silent
convention (cents, hours, pack sizes, rotation direction, ...) exposed by a probe with an obvious answer.

Splits: ``train`` and ``test_seen`` use the 7 seen families; ``test_unseen`` the 3 families never in train;
``test_evolved`` uses an evolved variant of each seen family (new tool and argument names, reworded docs,
changed conventions), so none of its tool names occur in train. Tasks rotate through the families of
their split, so any prefix of a split is balanced.

``expert_policy`` / ``docs_only_policy`` give each task's scripted expert (trials first, corrections
parsed from real observations) and its docs-only baseline (no trials, takes the docs at face value).
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field

from toolmaster.envs.task import Task
from toolmaster.envs.tool import ToolSuite
from toolmaster.worlds.base import World
from toolmaster.worlds.scripted import Policy
from toolmaster.worlds.toolworld.common import FamilySpec, NameGen, PolicyGen, Variant
from toolmaster.worlds.toolworld.families import ALL, BY_NAME

SPLITS = ("train", "test_seen", "test_unseen", "test_evolved")
FAMILIES: dict[str, str] = {family.name: "seen" if family.seen else "unseen" for family in ALL}
SEEN_FAMILIES: tuple[str, ...] = tuple(name for name, kind in FAMILIES.items() if kind == "seen")
UNSEEN_FAMILIES: tuple[str, ...] = tuple(name for name, kind in FAMILIES.items() if kind == "unseen")
EVOLVED = "~evolved"


@dataclass
class ToolWorld(World):
    """A World that also keeps the family variants its tasks were generated from."""

    seed: int = 0
    variants: dict[str, Variant] = field(default_factory=dict)


def _stream(seed: int, index: int) -> random.Random:
    """An independent seeded stream per purpose (never the global random, never hash())."""
    return random.Random(seed * 1_000_003 + index * 7_919 + 17)


def make_variants(seed: int) -> dict[str, Variant]:
    """All tool variants of the world: every family's base variant plus an evolved one per seen family."""
    rng = _stream(seed, 0)
    names = NameGen(rng)
    variants: dict[str, Variant] = {}
    for family in ALL:
        variant = family.make_variant(rng, names, False)
        variants[variant.key] = variant
    for family in ALL:
        if family.seen:
            variant = family.make_variant(rng, names, True)
            variants[variant.key] = variant
    return variants


@functools.lru_cache(maxsize=8)
def _variants_for_seed(seed: int) -> dict[str, Variant]:
    return make_variants(seed)


def build_toolworld(seed: int = 0, n_train: int = 200, n_test: int = 50) -> ToolWorld:
    """The toolworld for ``seed``: ``n_train`` train tasks and ``n_test`` tasks per test split."""
    if n_train < 0 or n_test < 0:
        raise ValueError(f"n_train and n_test must be >= 0, got {n_train} and {n_test}")
    variants = make_variants(seed)
    suite = ToolSuite.of(tool for variant in variants.values() for tool in variant.tools)
    seen = [family for family in ALL if family.seen]
    unseen = [family for family in ALL if not family.seen]
    plan: list[tuple[str, list[FamilySpec], bool, int]] = [
        ("train", seen, False, n_train),
        ("test_seen", seen, False, n_test),
        ("test_unseen", unseen, False, n_test),
        ("test_evolved", seen, True, n_test),
    ]
    used: set[tuple[str, str]] = set()
    splits: dict[str, list[Task]] = {}
    for index, (split, families, evolved, count) in enumerate(plan, start=1):
        rng = _stream(seed, index)
        tasks: list[Task] = []
        for i in range(count):
            family = families[i % len(families)]
            variant = variants[family.name + (EVOLVED if evolved else "")]
            for _ in range(100):  # new tasks only: a query seen in an earlier split or task is redrawn
                draft = family.make_task(variant, rng)
                if (family.name, draft.query) not in used:
                    break
            used.add((family.name, draft.query))
            tool_names = variant.tool_names
            rng.shuffle(tool_names)
            tasks.append(
                Task(
                    id=f"tw-{split}-{family.short}-{i:04d}",
                    query=draft.query,
                    answer=draft.answer,
                    tool_names=tool_names,
                    split=split,
                    family=family.name,
                    initial_state=draft.initial_state,
                    gold_calls=draft.gold_calls,
                    metadata={
                        "seed": seed,
                        "variant": variant.key,
                        "kind": draft.kind,
                        "intent": draft.intent,
                        "convention": draft.convention,
                    },
                )
            )
        splits[split] = tasks
    return ToolWorld(name="toolworld", suite=suite, splits=splits, seed=seed, variants=variants)


def _resolve(world: World, task: Task) -> tuple[FamilySpec, Variant]:
    if task.family not in BY_NAME:
        raise KeyError(f"task {task.id!r} is not a toolworld task (family {task.family!r})")
    variants = (
        world.variants if isinstance(world, ToolWorld) else _variants_for_seed(int(task.metadata["seed"]))
    )
    return BY_NAME[task.family], variants[task.metadata["variant"]]


def expert_policy(world: World, task: Task) -> Policy:
    """The scripted expert for ``task``: trials (a natural guess, then a correction), execution, answer."""
    family, variant = _resolve(world, task)

    def policy(episode_task: Task, rng: random.Random) -> PolicyGen:
        return family.expert(variant, episode_task, rng)

    return policy


def docs_only_policy(world: World, task: Task) -> Policy:
    """The docs-only baseline for ``task``: no trials, natural reading of the docs, results at face value."""
    family, variant = _resolve(world, task)

    def policy(episode_task: Task, rng: random.Random) -> PolicyGen:
        return family.docs_only(variant, episode_task, rng)

    return policy


__all__ = [
    "EVOLVED",
    "FAMILIES",
    "SEEN_FAMILIES",
    "SPLITS",
    "UNSEEN_FAMILIES",
    "ToolWorld",
    "build_toolworld",
    "docs_only_policy",
    "expert_policy",
    "make_variants",
]
