"""The scripted-policy scorecard of a toolworld: success per split of docs-only, expert, expert without trials.

    python -m toolmaster.worlds.toolworld.scorecard --seeds 0 1 2 --n 30 [--variants per_family] [--by-family]

Plays each policy through a real ``ToolEnv`` (trial budget 2, or 0 for the no-trial expert) on the first
``--n`` tasks of every split and prints a markdown table (rates pooled over seeds, with episode counts).
"""

from __future__ import annotations

import argparse
import collections
import random
from collections.abc import Callable

from toolmaster.envs.environment import ToolEnv
from toolmaster.envs.task import Task
from toolmaster.worlds.base import World
from toolmaster.worlds.scripted import Policy, run_policy
from toolmaster.worlds.toolworld import (
    SPLITS,
    VARIANT_MODES,
    build_toolworld,
    docs_only_policy,
    expert_policy,
)

ARMS: dict[str, tuple[Callable[[World, Task], Policy], int]] = {
    "docs-only": (docs_only_policy, 2),
    "expert with trials": (expert_policy, 2),
    "expert, trial budget 0": (expert_policy, 0),
}


def score(world: World, tasks: list[Task], arm: str) -> list[bool]:
    """Whether each task was solved by ``arm`` (one episode per task, seeded by its position)."""
    policy_for, budget = ARMS[arm]
    return [
        run_policy(
            policy_for(world, task), task, ToolEnv(world.suite, trial_budget=budget), random.Random(i)
        ).correct
        for i, task in enumerate(tasks)
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--n", type=int, default=30, help="tasks per split and seed")
    parser.add_argument("--variants", choices=VARIANT_MODES, default="per_task")
    parser.add_argument("--by-family", action="store_true", help="one row per split and family")
    args = parser.parse_args(argv)
    hits: dict[tuple[str, str], dict[str, list[bool]]] = collections.defaultdict(
        lambda: collections.defaultdict(list)
    )
    for seed in args.seeds:
        world = build_toolworld(seed, n_train=args.n, n_test=args.n, variants=args.variants)
        for split in SPLITS:
            tasks = world.tasks(split)
            for arm in ARMS:
                for task, ok in zip(tasks, score(world, tasks, arm)):
                    hits[(split, task.family if args.by_family else "")][arm].append(ok)
    seeds = ",".join(map(str, args.seeds))
    print(f"| split ({args.variants}, seeds {seeds}) | " + " | ".join(ARMS) + " |")
    print("|---" * (len(ARMS) + 1) + "|")
    for (split, family), arms in hits.items():
        label = f"{split} {family}".strip()
        cells = [f"{sum(arms[a]) / len(arms[a]):.2f} ({len(arms[a])})" for a in ARMS]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
