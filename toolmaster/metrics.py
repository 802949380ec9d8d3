"""Episode metrics as a torchmetrics Metric, so they reduce correctly across DDP ranks.

success, valid_format (answered and every turn parsed), mean trial / execution calls, tool-error rate
(failed calls / calls), self-correction rate (episodes where a failed call is later followed by a successful
one), truncation rate, mean reward; pass@k from per-task sample groups with the unbiased estimator
1 - C(n-c, k) / C(n, k). ``prompt_too_long``: the share of episodes whose prompt alone exceeded the episode
token budget (they count as truncated too).

``summarize_by_category``: the same metrics per task category (``Task.metadata["category"]``, e.g. BFCL's
base / miss_func / miss_param / long_context), for worlds whose tasks name one.
"""

from __future__ import annotations

import math
from collections import defaultdict
from math import comb
from typing import Any

import torch
from torchmetrics import Metric

from toolmaster.trajectory import Trajectory

_SUMS = (
    "episodes",
    "success",
    "valid_format",
    "trial_calls",
    "execution_calls",
    "calls",
    "failed_calls",
    "self_corrected",
    "truncated",
    "reward",
    "generated_tokens",
    "prompt_too_long",
)


class EpisodeMetrics(Metric):
    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        for name in _SUMS:
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, trajectories: list[Trajectory]) -> None:  # type: ignore[override]
        for t in trajectories:
            values = {
                "episodes": 1,
                "success": t.correct,
                "valid_format": t.valid_format,
                "trial_calls": t.num_trial_calls,
                "execution_calls": t.num_execution_calls,
                "calls": len(t.calls),
                "failed_calls": t.num_failed_calls,
                "self_corrected": t.self_corrected,
                "truncated": t.truncated,
                "reward": t.reward or 0.0,
                "generated_tokens": t.num_generated_tokens,
                "prompt_too_long": t.truncation_reason == "prompt_too_long",
            }
            for name, value in values.items():
                setattr(self, name, getattr(self, name) + float(value))

    def compute(self) -> dict[str, float]:  # type: ignore[override]
        n = max(float(self.episodes), 1.0)
        calls = max(float(self.calls), 1.0)
        return {
            "episodes": float(self.episodes),
            "success": float(self.success) / n,
            "valid_format": float(self.valid_format) / n,
            "trial_calls": float(self.trial_calls) / n,
            "execution_calls": float(self.execution_calls) / n,
            "tool_error_rate": float(self.failed_calls) / calls,
            "self_correction": float(self.self_corrected) / n,
            "truncated": float(self.truncated) / n,
            "reward": float(self.reward) / n,
            "generated_tokens": float(self.generated_tokens) / n,
            "prompt_too_long": float(self.prompt_too_long) / n,
        }


def pass_at_k(trajectories: list[Trajectory], k: int) -> float | None:
    """Mean unbiased pass@k over tasks; None when some task has fewer than k samples."""
    groups: dict[str, list[bool]] = defaultdict(list)
    for t in trajectories:
        groups[t.task_id].append(t.correct)
    if not groups or any(len(g) < k for g in groups.values()):
        return None
    total = 0.0
    for outcomes in groups.values():
        n, c = len(outcomes), sum(outcomes)
        total += 1.0 - (comb(n - c, k) / comb(n, k) if n - c >= k else 0.0)
    return total / len(groups)


def summarize(trajectories: list[Trajectory], pass_k: list[int] | tuple[int, ...] = (1,)) -> dict[str, float]:
    metric = EpisodeMetrics()
    metric.update(trajectories)
    out = metric.compute()
    for k in pass_k:
        value = pass_at_k(trajectories, k)
        if value is not None:
            out[f"pass@{k}"] = value
    return out


def summarize_by_category(
    trajectories: list[Trajectory],
    category_of: dict[str, str],
    pass_k: list[int] | tuple[int, ...] = (1,),
) -> dict[str, dict[str, float]]:
    """Category -> metrics over the trajectories whose task (``category_of``: task id -> category) has one."""
    groups: dict[str, list[Trajectory]] = defaultdict(list)
    for t in trajectories:
        if t.task_id in category_of:
            groups[category_of[t.task_id]].append(t)
    return {category: summarize(group, pass_k) for category, group in sorted(groups.items())}


def finite_number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(float(value)) else None
    try:
        number = float(str(value))
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def nest_metrics(flat: dict[str, Any], prefix: str = "val/") -> dict[str, dict[str, float]]:
    """Logged metrics ``{"val/test_seen/success": 0.5, "val/success": 0.4}`` -> the ``metrics.json`` layout
    ``{"test_seen": {"success": 0.5}}``: keys ``<prefix><split>/<name>`` only (``stage=grpo`` writes its final
    validation this way, so a GRPO sweep aggregates like an eval sweep)."""
    out: dict[str, dict[str, float]] = {}
    for key, value in flat.items():
        if not key.startswith(prefix):
            continue
        split, sep, name = key[len(prefix) :].partition("/")
        number = finite_number(value.item() if hasattr(value, "item") else value)
        if sep and split and name and number is not None:
            out.setdefault(split, {})[name] = number
    return out
