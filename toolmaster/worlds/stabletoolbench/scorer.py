"""StableToolBench's pass rate, as far as rules can decide it, and with a pluggable LLM judge for the rest.

StableToolEval (StableToolBench's Solvable Pass Rate) first fails every episode that did not end with an
answer (ToolBench's ``Finish`` with ``give_answer``; here an ``<answer>``), then asks an LLM (gpt-4-turbo)
whether the answer solves the query, several times, and takes the majority. Without a judge this scorer can
only do the first stage, so its success rate is the share of episodes that gave an answer: an upper bound of
SoPR, not SoPR. With ``tools.world.judge`` set (``toolmaster.worlds.judge``) an answered episode passes when the
judge's mean vote is at least 0.5, which is the second stage.

``rule="relevant_apis"`` (not part of StableToolEval) also requires every API of the query's
``relevant APIs`` to have been called successfully in the execution phase: a stricter rule-only proxy, useful
for replays and for training rewards without a judge.
"""

from __future__ import annotations

from typing import Any

from toolmaster.envs.task import Task
from toolmaster.protocol.phases import Phase
from toolmaster.worlds.judge import judged

RULES = ("answered", "relevant_apis")


def answered(trajectory: Any) -> bool:
    return not trajectory.truncated and bool((trajectory.answer or "").strip())


def called_relevant(task: Task, trajectory: Any) -> bool:
    done = {c["name"] for c in trajectory.calls if c["phase"] == Phase.EXECUTION and c["ok"]}
    return all(name in done for name in task.metadata.get("relevant_functions", []))


def score(task: Task, trajectory: Any, final_state: dict[str, Any] | None = None) -> bool:
    """The task's scorer hook: answered, the rule's extra condition, then the judge when there is one."""
    if not answered(trajectory):
        return False
    if task.metadata.get("rule") == "relevant_apis" and not called_relevant(task, trajectory):
        return False
    verdict = judged(task, trajectory)
    return True if verdict is None else verdict
