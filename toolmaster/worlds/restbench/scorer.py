"""RestBench's scoring: the correct-path check by rule, success by a pluggable LLM judge.

RestBench reports two rates: the *correct path rate*, whether the gold solution (``solution``: a list of
``GET /path`` endpoints) occurs in the model's API calls as a subsequence, in order; and the *success rate*,
decided by people in RestGPT's paper. Here an episode's path is the endpoints of its successful execution calls
(trial calls only probed, failed calls returned nothing). Without a judge, success is: the episode ended with
an answer and its path is correct (RestBench's correct path, restricted to answered episodes); with
``tools.world.judge`` set, success is: answered and the judge accepts the answer (the success rate, with an LLM
standing in for RestGPT's human graders).
"""

from __future__ import annotations

from typing import Any

from toolmaster.envs.task import Task
from toolmaster.protocol.phases import Phase
from toolmaster.worlds.judge import judged


def path_of(trajectory: Any) -> list[str]:
    """The tool names of the episode's successful execution calls, in order."""
    return [c["name"] for c in trajectory.calls if c["phase"] == Phase.EXECUTION and c["ok"]]


def is_subsequence(gold: list[str], path: list[str]) -> bool:
    remaining = iter(path)
    return all(step in remaining for step in gold)


def correct_path(task: Task, trajectory: Any) -> bool:
    return is_subsequence(list(task.metadata.get("solution_tools", [])), path_of(trajectory))


def score(task: Task, trajectory: Any, final_state: dict[str, Any] | None = None) -> bool:
    """The task's scorer hook: answered, then the judge when there is one, else the correct path."""
    if trajectory.truncated or not (trajectory.answer or "").strip():
        return False
    verdict = judged(task, trajectory)
    return correct_path(task, trajectory) if verdict is None else verdict
