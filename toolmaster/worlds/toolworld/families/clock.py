"""Family ``clock`` (unseen: never in train): wall-clock arithmetic on HH:MM times (wrapping at midnight).

Tests finding a silent unit with a probe on a time whose answer is obvious.
Hidden convention (11): ``delta`` counts steps of a silent size (a second, a minute, 5, 10, 15 or 30
minutes) although questions speak in hours or minutes; moving 09:30 by 3 lands on 09:33 when a step is a
minute. Results show seconds or not (always for one-second steps). A trial of delta=1 shows the step.
Decoy: a tool taking the same time that rounds it to the nearest quarter hour.
"""

from __future__ import annotations

import random
import re
from collections.abc import Generator
from typing import Any

from toolmaster.envs.environment import CallRecord
from toolmaster.envs.task import Task
from toolmaster.worlds.scripted import Step
from toolmaster.worlds.toolworld import feedback as fb
from toolmaster.worlds.toolworld import quirks as q
from toolmaster.worlds.toolworld.common import (
    FamilySpec,
    NameGen,
    Play,
    TaskDraft,
    Variant,
    gold,
    say,
)

FAMILY_NAME = "clock"
DAY = 24 * 3600
UNIT_SECONDS = {"minute": 60, "hour": 3600}
# seconds per delta step (the documented reading would be hours or minutes); whether seconds are shown
_STEPS = (1, 60, 300, 600, 900, 1800)

_TOOL_NAMES = {"main": ("clk", "hhm", "tmv"), "decoy": ("tdy", "qtr", "nrm")}
_ARG_NAMES = {"time": ("time", "at", "clock", "start"), "delta": ("delta", "plus", "add", "move")}
_DOCS = ("Move a clock time by delta.", "Clock arithmetic.", "Add to a time of day.")
_DECOY_DOCS = ("Tidy a clock time.", "Normalise a time of day.")


def parse_clock(text: str) -> int | None:
    """Seconds since midnight of the first 'HH:MM' or 'HH:MM:SS' in ``text``."""
    match = re.search(r"\b(\d{1,2}):(\d{2})(?::(\d{2}))?\b", text or "")
    if not match:
        return None
    hours, minutes, seconds = int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)
    return hours * 3600 + minutes * 60 + seconds if hours < 24 and minutes < 60 and seconds < 60 else None


def render(seconds: int, with_seconds: bool = False) -> str:
    seconds %= DAY
    text = f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}"
    return f"{text}:{seconds % 60:02d}" if with_seconds else text


def make_variant(rng: random.Random, names: NameGen, evolved: bool) -> Variant:
    roles, p = q.draw_names(rng, names, evolved, _TOOL_NAMES, _ARG_NAMES)
    step = rng.choice(_STEPS)
    conv = {"step_s": step, "show_seconds": step == 1 or rng.random() < 0.5}

    def time_of(value: Any) -> int:
        seconds = parse_clock(str(value))
        if seconds is None:
            raise ValueError(f"bad {p['time']} {value!r}")
        return seconds

    def main_fn(**kwargs: Any) -> str:
        return render(time_of(kwargs[p["time"]]) + int(kwargs[p["delta"]]) * step, conv["show_seconds"])

    def decoy_fn(**kwargs: Any) -> str:
        return render(round(time_of(kwargs[p["time"]]) / 900) * 900)

    time_arg = {"time": ("string", "HH:MM")}
    main = q.ToolSpec(rng.choice(_DOCS), {**time_arg, "delta": ("integer", "amount to add")}, main_fn)
    decoy = q.ToolSpec(rng.choice(_DECOY_DOCS), time_arg, decoy_fn)
    return q.variant(FAMILY_NAME, evolved, roles, p, conv, main=main, decoy=decoy)


_QUERIES = (
    "What time is it {k} {u}s {d} {t}? Answer as HH:MM (24-hour).",
    "A clock shows {t}. What will it show {k} {u}s {d2}? Answer as HH:MM.",
    "Starting at {t}, move {k} {u}s {d3}. What time is it? Answer as HH:MM (24-hour).",
)


