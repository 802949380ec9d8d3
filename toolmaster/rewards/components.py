"""Reward components. Each is a small config record with a ``weight`` and ``__call__(trajectory, task)``.

Components return unweighted values; ``RewardGroup`` multiplies by ``weight`` and sums. Every component is a
pure function of the finished trajectory and its task (no model, no environment), so rewards can be
recomputed from saved trajectories.

Each component also reports ``max_value``: the largest *weighted* amount it can add to the reward (0 for a
penalty). ``build_reward_group`` uses it to refuse shapes where the shaping terms together could be worth as
much as a correct answer (see ``toolmaster.rewards.compose``).

Components:

- ``Outcome``  1 for a successful episode (``Task.score``: the task's scorer when it has one, e.g. a
  state check, else the final answer against the task's answer), else 0.
- ``Format``   1 for a protocol-valid episode with a non-degenerate answer, else 0 (optional partial credit).
- ``TrialCost``  -per_call per trial call, or only per trial call over the episode's trial budget.
- ``ExecError``  -per_error per failed execution call, optionally capped.
- ``CallMatch``  ToolRL-style match of the successful execution calls against the task's gold calls, in [0, 1].
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from toolmaster.envs.environment import EXECUTION, OVER_BUDGET, TRIAL
from toolmaster.envs.task import Task, normalize_answer
from toolmaster.trajectory import Trajectory

_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")
_EXACT_MAX_PREDICTED = 10


def _check_weight(weight: float) -> None:
    if not math.isfinite(weight):
        raise ValueError(f"weight must be a finite number, got {weight}")


def _weighted_max(weight: float, low: float, high: float) -> float:
    """Largest value of ``weight * raw`` for raw in [low, high] (bounds may be infinite)."""
    if weight == 0:
        return 0.0
    return weight * high if weight > 0 else weight * low


@dataclass
class Outcome:
    """1.0 when ``task.score`` accepts the episode (its scorer, else the final answer), else 0.0."""

    weight: float = 1.0

    def __post_init__(self) -> None:
        _check_weight(self.weight)

    @property
    def max_value(self) -> float:
        """The most this component can add: its weight."""
        return _weighted_max(self.weight, 0.0, 1.0)

    def __call__(self, trajectory: Trajectory, task: Task) -> float:
        """1 when the episode succeeds (``Task.score``), else 0."""
        return 1.0 if task.score(trajectory) else 0.0


def degenerate_answer(answer: str | None, query: str, max_chars: int) -> str | None:
    """Why ``answer`` is degenerate (a short reason), or None when it is a real answer.

    Degenerate: missing, empty after stripping, no letter or digit at all (only punctuation / white space),
    longer than ``max_chars`` (stripped), or the task's query repeated (after answer normalisation).
    """
    if answer is None:
        return "no answer"
    text = answer.strip()
    if not text:
        return "empty"
    if not any(ch.isalnum() for ch in text):
        return "no letter or digit"
    if len(text) > max_chars:
        return f"longer than {max_chars} characters"
    if normalize_answer(text) == normalize_answer(query):
        return "copies the query"
    return None


@dataclass
class Format:
    """Protocol validity: 1.0 only for an episode that ended with an answer, had no format errors, was not
    truncated and whose answer is not degenerate (see ``degenerate_answer``); else 0.0.

    ``per_error_penalty`` (None = off) gives partial credit instead of 0 for format errors:
    ``max(0, 1 - per_error_penalty * format_errors)``, still 0 for truncated or degenerate episodes.
    The checks on the answer close the obvious hacks of a format reward (answer at once with "." or echo the
    query); keeping the format weight below the outcome weight (enforced at build time) closes the rest.
    """

    weight: float = 0.1
    max_answer_chars: int = 200
    per_error_penalty: float | None = None

    def __post_init__(self) -> None:
        _check_weight(self.weight)
        if self.max_answer_chars < 1:
            raise ValueError(f"max_answer_chars must be >= 1, got {self.max_answer_chars}")
        if self.per_error_penalty is not None and not 0 < self.per_error_penalty <= 1:
            raise ValueError(f"per_error_penalty must be in (0, 1] or null, got {self.per_error_penalty}")

    @property
    def max_value(self) -> float:
        """The most this component can add: its weight."""
        return _weighted_max(self.weight, 0.0, 1.0)

    def __call__(self, trajectory: Trajectory, task: Task) -> float:
        """The format value of the episode (0 for a truncated or degenerate answer)."""
        if trajectory.truncated or degenerate_answer(trajectory.answer, task.query, self.max_answer_chars):
            return 0.0
        if trajectory.format_errors == 0:
            return 1.0
        if self.per_error_penalty is None:
            return 0.0
        return max(0.0, 1.0 - self.per_error_penalty * trajectory.format_errors)


@dataclass
class TrialCost:
    """A cost for trial calls, returned as a value <= 0.

    ``mode="per_call"``: ``-per_call * max(0, trial calls - free_calls)``.
    ``mode="over_budget"``: only trial calls beyond the episode's ``trial_budget`` count (the environment
    refuses them with an ``over_budget`` error): ``-per_call * max(0, over - free_calls)`` with ``over`` the
    larger of the refused calls and ``trial calls - trial_budget`` (trajectories from teachers may lack the
    error tag). Trial calls the parser could not read count like any other trial call.
    """

    weight: float = 1.0
    per_call: float = 0.05
    mode: Literal["per_call", "over_budget"] = "per_call"
    free_calls: int = 0

    def __post_init__(self) -> None:
        _check_weight(self.weight)
        if self.per_call < 0:
            raise ValueError(f"per_call must be >= 0, got {self.per_call}")
        if self.mode not in ("per_call", "over_budget"):
            raise ValueError(f"mode must be 'per_call' or 'over_budget', got {self.mode!r}")
        if self.free_calls < 0:
            raise ValueError(f"free_calls must be >= 0, got {self.free_calls}")

    @property
    def max_value(self) -> float:
        """A cost never adds: at most 0."""
        return _weighted_max(self.weight, -math.inf, 0.0)

    def counted_calls(self, trajectory: Trajectory) -> int:
        """The trial calls this component charges for, under its ``mode`` and ``free_calls``."""
        trials = trajectory.calls_in(TRIAL)
        if self.mode == "per_call":
            count = len(trials)
        else:
            refused = sum(1 for call in trials if call.get("error") == OVER_BUDGET)
            count = max(refused, len(trials) - trajectory.trial_budget)
        return max(0, count - self.free_calls)

    def __call__(self, trajectory: Trajectory, task: Task) -> float:
        """``-per_call`` for each counted trial call."""
        return -self.per_call * self.counted_calls(trajectory)


@dataclass
class ExecError:
    """``-per_error`` per failed execution call (any error kind, unreadable ``<call>`` turns included);
    ``cap`` (None = no cap) bounds the total penalty: the value is never below ``-cap``."""

    weight: float = 1.0
    per_error: float = 0.1
    cap: float | None = None

    def __post_init__(self) -> None:
        _check_weight(self.weight)
        if self.per_error < 0:
            raise ValueError(f"per_error must be >= 0, got {self.per_error}")
        if self.cap is not None and self.cap < 0:
            raise ValueError(f"cap must be >= 0 or null, got {self.cap}")

    @property
    def max_value(self) -> float:
        """A penalty never adds: at most 0."""
        low = -math.inf if self.cap is None else -self.cap
        return _weighted_max(self.weight, low, 0.0)

    def __call__(self, trajectory: Trajectory, task: Task) -> float:
        """``-per_error`` for each failed execution call, down to ``-cap`` when set."""
        failed = sum(1 for call in trajectory.calls_in(EXECUTION) if not call["ok"])
        penalty = self.per_error * failed
        if self.cap is not None:
            penalty = min(penalty, self.cap)
        return -penalty


# ------------------------------------------------------------------------------------------ call matching
def normalize_value(value: Any) -> Any:
    """A comparable form of an argument value: numbers (and numeric strings) become floats, strings are
    normalised like answers (case, white space, quotes), booleans and None become words, lists and dicts
    are normalised element-wise (dict keys keep their spelling)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = normalize_answer(value)
        compact = text.replace(",", "")
        if _NUMBER.match(compact):
            return float(compact)
        return text
    if isinstance(value, (list, tuple)):
        return tuple(normalize_value(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), normalize_value(v)) for k, v in value.items()))
    return normalize_answer(str(value))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    if isinstance(a, tuple) and isinstance(b, tuple):
        if len(a) != len(b):
            return False
        return all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def values_match(predicted: Any, gold: Any) -> bool:
    """Whether two argument values agree after ``normalize_value`` (``"12.50"`` == ``12.5``)."""
    return _same(normalize_value(predicted), normalize_value(gold))


