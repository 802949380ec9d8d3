"""Deliberate execution slips for the oracle teacher (``teacher.execution_slips``), each corrected from the error.

The scripted expert only errs in its trial phase (a natural guess at a format, corrected from the error); its
execution calls are always right. A student that imitates it has never seen an execution call rejected and
repaired, and at 135M it repeats a rejected call verbatim until the turn limit (``python -m toolmaster.analyze``:
``repeated_failure`` 0.73-0.87 on ``test_unseen`` in paper_small). With ``teacher.execution_slips=p`` a fraction
p of the oracle's episodes (drawn per episode from a seeded stream of its own, so p = 0 leaves every episode
exactly as before) first makes a *slip* on its first execution call, a mistake of the kind a student makes:

- ``unknown``: an extra argument the tool does not accept (a name another of the task's tools takes, or a
  common one such as ``unit`` or ``format``), as when a model carries a family's argument over to a new tool;
- ``missing``: a required argument left out.

The environment rejects both before the tool runs (schema check, ``invalid_arguments``), so a slip never
changes the world's state and its observation is genuine. The slipped call keeps the expert's own thought; the
repeated correct call gets a thought that reads the error back ("the error says 'unit' is not an argument of
xf_conv, which accepts t, conv: drop it"). The slip's turn is marked ``train: false`` (``Step.train``), so SFT
keeps it as context and puts no loss on it: the student learns the correction, not the slip.

Departure from the paper: it shows self-corrections in the teacher's trajectories but does not say how they
arise; injecting schema slips with masked loss is this implementation's way to get them from a scripted
teacher.
"""

from __future__ import annotations

import random
from collections.abc import Generator
from dataclasses import replace
from typing import Any

from toolmaster.envs.environment import INVALID_ARGUMENTS, CallRecord
from toolmaster.envs.task import Task
from toolmaster.protocol.phases import ActionKind
from toolmaster.worlds.scripted import Policy, Step

COMMON_NAMES = ("unit", "format", "mode", "id", "value", "query", "type", "scale")
UNKNOWN_FIX = (
    "The error says {extra!r} is not an argument of {tool}, which accepts {accepted}; drop it and call again.",
    "{tool} rejected {extra!r}: it only takes {accepted}. Same call without it.",
    "Wrong argument name: {extra!r} does not exist for {tool} ({accepted}). Retry without {extra!r}.",
)
MISSING_FIX = (
    "The error says {tool} needs {missing!r}; call again with {missing}={value!r}.",
    "I left out the required {missing!r}. Retry with {missing}={value!r}.",
    "{tool} wants {missing!r} as well; add {missing}={value!r} and call again.",
)


def slip_arguments(
    arguments: dict[str, Any], parameters: dict[str, Any], other_names: list[str], rng: random.Random
) -> tuple[str, str, dict[str, Any]] | None:
    """``(kind, argument, slipped arguments)`` for one call, or None when no slip fits it. ``parameters`` is
    the tool's JSON schema; ``other_names`` the argument names of the task's other tools."""
    accepted = set(parameters.get("properties", {}))
    kinds: list[str] = ["unknown"]
    required = [name for name in parameters.get("required", []) if name in arguments]
    if required:
        kinds.append("missing")
    kind = rng.choice(kinds)
    if kind == "missing":
        dropped = rng.choice(required)
        return kind, dropped, {k: v for k, v in arguments.items() if k != dropped}
    borrowed = sorted({name for name in other_names if name not in accepted})
    pool = borrowed or [name for name in COMMON_NAMES if name not in accepted]
    if not pool:
        return None
    extra = rng.choice(pool)
    value = rng.choice(list(arguments.values())) if arguments else "auto"
    return kind, extra, {**arguments, extra: value}


def fix_thought(
    kind: str, argument: str, tool: str, arguments: dict[str, Any], accepted: list[str], rng: random.Random
) -> str:
    """The corrected call's thought: the error read back, and what changes."""
    if kind == "missing":
        return rng.choice(MISSING_FIX).format(tool=tool, missing=argument, value=arguments[argument])
    names = ", ".join(accepted) or "no arguments"
    return rng.choice(UNKNOWN_FIX).format(extra=argument, tool=tool, accepted=names)


def with_slips(policy: Policy, schemas: dict[str, dict[str, Any]], rate: float, rng: random.Random) -> Policy:
    """``policy`` that, with probability ``rate`` (one draw from ``rng`` per episode), slips on its first
    execution call and then makes that call as the policy meant it; ``schemas``: tool name -> parameters."""

    def slipping(task: Task, policy_rng: random.Random) -> Generator[Step, CallRecord, None]:
        inner = policy(task, policy_rng)
        pending = rng.random() < rate
        try:
            step = next(inner)
            while True:
                if pending and step.kind == ActionKind.CALL and step.name in schemas:
                    pending = False
                    others = [
                        name
                        for tool, params in schemas.items()
                        if tool != step.name and tool in task.tool_names
                        for name in params.get("properties", {})
                    ]
                    arguments = dict(step.arguments or {})
                    slip = slip_arguments(arguments, schemas[step.name], others, rng)
                    if slip is not None:
                        kind, argument, slipped = slip
                        record = yield replace(step, arguments=slipped, train=False)
                        if record.error != INVALID_ARGUMENTS:  # cannot happen: the schema check rejects it
                            raise RuntimeError(
                                f"slip {slipped} on {step.name} was not rejected: {record.error}"
                            )
                        accepted = list(schemas[step.name].get("properties", {}))
                        thought = fix_thought(kind, argument, step.name, arguments, accepted, rng)
                        step = replace(step, thought=thought)
                record = yield step
                step = inner.send(record)
        except StopIteration:
            return
        finally:
            inner.close()

    return slipping
