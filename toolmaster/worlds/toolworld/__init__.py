"""toolworld: the embedded, seeded world of unfamiliar tools (seen and unseen families, 4 splits).

Every family is built so that calling its tools from the docs alone often fails, while one or two trial
calls reveal what the docs leave out: an argument format shown by an error message, or a silent
convention (cents, hours, pack sizes, rotation direction, ...) exposed by a probe with an obvious answer.

Variants (``variants=``):
- ``per_task`` (default): every task draws its own variant of its family (own tool and argument names,
  docs wording, hidden convention) from a per-task seeded stream; tool names never repeat across tasks.
  What carries over from task to task is the trial skill, not a memorised name or format.
- ``per_family``: one variant per family shared by all its tasks (plus one evolved variant per seen family):
  the "static tools" control, where memorising a tool's convention pays.

Task records carry ``metadata["decoy"]``: the names of the task's decoy tools (related, documented, never the
answer; ``toolmaster.analyze`` counts calls to them). Records built before this key existed lack it (unknown).

Task records also carry ``metadata["feedback"]``, how much the task's tool feedback reveals (``feedback.py``):
``names_fix`` (an error states the exact fix: the template, the accepted values, the value wanted),
``example`` (an error quotes an example to adapt, e.g. an id of another number), ``silent`` (nothing is
said; only a trial with a known input shows the convention), or ``none`` (no hidden convention on the
task's gold path: the control). A task's level is its least revealing quirk's level;
``metadata["feedback_quirks"]`` lists them all ({quirk: level}). Every level of ``LEVELS`` occurs in the
seen and in the unseen families, so in every split (and in the first 60 tasks of each test split, for
seeds 0-39); ``toolmaster.analyze`` reports success, repeated failure and trial use per level, split and
arm. Records built before these keys existed lack them.

Splits: ``train`` and ``test_seen`` use the seen families, ``test_unseen`` the held-out families,
``test_evolved`` the evolved variant space of the seen families (renamed tools and arguments, reworded
docs, conventions that no non-evolved variant has). Under ``per_task`` the splits are disjoint by
construction: a seen family's non-evolved conventions are partitioned between train and test_seen by a
stable hash of the convention key (``common.held_out``), and a variant is redrawn until it falls in its
split's part. Under ``per_family`` test_seen reuses train's tools (the control). Tasks rotate through the
families of their split, so any prefix of a split is balanced.

``expert_policy`` / ``docs_only_policy`` give each task's scripted expert (trials first, corrections
parsed from real observations) and its docs-only baseline (no trials, takes the docs at face value); both
resolve the task's own variant, also for a plain ``World`` (rebuilt from the build recorded in the task).
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field
from typing import Any

from toolmaster.envs.task import Task
from toolmaster.envs.tool import ToolSuite
from toolmaster.errors import ConfigError
from toolmaster.worlds.base import World
from toolmaster.worlds.scripted import Policy
from toolmaster.worlds.toolworld.common import FamilySpec, NameGen, PolicyGen, Variant, held_out
from toolmaster.worlds.toolworld.families import ALL, BY_NAME
from toolmaster.worlds.toolworld.feedback import ALL_LEVELS, LEVELS, task_level

SPLITS = ("train", "test_seen", "test_unseen", "test_evolved")
VARIANT_MODES = ("per_task", "per_family")
FAMILIES: dict[str, str] = {family.name: "seen" if family.seen else "unseen" for family in ALL}
SEEN_FAMILIES: tuple[str, ...] = tuple(name for name, kind in FAMILIES.items() if kind == "seen")
UNSEEN_FAMILIES: tuple[str, ...] = tuple(name for name, kind in FAMILIES.items() if kind == "unseen")
EVOLVED = "~evolved"
MAX_REDRAWS = 400  # draws of a variant until it falls in its split's part of the convention space


@dataclass
class ToolWorld(World):
    """A World that also keeps the variants its tasks were generated from (keyed by ``variant.key``)."""

    seed: int = 0
    variants: dict[str, Variant] = field(default_factory=dict)
    mode: str = "per_task"


def _stream(seed: int, index: int) -> random.Random:
    """An independent seeded stream per purpose (never the global random, never hash())."""
    return random.Random(seed * 1_000_003 + index * 7_919 + 17)


def make_variants(seed: int) -> dict[str, Variant]:
    """The ``per_family`` variants: every family's base variant plus an evolved one per seen family."""
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


def draw_variant(
    family: FamilySpec, rng: random.Random, names: NameGen, evolved: bool, pool: str | None
) -> Variant:
    """A fresh variant of ``family``; ``pool`` ('train' / 'test_seen') keeps only its part of the space."""
    for _ in range(MAX_REDRAWS):
        variant = family.make_variant(rng, names, evolved)
        if pool is None or held_out(family.name, variant.convention) == (pool == "test_seen"):
            return variant
    raise ConfigError(
        f"toolworld family {family.name!r} drew no {pool} convention in {MAX_REDRAWS} tries; "
        "its convention space is too small to split between train and test_seen"
    )