def make_task(variant: Variant, rng: random.Random) -> TaskDraft:
    step = variant.conv["step_s"]
    start = rng.randint(0, 24 * 60 - 1) * 60
    unit = "hour" if rng.random() < 0.6 else "minute"
    if unit == "hour":
        k = rng.randint(2, 30)
    else:  # whole steps of the tool (any multiple of 5 minutes reads naturally)
        grain = max(5, step // 60)
        k = grain * rng.randint(1, 500 // grain)
    sign = -1 if rng.random() < 0.3 else 1
    words = {
        "d": "after" if sign > 0 else "before",
        "d2": "later" if sign > 0 else "earlier",
        "d3": "forward" if sign > 0 else "back",
    }
    seconds = sign * k * UNIT_SECONDS[unit]
    return TaskDraft(
        kind=f"{unit}s",
        query=say(rng, _QUERIES, k=k, u=unit, t=render(start), **words),
        answer=render(start + seconds),
        gold_calls=[
            gold(variant.roles["main"], variant.args("main", time=render(start), delta=seconds // step))
        ],
        intent={"time": render(start), "amount": sign * k, "unit": unit},
        convention=f"delta counts steps of {step} s",
    )


def expert(variant: Variant, task: Task, rng: random.Random) -> Generator[Step, CallRecord, None]:
    play = Play(rng)
    main = variant.roles["main"]
    intent = task.metadata["intent"]
    start, amount, unit = intent["time"], intent["amount"], intent["unit"]
    thought = play.say(
        (
            "What unit is delta? Trial 1 from {t} and see how far it moves.",
            "The doc does not say if delta is hours or minutes; test delta=1.",
            "Try delta=1 on {t}; the answer shows the unit.",
        ),
        t=start,
    )
    record = yield from play.trial(main, variant.args("main", time=start, delta=1), thought)
    delta = amount
    if record is not None and record.ok:
        begin, end = parse_clock(start), parse_clock(record.observation)
        if begin is not None and end is not None and end != begin:
            step = (end - begin) % DAY
            wanted = UNIT_SECONDS[unit]
            delta = round(amount * wanted / step)
            if step != wanted:
                act = play.say(
                    (
                        "{t} moved to {o}: one delta step is {m} seconds. {k} {u}s is {n}.",
                        "It moved only {m} seconds per step. Send {n} for {k} {u}s.",
                    ),
                    t=start,
                    o=render(end, True),
                    k=amount,
                    u=unit,
                    n=delta,
                    m=step,
                )
            else:
                act = play.say(("The step is one {u}, as needed. Execute.", "Units match; run it."), u=unit)
        else:
            act = play.say(("I could not read the result; execute as asked.",))
    else:
        act = play.say(
            ("No trials; call {tool} directly.", "Trials are off; move the clock by {k}."),
            tool=main,
            k=amount,
        )
    result = yield from play.call(main, variant.args("main", time=start, delta=delta), act)
    seconds = parse_clock(result.observation) if result.ok else None
    yield play.answer(None if seconds is None else render(seconds))


def docs_only(variant: Variant, task: Task, rng: random.Random) -> Generator[Step, CallRecord, None]:
    play, intent = Play(rng), task.metadata["intent"]
    result = yield from play.call_as_documented(variant, time=intent["time"], delta=intent["amount"])
    seconds = parse_clock(result.observation) if result.ok else None
    yield play.answer(None if seconds is None else render(seconds))


# -------------------------------------------------------------- feedback levels (feedback.py)
FEEDBACK = {"step": fb.SILENT}


def feedback(variant: Variant, kind: str) -> dict[str, str]:
    """The silent step, unless it is the unit the question asks in (kind 'hours' / 'minutes')."""
    natural = variant.conv["step_s"] == UNIT_SECONDS[kind.removesuffix("s")]
    return fb.quirks(FEEDBACK, *(() if natural else ("step",)))


FAMILY = FamilySpec(FAMILY_NAME, "clk", False, make_variant, make_task, expert, docs_only, feedback)
