"""Greedy (or sampled) episodes over a world's splits, summarised per split: the evaluation every stage uses.

``stage=eval`` writes what ``evaluate_splits`` returns; SFT's ``val/success`` and GRPO's validation use the same
rollout and metrics. Tasks with ``metadata["category"]`` (BFCL's) also get one ``split/category`` row each.
``markdown_table`` renders the metrics as one row per split (and per split/category).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from tqdm import tqdm

from toolmaster.metrics import summarize, summarize_by_category
from toolmaster.protocol.chat_format import ChatFormat
from toolmaster.rewards import RewardGroup
from toolmaster.samplers.base import GenerationEngine
from toolmaster.samplers.loop import RolloutConfig, rollout
from toolmaster.worlds.base import World

log = logging.getLogger(__name__)

TABLE_COLUMNS = [
    ("success", "success"),
    ("valid_format", "valid format"),
    ("trial_calls", "trial calls"),
    ("execution_calls", "exec calls"),
    ("tool_error_rate", "tool errors"),
    ("self_correction", "self-correct"),
    ("truncated", "truncated"),
]


def evaluate_splits(
    engine: GenerationEngine,
    tokenizer: Any,
    fmt: ChatFormat,
    world: World,
    splits: list[str],
    limit: int | None,
    config: RolloutConfig,
    rewards: RewardGroup | None = None,
    pass_k: list[int] | tuple[int, ...] = (1,),
    show_progress: bool = True,
) -> tuple[dict[str, dict[str, float]], dict[str, list]]:
    """Roll out every split; return (split -> metrics, split -> trajectories).

    All splits go through one ``rollout`` call, so the batch stays full from the first episode to the last
    (per split, the last episodes of each split would run in a shrinking batch). ``wall_s`` of every split
    is therefore the wall time of that joint rollout."""
    tasks_by_split = {split: world.tasks(split, limit) for split in splits}
    all_tasks = [task for tasks in tasks_by_split.values() for task in tasks]
    started = time.perf_counter()
    with tqdm(
        total=len(all_tasks) * config.n_samples,
        desc=f"eval {'+'.join(splits)}",
        disable=not show_progress,
    ) as bar:
        all_trajs = rollout(engine, tokenizer, fmt, world.suite, all_tasks, config, progress=bar.update)
    wall = time.perf_counter() - started
    metrics: dict[str, dict[str, float]] = {}
    trajectories: dict[str, list] = {}
    start = 0
    for split, tasks in tasks_by_split.items():  # rollout returns n_samples per task, in task order
        trajs = all_trajs[start : start + len(tasks) * config.n_samples]
        start += len(trajs)
        if rewards is not None:
            rewards.score(trajs, {task.id: task for task in tasks})
        metrics[split] = summarize(trajs, pass_k)
        metrics[split]["wall_s"] = wall
        trajectories[split] = trajs
        log.info("%s: %s", split, {k: round(v, 3) for k, v in metrics[split].items()})
        categories = {task.id: task.metadata["category"] for task in tasks if "category" in task.metadata}
        for category, values in summarize_by_category(trajs, categories, pass_k).items():
            metrics[f"{split}/{category}"] = {**values, "wall_s": wall}  # per-category rows (e.g. BFCL)
    return metrics, trajectories


def markdown_table(metrics: dict[str, dict[str, float]], title: str = "") -> str:
    extra = sorted({k for m in metrics.values() for k in m if k.startswith("pass@")})
    columns = TABLE_COLUMNS + [(k, k) for k in extra]
    lines = [f"### {title}", ""] if title else []
    lines.append("| split | episodes | " + " | ".join(label for _, label in columns) + " |")
    lines.append("|---" * (len(columns) + 2) + "|")
    for split, m in metrics.items():
        cells = " | ".join(f"{m.get(key, float('nan')):.3f}" for key, _ in columns)
        lines.append(f"| {split} | {int(m['episodes'])} | {cells} |")
    walls = [m["wall_s"] for m in metrics.values() if "wall_s" in m]
    if walls:  # every split carries the joint rollout's wall time (evaluate_splits)
        splits = [m for name, m in metrics.items() if "/" not in name]  # not the split/category rows
        episodes = sum(int(m["episodes"]) for m in splits)
        lines += [
            "",
            f"{episodes} episodes of {len(splits)} split(s) rolled out together in {max(walls):.0f} s",
        ]
    return "\n".join(lines) + "\n"