def call_score(predicted: Mapping[str, Any], gold: Mapping[str, Any]) -> float:
    """(name match + parameter-name Jaccard + fraction of gold parameter values matched) / 3, in [0, 1].

    Jaccard of two empty parameter sets is 1; with no gold parameters the value fraction is 1.
    """
    name = 1.0 if predicted.get("name") == gold.get("name") else 0.0
    p_raw, g_raw = predicted.get("arguments"), gold.get("arguments")
    p_args: dict[str, Any] = p_raw if isinstance(p_raw, dict) else {}
    g_args: dict[str, Any] = g_raw if isinstance(g_raw, dict) else {}
    p_keys, g_keys = set(p_args), set(g_args)
    union = p_keys | g_keys
    jaccard = len(p_keys & g_keys) / len(union) if union else 1.0
    if g_keys:
        values = sum(1 for k in g_keys if k in p_args and values_match(p_args[k], g_args[k])) / len(g_keys)
    else:
        values = 1.0
    return (name + jaccard + values) / 3.0


def best_pairing(scores: list[list[float]]) -> tuple[float, int]:
    """One-to-one pairing of gold calls (rows) with predicted calls (columns) maximising the total score,
    ties broken towards more pairs. Exact (dynamic programming over subsets of predicted calls) for up to
    ``_EXACT_MAX_PREDICTED`` predicted calls, greedy (highest-scoring pair first) beyond.
    Returns (total score, number of predicted calls paired).
    """
    n_gold = len(scores)
    n_pred = len(scores[0]) if scores else 0
    if n_gold == 0 or n_pred == 0:
        return 0.0, 0
    if n_pred <= _EXACT_MAX_PREDICTED:

        @cache
        def best(g: int, used: int) -> tuple[float, int]:
            if g == n_gold:
                return 0.0, 0
            options = [best(g + 1, used)]
            for p in range(n_pred):
                if not used & (1 << p):
                    total, pairs = best(g + 1, used | (1 << p))
                    options.append((total + scores[g][p], pairs + 1))
            return max(options)

        return best(0, 0)
    pairs = sorted((-scores[g][p], g, p) for g in range(n_gold) for p in range(n_pred))
    gold_done: set[int] = set()
    pred_done: set[int] = set()
    total = 0.0
    for negative, g, p in pairs:
        if g not in gold_done and p not in pred_done:
            gold_done.add(g)
            pred_done.add(p)
            total -= negative
    return total, len(pred_done)


