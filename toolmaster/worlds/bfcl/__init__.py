"""``tools=bfcl``: the multi-turn categories of the Berkeley Function Calling Leaderboard as a tool world.

Built at run time from the installed ``bfcl-eval`` package (``make bfcl``; nothing of BFCL is copied here):
its eight executable, stateful API classes become tools (``tools.py``, schemas converted by ``schema.py``),
its four multi-turn categories (base, miss_func, miss_param, long_context; 200 entries each) become tasks with
several user turns (``tasks.py``), scored by BFCL's own checker (``scorer.py``), split by scenario into train /
test_seen / test_unseen / test_mixed (``splits.py``). Within a split, tasks are ordered scenario by scenario,
the four categories of a scenario together, so ``data.eval_limit=8`` takes two whole scenarios.

Departures from the leaderboard: the prompts are this framework's protocol (system prompt, trial phase, one
call per assistant turn, ``<answer>`` ends a user turn), so scores are not leaderboard numbers.
"""

from __future__ import annotations

from toolmaster.envs.tool import ToolSuite
from toolmaster.errors import ConfigError
from toolmaster.worlds.base import World
from toolmaster.worlds.bfcl.package import CATEGORIES, CLASS_FILES, function_docs, load_entries
from toolmaster.worlds.bfcl.splits import SPLITS, scenario_splits
from toolmaster.worlds.bfcl.tasks import entry_task
from toolmaster.worlds.bfcl.tools import class_tools

SEEN = ("GorillaFileSystem", "MathAPI", "TwitterAPI", "VehicleControlAPI")
UNSEEN = ("MessageAPI", "TicketAPI", "TradingBot", "TravelAPI")


def _check_classes(seen: list[str], unseen: list[str]) -> None:
    for name in [*seen, *unseen]:
        if name not in CLASS_FILES:
            raise ConfigError(
                f"tools.world: unknown BFCL class {name!r}; available: {', '.join(CLASS_FILES)}"
            )
    both = sorted(set(seen) & set(unseen))
    if both:
        raise ConfigError(f"tools.world: class(es) {both} are both seen and unseen")
    seen_names = {doc["name"] for cls in seen for doc in function_docs(cls)}
    shared = sorted(seen_names & {doc["name"] for cls in unseen for doc in function_docs(cls)})
    if shared:
        raise ConfigError(f"tools.world: seen and unseen classes share function name(s) {shared}")


def build_bfcl_world(
    categories: list[str] | None = None,
    seen_classes: list[str] | None = None,
    unseen_classes: list[str] | None = None,
    n_test_seen: int = 16,
    seed: int = 0,
) -> World:
    """The BFCL multi-turn world over ``categories`` (default all four)."""
    categories = list(categories or CATEGORIES)
    seen = list(seen_classes or SEEN)
    unseen = list(unseen_classes or UNSEEN)
    _check_classes(seen, unseen)
    suite = ToolSuite.of(tool for cls in CLASS_FILES for tool in class_tools(cls))
    by_category = {category: load_entries(category) for category in categories}
    reference = by_category[categories[0]]
    split_of = scenario_splits(
        [e["involved_classes"] for e in reference], set(seen), set(unseen), n_test_seen, seed
    )
    splits: dict[str, list] = {name: [] for name in SPLITS}
    for index in range(len(reference)):
        if index not in split_of:
            continue
        for category in categories:
            entry = by_category[category][index]
            splits[split_of[index]].append(entry_task(entry, category, index, split_of[index]))
    return World(name="bfcl", suite=suite, splits=splits)
