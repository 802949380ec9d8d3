"""Family ``dates`` (seen): timestamp arithmetic ("what date is 12 days after 2024-05-03?").

Tests discovering a silent unit from a probe: the doc says "shift a timestamp by an offset" but not the
offset's unit; shifting by a known amount and comparing input and output timestamps reveals it.
Hidden conventions (18 per space): the offset counts steps of a silent size (seen: 1 h, 30, 15, 10, 5 or
1 min, so ``n=12`` moves 12 hours, not 12 days; evolved: 1-30 s), and the result comes back in one of
three timestamp layouts.
Tasks ask for day, hour or (evolved) minute shifts, so the natural reading is right only when the
question's unit happens to match the tool's.
Decoy: a tool with the same timestamp argument that returns the weekday / ISO week instead.
"""

from __future__ import annotations

import random
from collections.abc import Generator
from datetime import datetime, timedelta
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

FAMILY_NAME = "dates"
UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
_FORMATS = (
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
    "%Y/%m/%d %H:%M:%S",
)
DATE, STAMP = "%Y-%m-%d", "%Y-%m-%d %H:%M"

_TOOL_NAMES = {
    "main": (("dsh", "tsft", "dt"), ("tdsp", "mvt", "chr")),
    "decoy": (("dti", "tsi", "wk"), ("cal", "tfct", "wkd")),
}
_ARG_NAMES = {
    "ts": (("ts", "stamp", "start", "at"), ("moment", "when", "origin")),
    "n": (("n", "offset", "shift", "steps"), ("delta", "by", "move")),
}
_DOCS = {
    False: ("Shift a timestamp by an offset.", "Timestamp arithmetic.", "Move a date forward or back."),
    True: ("Offset a point in time.", "Calendar shifter: moves a moment by delta.", "Time displacement."),
}
_DECOY_DOCS = {
    False: ("Timestamp details.", "Inspect a timestamp."),
    True: ("Calendar facts for a moment.", "Describe a point in time."),
}


def parse_stamp(text: str) -> datetime | None:
    for fmt in _FORMATS:
        try:
            return datetime.strptime(text.strip().strip('"'), fmt)
        except ValueError:
            continue
    return None


# seconds per offset step: seen variants use steps that divide an hour, evolved ones steps that divide a
# minute (evolved questions also ask for minute shifts), so the two spaces are disjoint
_STEPS = {False: (3600, 1800, 900, 600, 300, 60), True: (1, 5, 10, 15, 20, 30)}
_OUT = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y/%m/%d %H:%M:%S")


def make_variant(rng: random.Random, names: NameGen, evolved: bool) -> Variant:
    roles, p = q.draw_names(rng, names, evolved, _TOOL_NAMES, _ARG_NAMES)
    conv = {"step_s": rng.choice(_STEPS[evolved]), "out": rng.choice(_OUT)}

    def parse_arg(value: Any) -> datetime:
        stamp = parse_stamp(str(value))
        if stamp is None:
            raise ValueError(f"bad {p['ts']} {value!r}; expected like '2024-01-31 08:00'")
        return stamp

    def main_fn(**kwargs: Any) -> str:
        stamp = parse_arg(kwargs[p["ts"]])
        return (stamp + timedelta(seconds=int(kwargs[p["n"]]) * conv["step_s"])).strftime(conv["out"])

    def decoy_fn(**kwargs: Any) -> dict[str, Any]:
        stamp = parse_arg(kwargs[p["ts"]])
        return {"weekday": stamp.strftime("%A"), "iso_week": stamp.isocalendar()[1]}

    timestamp_arg = {"ts": ("string", "timestamp")}
    main = q.ToolSpec(rng.choice(_DOCS[evolved]), {**timestamp_arg, "n": ("integer", "offset")}, main_fn)
    decoy = q.ToolSpec(rng.choice(_DECOY_DOCS[evolved]), timestamp_arg, decoy_fn)
    return q.variant(FAMILY_NAME, evolved, roles, p, conv, main=main, decoy=decoy)


_Q_DAY = (
    "What date is {k} days {dir} {start}? Answer as YYYY-MM-DD.",
    "Starting from {start}, go {k} days {dir2}. Which date is it? Answer as YYYY-MM-DD.",
)
_Q_TIME = (
    "What is the date and time {k} {unit}s {dir} {start}? Answer as YYYY-MM-DD HH:MM.",
    "A job starts at {start}. What is the timestamp {k} {unit}s {dir}? Answer as YYYY-MM-DD HH:MM.",
)


