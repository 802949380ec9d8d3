"""When the oracle teacher trials (``teacher.trials``): ``always`` (default) or ``when_needed``.

The scripted expert trials on every task: it probes the tool before its first execution call, whether or not
the task's hidden convention could also be read from an execution error. About a third of the tasks need no
trial at all (the same expert with trial budget 0 solves 0.32-0.39 of every split, docs/toolworld.md
scorecard): their quirk is a format, an id or a field name that a rejected execution call spells out.
``when_needed`` writes those tasks *without* trials: the teacher first plays the expert with trials refused in
a scratch environment; if that episode solves the task, the episode kept is that one (execution call, the
error read back, the corrected call, the answer), replayed through a fresh environment with the real trial
budget so that its records and counters hold no refused trial; otherwise the expert's usual episode with
trials. The prompt offers the same budget in both cases, so the student sees a policy that trials where only a
trial can tell (silent units, scales and steps) and otherwise acts and corrects from the environment's errors.

The expert's "trials are refused" wording ("No trials; ...", "Trials are off, so ...") becomes "No trial
needed" in the kept episodes, since there the trials were declined, not refused.

Departure from the paper: its teacher decides per task whether to trial; this is the scripted teacher's
version of that decision, made with hindsight from the budget-0 episode.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Generator
from dataclasses import replace

from toolmaster.envs.calls import OVER_BUDGET
from toolmaster.envs.environment import CallRecord, ToolEnv
from toolmaster.envs.task import Task
from toolmaster.worlds.scripted import Policy, Step, run_policy

TRIALS_MODES = ("always", "when_needed")
REFUSED_WORDING = re.compile(r"^(No trials(?: allowed| available| here)?|Trials are off)\b")
DECLINED_WORDING = "No trial needed"


def declined(thought: str) -> str:
    """The expert's thought for a call made because trials were refused, worded as a trial declined."""
    return REFUSED_WORDING.sub(DECLINED_WORDING, thought, count=1)


def replay(steps: list[Step]) -> Policy:
    """A policy that yields ``steps`` in order whatever the observations (the environment is deterministic, so
    replaying an episode's steps from a reset reproduces its observations)."""

    def replaying(task: Task, rng: random.Random) -> Generator[Step, CallRecord, None]:
        for step in steps:  # noqa: UP028 - not `yield from`: run_policy sends records, a list cannot take them
            yield step

    return replaying


def trial_only_when_needed(
    policy: Policy,
    task: Task,
    scratch_env: Callable[[], ToolEnv],
    policy_rng: Callable[[], random.Random],
    max_steps: int,
) -> Policy:
    """``policy`` for a task that needs a trial; for one its budget-0 play solves, that play without trials.

    ``scratch_env()`` builds an environment with trial budget 0; ``policy_rng()`` the policy's seeded stream
    (called once here, so the kept policy is handed a fresh stream of the same seed)."""
    probe = run_policy(policy, task, scratch_env(), policy_rng(), max_steps)
    if not probe.correct:
        return policy
    kept = [
        replace(step, thought=declined(step.thought))
        for step, record in zip(probe.steps, probe.records, strict=True)
        if record is None or record.error != OVER_BUDGET
    ]
    return replay(kept)
