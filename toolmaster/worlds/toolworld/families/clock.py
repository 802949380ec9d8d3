"""Family ``clock`` (unseen: never in train): wall-clock arithmetic on HH:MM times (wrapping at midnight).

Tests finding a silent unit with a probe on a time whose answer is obvious.
Hidden convention: ``delta`` counts *minutes* although questions often speak in hours; moving 09:30 by
3 lands on 09:33. The natural reading is right for the minute questions and wrong for the hour ones.
Decoy: a tool taking the same time that rounds it to the nearest quarter hour.
"""

from __future__ import annotations

import random
import re
from collections.abc import Generator
from typing import Any

from toolmaster.envs.environment import CallRecord
from toolmaster.envs.task import Task
from toolmaster.envs.tool import Tool
from toolmaster.worlds.scripted import Step
from toolmaster.worlds.toolworld.common import (
    DOCS_CALL,
    FamilySpec,
    NameGen,
    Play,
    TaskDraft,
    Variant,
    gold,
    say,
    schema,
)

DAY = 24 * 60
UNIT_MINUTES = {"minute": 1, "hour": 60}

_DOCS = ("Move a clock time by delta.", "Clock arithmetic.", "Add to a time of day.")
_DECOY_DOCS = ("Tidy a clock time.", "Normalise a time of day.")


def parse_clock(text: str) -> int | None:
    match = re.search(r"\b(\d{1,2}):(\d{2})\b", text or "")
    if not match:
        return None
    hours, minutes = int(match.group(1)), int(match.group(2))
    return hours * 60 + minutes if hours < 24 and minutes < 60 else None


def render(minutes: int) -> str:
    minutes %= DAY
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def make_variant(rng: random.Random, names: NameGen, evolved: bool) -> Variant:
    prefix = names.prefix()
    main = names.name(prefix, ("clk", "hhm", "tmv"))
    decoy = names.name(prefix, ("tdy", "qtr", "nrm"))
    p_time, p_delta = rng.choice(("time", "at")), rng.choice(("delta", "plus"))

    def time_of(value: Any) -> int:
        minutes = parse_clock(str(value))
        if minutes is None:
            raise ValueError(f"bad {p_time} {value!r}")
        return minutes

    def main_fn(**kwargs: Any) -> str:
        return render(time_of(kwargs[p_time]) + int(kwargs[p_delta]))

    def decoy_fn(**kwargs: Any) -> str:
        return render(round(time_of(kwargs[p_time]) / 15) * 15)

    tools = [
        Tool(
            main,
            rng.choice(_DOCS),
            schema({p_time: ("string", "HH:MM"), p_delta: ("integer", "amount to add")}),
            main_fn,
            family="clock",
        ),
        Tool(decoy, rng.choice(_DECOY_DOCS), schema({p_time: ("string", "HH:MM")}), decoy_fn, family="clock"),
    ]
    return Variant(
        family="clock",
        key="clock",
        evolved=evolved,
        tools=tools,
        roles={"main": main, "decoy": decoy},
        params={"main": {"time": p_time, "delta": p_delta}, "decoy": {"time": p_time}},
        conv={"unit": "minute"},
    )


_QUERIES = (
    "What time is it {k} {u}s {d} {t}? Answer as HH:MM (24-hour).",
    "A clock shows {t}. What will it show {k} {u}s {d2}? Answer as HH:MM.",
    "Starting at {t}, move {k} {u}s {d3}. What time is it? Answer as HH:MM (24-hour).",
)


def make_task(variant: Variant, rng: random.Random) -> TaskDraft:
    start = rng.randint(0, DAY - 1)
    unit = "hour" if rng.random() < 0.6 else "minute"
    k = rng.randint(2, 30) if unit == "hour" else rng.randint(5, 500)
    sign = -1 if rng.random() < 0.3 else 1
    words = {
        "d": "after" if sign > 0 else "before",
        "d2": "later" if sign > 0 else "earlier",
        "d3": "forward" if sign > 0 else "back",
    }
    minutes = sign * k * UNIT_MINUTES[unit]
    return TaskDraft(
        kind=f"{unit}s",
        query=say(rng, _QUERIES, k=k, u=unit, t=render(start), **words),
        answer=render(start + minutes),
        gold_calls=[gold(variant.roles["main"], variant.args("main", time=render(start), delta=minutes))],
        intent={"time": render(start), "amount": sign * k, "unit": unit},
        convention="delta counts minutes",
    )


def expert(variant: Variant, task: Task, rng: random.Random) -> Generator[Step, CallRecord, None]:
    play = Play(rng)
    main = variant.roles["main"]
    intent = task.metadata["intent"]
    start, amount, unit = intent["time"], intent["amount"], intent["unit"]
    thought = play.say(
        (
            "What unit is delta? Trial {k} from {t} and see how far it moves.",
            "The doc does not say if delta is hours or minutes; test {k}.",
            "Try delta={k} on {t}; the answer shows the unit.",
        ),
        k=amount,
        t=start,
    )
    record = yield from play.trial(main, variant.args("main", time=start, delta=amount), thought)
    delta = amount
    if record is not None and record.ok:
        begin, end = parse_clock(start), parse_clock(record.observation)
        if begin is not None and end is not None:
            moved = (end - begin) % DAY if amount > 0 else -((begin - end) % DAY)
            step = moved / amount
            wanted = UNIT_MINUTES[unit]
            if step > 0 and step != wanted:
                delta = round(amount * wanted / step)
                act = play.say(
                    (
                        "{t} moved to {o}: delta counts minutes. {k} {u}s is {n}.",
                        "It only moved {m} minutes, so delta is in minutes. Send {n}.",
                    ),
                    t=start,
                    o=render(end),
                    k=amount,
                    u=unit,
                    n=delta,
                    m=abs(moved),
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
    minutes = parse_clock(result.observation) if result.ok else None
    yield play.answer(None if minutes is None else render(minutes))


def docs_only(variant: Variant, task: Task, rng: random.Random) -> Generator[Step, CallRecord, None]:
    play = Play(rng)
    main = variant.roles["main"]
    intent = task.metadata["intent"]
    args = variant.args("main", time=intent["time"], delta=intent["amount"])
    result = yield from play.call(main, args, play.say(DOCS_CALL, tool=main))
    minutes = parse_clock(result.observation) if result.ok else None
    yield play.answer(None if minutes is None else render(minutes))


FAMILY = FamilySpec("clock", "clk", False, make_variant, make_task, expert, docs_only)