def make_task(variant: Variant, rng: random.Random) -> TaskDraft:
    units = ("day", "hour", "minute") if variant.evolved else ("day", "hour")
    unit = rng.choice(units)
    base = datetime(2019, 1, 1) + timedelta(days=rng.randint(0, 3650))
    sign = -1 if rng.random() < 0.25 else 1
    if unit == "day":
        k = rng.randint(2, 400)
        start, fmt = base.strftime(DATE), DATE
    else:
        base += timedelta(minutes=rng.randint(0, 95) * 15)
        k = rng.randint(2, 200) if unit == "hour" else rng.randint(20, 3000)
        start, fmt = base.strftime(STAMP), STAMP
    delta = sign * k * UNIT_SECONDS[unit]
    end = base + timedelta(seconds=delta)
    n = delta // variant.conv["step_s"]
    words = {"dir": "after" if sign > 0 else "before", "dir2": "forward" if sign > 0 else "back"}
    templates = _Q_DAY if unit == "day" else _Q_TIME
    return TaskDraft(
        kind=f"shift_{unit}s",
        query=say(rng, templates, k=k, start=start, unit=unit, **words),
        answer=end.strftime(fmt),
        gold_calls=[gold(variant.roles["main"], variant.args("main", ts=start, n=n))],
        intent={"start": start, "amount": sign * k, "unit": unit, "format": fmt},
        convention=f"offset counts steps of {variant.conv['step_s']} s",
    )


def _answer(observation: str, fmt: str) -> str | None:
    stamp = parse_stamp(observation)
    return stamp.strftime(fmt) if stamp is not None else None


def expert(variant: Variant, task: Task, rng: random.Random) -> Generator[Step, CallRecord, None]:
    play = Play(rng)
    main = variant.roles["main"]
    intent = task.metadata["intent"]
    start, amount, unit, fmt = intent["start"], intent["amount"], intent["unit"], intent["format"]
    thought = play.say(
        (
            "The doc does not give the offset's unit. Trial with {k} and compare the timestamps.",
            "Is the offset in days? Test n={k} on {s} and look at how far it moves.",
            "Try the natural call first; the output will show what one step means.",
            "Unknown unit for the offset: a trial with {k} reveals it.",
        ),
        k=amount,
        s=start,
    )
    record = yield from play.trial(main, variant.args("main", ts=start, n=amount), thought)
    n = amount
    if record is not None and record.ok:
        moved = parse_stamp(record.observation)
        begin = parse_stamp(start)
        if moved is not None and begin is not None:
            step = (moved - begin).total_seconds() / amount
            if step > 0 and step != UNIT_SECONDS[unit]:
                n = round(amount * UNIT_SECONDS[unit] / step)
                step_name = next((u for u, s in UNIT_SECONDS.items() if s == step), f"{step:g}-second step")
                act = play.say(
                    (
                        "It moved {k} {sn}s, not {u}s: one step is a {sn}. Send {n}.",
                        "The offset counts {sn}s. {k} {u}s is {n} steps.",
                        "So n is in {sn}s; convert {k} {u}s to {n}.",
                    ),
                    k=amount,
                    sn=step_name,
                    u=unit,
                    n=n,
                )
            else:
                act = play.say(
                    ("One step is one {u}, as needed. Execute.", "The unit matches ({u}s); run it."), u=unit
                )
            if play.rng.random() < 0.4 and n != amount:
                check = yield from play.trial(main, variant.args("main", ts=start, n=n), act)
                act = play.say(("Confirmed; now for real.", "The check lands where expected. Execute."))
                if check is not None and not check.ok:
                    n = amount
        else:
            act = play.say(("Could not read the output; execute as asked.",))
    else:
        act = play.say(
            ("No trials available; call {tool} directly.", "Trials are off; execute with n={k}."),
            tool=main,
            k=amount,
        )
    result = yield from play.call(main, variant.args("main", ts=start, n=n), act)
    yield play.answer(_answer(result.observation, fmt) if result.ok else None)


def docs_only(variant: Variant, task: Task, rng: random.Random) -> Generator[Step, CallRecord, None]:
    play, intent = Play(rng), task.metadata["intent"]
    result = yield from play.call_as_documented(variant, ts=intent["start"], n=intent["amount"])
    yield play.answer(_answer(result.observation, intent["format"]) if result.ok else None)


# -------------------------------------------------------------- feedback levels (feedback.py)
FEEDBACK = {"step": fb.SILENT}


def feedback(variant: Variant, kind: str) -> dict[str, str]:
    """The offset's silent step, unless it is the unit the question asks in ('shift_hours' and 1 h)."""
    unit = kind.removeprefix("shift_").removesuffix("s")
    return fb.quirks(FEEDBACK, *(() if variant.conv["step_s"] == UNIT_SECONDS[unit] else ("step",)))


FAMILY = FamilySpec(FAMILY_NAME, "date", True, make_variant, make_task, expert, docs_only, feedback)