@dataclass
class CallMatch:
    """ToolRL-style fine-grained match of the episode's *successful execution calls* with ``task.gold_calls``.

    Each gold call is paired with at most one predicted call and vice versa (so one call cannot satisfy two
    gold calls of the same tool); the pairing maximises the total ``call_score``; order is ignored. The
    value is the mean over gold calls of their pair's score (0 for an unpaired gold call), in [0, 1].
    ``extra_call_penalty`` subtracts that much per successful execution call left unpaired, floored at 0.

    Departures from ToolRL (Qian et al. 2025): scores are normalised to [0, 1] instead of [-3, 3], the tool
    name term is per call rather than a Jaccard over name sets, and trial calls never count (they are
    exploration, rewarded only through the outcome). A task without ``gold_calls`` gives 0.0: there is
    nothing to match, and a constant is no signal either way (GRPO centres it away within a group).
    """

    weight: float = 1.0
    extra_call_penalty: float = 0.0

    def __post_init__(self) -> None:
        _check_weight(self.weight)
        if self.extra_call_penalty < 0:
            raise ValueError(f"extra_call_penalty must be >= 0, got {self.extra_call_penalty}")

    @property
    def max_value(self) -> float:
        """The most this component can add: its weight."""
        return _weighted_max(self.weight, 0.0, 1.0)

    def __call__(self, trajectory: Trajectory, task: Task) -> float:
        """How well the episode's successful execution calls match the task's gold calls, in [0, 1]."""
        gold = task.gold_calls
        if not gold:
            return 0.0
        predicted = [call for call in trajectory.calls_in(EXECUTION) if call["ok"]]
        scores = [[call_score(p, g) for p in predicted] for g in gold]
        total, used = best_pairing(scores)
        value = total / len(gold) - self.extra_call_penalty * (len(predicted) - used)
        return min(1.0, max(0.0, value))


COMPONENTS: tuple[type, ...] = (Outcome, Format, TrialCost, ExecError, CallMatch)