def _plan(n_train: int, n_test: int) -> list[tuple[str, list[FamilySpec], bool, int]]:
    seen = [family for family in ALL if family.seen]
    unseen = [family for family in ALL if not family.seen]
    return [
        ("train", seen, False, n_train),
        ("test_seen", seen, False, n_test),
        ("test_unseen", unseen, False, n_test),
        ("test_evolved", seen, True, n_test),
    ]


def build_toolworld(
    seed: int = 0, n_train: int = 200, n_test: int = 50, variants: str = "per_task"
) -> ToolWorld:
    """The toolworld for ``seed``: ``n_train`` train tasks and ``n_test`` tasks per test split."""
    if n_train < 0 or n_test < 0:
        raise ConfigError(f"n_train and n_test must be >= 0, got {n_train} and {n_test}")
    if variants not in VARIANT_MODES:
        raise ConfigError(f"tools.world.variants must be one of {', '.join(VARIANT_MODES)}, got {variants!r}")
    per_task = variants == "per_task"
    shared = {} if per_task else make_variants(seed)
    names = NameGen(_stream(seed, 0))
    build = {"variants": variants, "n_train": n_train, "n_test": n_test}
    world_variants: dict[str, Variant] = dict(shared)
    used: set[tuple[str, str]] = set()
    splits: dict[str, list[Task]] = {}
    for index, (split, families, evolved, count) in enumerate(_plan(n_train, n_test), start=1):
        rng = _stream(seed, index)
        tasks: list[Task] = []
        for i in range(count):
            family = families[i % len(families)]
            task_id = f"tw-{split}-{family.short}-{i:04d}"
            if per_task:
                pool = split if family.seen and not evolved else None
                variant_rng = random.Random(f"toolworld:{seed}:{task_id}")
                variant = draw_variant(family, variant_rng, names, evolved, pool)
                variant.key = f"{variant.key}/{task_id}"
                world_variants[variant.key] = variant
            else:
                variant = shared[family.name + (EVOLVED if evolved else "")]
            for _ in range(100):  # new tasks only: a query seen in an earlier split or task is redrawn
                # (a draft's ``dedupe`` text, where set, stands for its query: see cityfacts' census kind)
                draft = family.make_task(variant, rng)
                if (family.name, draft.dedupe or draft.query) not in used:
                    break
            used.add((family.name, draft.dedupe or draft.query))
            quirks = family.feedback(variant, draft.kind)
            tool_names = variant.tool_names
            rng.shuffle(tool_names)
            tasks.append(
                Task(
                    id=task_id,
                    query=draft.query,
                    answer=draft.answer,
                    tool_names=tool_names,
                    split=split,
                    family=family.name,
                    initial_state=draft.initial_state,
                    gold_calls=draft.gold_calls,
                    metadata={
                        "seed": seed,
                        "build": dict(build),
                        "variant": variant.key,
                        "conv_key": variant.convention,
                        "kind": draft.kind,
                        "intent": draft.intent,
                        "convention": draft.convention,
                        "decoy": sorted(
                            name for role, name in variant.roles.items() if role.startswith("decoy")
                        ),
                        "feedback": task_level(quirks),
                        "feedback_quirks": quirks,
                    },
                )
            )
        splits[split] = tasks
    suite = ToolSuite.of(tool for variant in world_variants.values() for tool in variant.tools)
    return ToolWorld(
        name="toolworld", suite=suite, splits=splits, seed=seed, variants=world_variants, mode=variants
    )


@functools.lru_cache(maxsize=8)
def _variants_for_build(seed: int, variants: str, n_train: int, n_test: int) -> dict[str, Variant]:
    if variants == "per_family":
        return make_variants(seed)
    return build_toolworld(seed, n_train, n_test, variants).variants


def _resolve(world: World, task: Task) -> tuple[FamilySpec, Variant]:
    if task.family not in BY_NAME:
        raise KeyError(f"task {task.id!r} is not a toolworld task (family {task.family!r})")
    key = task.metadata["variant"]
    own = world.variants.get(key) if isinstance(world, ToolWorld) else None
    if own is not None and sorted(own.tool_names) == sorted(task.tool_names):
        return BY_NAME[task.family], own
    # a plain World (e.g. rebuilt by a stage) or another build: rebuild the variants from the task's record
    build: dict[str, Any] = task.metadata.get("build") or {"variants": "per_family"}
    variants = _variants_for_build(
        int(task.metadata["seed"]),
        str(build["variants"]),
        int(build.get("n_train", 0)),
        int(build.get("n_test", 0)),
    )
    return BY_NAME[task.family], variants[key]


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
    "ALL_LEVELS",
    "EVOLVED",
    "FAMILIES",
    "LEVELS",
    "SEEN_FAMILIES",
    "SPLITS",
    "UNSEEN_FAMILIES",
    "VARIANT_MODES",
    "ToolWorld",
    "build_toolworld",
    "docs_only_policy",
    "draw_variant",
    "expert_policy",
    "make_variants",
]
