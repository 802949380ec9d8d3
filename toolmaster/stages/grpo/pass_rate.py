"""Pass-rate filter for ``stage=grpo``: train on the tasks the starting policy solves *sometimes*.

``stage.pass_rate_samples=k`` (0: off) plays k sampled episodes of each candidate training task with the
policy GRPO starts from (the SFT model), before the first step, and keeps the tasks whose success rate r
satisfies ``stage.pass_rate_min < r < stage.pass_rate_max`` (defaults 0 and 1: neither always failed nor always
solved). A task the policy never solves gives an all-fail group, one it always solves an all-success group:
both carry a zero advantage (``toolmaster.algorithms.group_filter``), so dynamic sampling would drop them after
paying for their rollout every time they come up. Filtering once up front pays k rollouts per candidate once.
``stage.pass_rate_candidates=N`` limits the candidates to the first N training tasks (the filter's cost is
k x N episodes).

Deterministic for a seed: the episodes are sampled with ``stage.seed`` (its own stream, not a training step's),
in candidate order, and the kept tasks keep that order. The result is written to
``<output_dir>/pass_rates.json`` (settings, every candidate's rate, the kept ids) and reused by any later run
in that directory whose filter settings, candidates, starting model and sampling config are the same, so a
restart (killed before or after its first checkpoint) neither repeats the rollouts nor changes the task list
under the checkpoint's data position. A run that resumes from a checkpoint and finds no matching record stops
with an error rather than train on another list; a fresh run with other settings filters anew.
The candidates are played in chunks of ``CHUNK_TASKS`` (chunk i sampled with seed ``stage.seed + i``); after
each, the rates so far go to ``pass_rates.partial.json`` and a progress line to the log, so a run killed
during the filter (800 episodes take half an hour on a 2-core CPU) resumes at the next chunk with the same
result.
One process only (ranks would have to agree on the list).

Departure from the paper: it trains GRPO on its synthesized tasks without a difficulty filter; this is the
curriculum issue 30 asks for when successes are rare.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from toolmaster.envs.task import Task
from toolmaster.errors import ConfigError
from toolmaster.io import write_json_atomic
from toolmaster.samplers.loop import RolloutConfig
from toolmaster.trajectory import Trajectory

log = logging.getLogger(__name__)

PASS_RATES = "pass_rates.json"
PARTIAL = "pass_rates.partial.json"
CHUNK_TASKS = 50  # candidates played per rollout call; the partial record is written after each
Play = Callable[[list[Task], RolloutConfig], list[Trajectory]]


def success_rates(trajectories: Sequence[Trajectory]) -> dict[str, float]:
    """Per task id, the share of its episodes that succeeded."""
    counts: dict[str, list[int]] = {}
    for trajectory in trajectories:
        wins, total = counts.setdefault(trajectory.task_id, [0, 0])
        counts[trajectory.task_id] = [wins + int(trajectory.correct), total + 1]
    return {task_id: wins / total for task_id, (wins, total) in counts.items()}


def keep_by_rate(tasks: Sequence[Task], rates: dict[str, float], low: float, high: float) -> list[Task]:
    """The tasks with ``low < rate < high``, in their order (a task without a rate is dropped)."""
    return [task for task in tasks if task.id in rates and low < rates[task.id] < high]


def filter_tasks(
    tasks: Sequence[Task],
    play: Play,
    config: RolloutConfig,
    samples: int,
    low: float,
    high: float,
    seed: int,
    candidates: int | None = None,
    output_dir: Path | None = None,
    resuming: bool = False,
    policy: str = "",
) -> list[Task]:
    """The training tasks the pass-rate filter keeps (see the module docstring); ``play(tasks, config)`` rolls
    out ``config.n_samples`` episodes per task with the starting policy (named by ``policy`` in the record)."""
    pool = list(tasks[:candidates] if candidates else tasks)
    sampling = replace(config, n_samples=samples, seed=seed)
    settings: dict[str, Any] = {
        "samples": samples,
        "min": low,
        "max": high,
        "seed": seed,
        "policy": policy,
        "sampling": json.loads(json.dumps(asdict(sampling), default=str)),
        "candidates": [task.id for task in pool],
    }
    record_path = output_dir / PASS_RATES if output_dir is not None else None
    rates = _recorded_rates(record_path, settings)
    if resuming and rates is None:
        raise ConfigError(
            f"stage.pass_rate_samples: resuming from a checkpoint, but {record_path} does not hold this filter's"
            " result (other settings, candidates, model or sampling); the checkpoint's task list is unknown."
            " Resume with the settings it was trained with, or start in a new run dir"
        )
    if rates is None:
        partial_path = output_dir / PARTIAL if output_dir is not None else None
        rates = _play_in_chunks(pool, play, sampling, seed, settings, partial_path, low, high)
    kept = keep_by_rate(pool, rates, low, high)
    if record_path is not None:
        write_json_atomic(record_path, {**settings, "rates": rates, "kept": [task.id for task in kept]})
        (output_dir / PARTIAL).unlink(missing_ok=True)
    if not kept:
        histogram = _histogram(rates)
        raise ConfigError(
            f"stage.pass_rate_samples={samples}: no task of {len(pool)} has a success rate in "
            f"({low}, {high}) (rates: {histogram}); raise stage.pass_rate_samples or stage.pass_rate_candidates,"
            " or start from a policy that solves some of them"
        )
    return kept


def _play_in_chunks(
    pool: list[Task],
    play: Play,
    sampling: RolloutConfig,
    seed: int,
    settings: dict[str, Any],
    partial_path: Path | None,
    low: float,
    high: float,
) -> dict[str, float]:
    """Every candidate's rate, chunk by chunk, continuing from a partial record of the same settings."""
    rates = _recorded_rates(partial_path, settings) or {}
    started = time.monotonic()
    for index, start in enumerate(range(0, len(pool), CHUNK_TASKS)):
        chunk = pool[start : start + CHUNK_TASKS]
        if all(task.id in rates for task in chunk):
            continue
        rates.update(success_rates(play(chunk, replace(sampling, seed=seed + index))))
        if partial_path is not None:
            write_json_atomic(partial_path, {**settings, "rates": rates})
        kept = sum(low < rate < high for rate in rates.values())
        log.info(
            "pass-rate filter: %d/%d candidates played, %d kept so far (%.0f s)",
            len(rates), len(pool), kept, time.monotonic() - started,
        )  # fmt: skip
    return rates


def _recorded_rates(path: Path | None, settings: dict[str, Any]) -> dict[str, float] | None:
    """The rates of an earlier run with the same settings, else None."""
    if path is None or not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except ValueError:
        return None
    if {key: record.get(key) for key in settings} != settings:
        return None
    return {str(k): float(v) for k, v in record.get("rates", {}).items()}


def _histogram(rates: dict[str, float]) -> str:
    buckets: dict[str, int] = {}
    for rate in rates.values():
        key = "0" if rate == 0 else "1" if rate == 1 else "between"
        buckets[key] = buckets.get(key, 0) + 1
    return ", ".join(f"{count} at {key}" for key, count in sorted(buckets.items()))
