"""Family ``booking`` (unseen): book a meeting room for some hours on a day and report what is still free.

Quirks (from ``quirks``):
- undocumented argument format revealed by an error: the day must be written in a drawn date template
  ('DD.MM.YYYY', 'MM/DD/YYYY', 'YYYYMMDD', ...); the ISO date of the question is never accepted.
- silent scale, echoed: ``span`` counts slots of a drawn length (10, 12, 15, 20, 30, 60 or 120
  minutes); the booking echoes its start and end time, which show the length booked.
- irreversible state: a booking takes the room's free time for good (no cancel tool).
- renamed fields: the free-time field of the result is named per variant.
Held out: no variant of this family is ever trained on.
Decoy: an opening-hours tool on the same room and day that returns opening times and seats.
"""

from __future__ import annotations

import random
from collections.abc import Generator
from datetime import date, timedelta
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
    fmt_num,
    say,
)

FAMILY_NAME = "booking"
SLOTS = (10, 12, 15, 20, 30, 60, 120)  # minutes per span unit
DAY = {"YYYY": r"\d{4}", "MM": r"\d{2}", "DD": r"\d{2}"}
FORMATS = (
    "DD.MM.YYYY",
    "MM/DD/YYYY",
    "DD/MM/YYYY",
    "YYYY/MM/DD",
    "YYYYMMDD",
    "DD-MM-YYYY",
    "MM-DD-YYYY",
    "YYYY.MM.DD",
)
ROOMS = ("lark", "heron", "finch", "osprey", "wren", "kestrel", "plover", "swift")
KEYS = {"free": ("free_h", "hours_free", "left_h", "open_h")}
OPEN = 8 * 60  # rooms open at 08:00

_TOOL_NAMES = {"main": ("bk", "rsv", "room"), "decoy": ("hrs", "opn")}
_ARG_NAMES = {"room": ("room", "space"), "day": ("day", "date"), "span": ("span", "length")}
_DOCS = ("Book a room for a day.", "Reserve a meeting room.", "Room booking.")
_DECOY_DOCS = ("Opening hours of a room on a day.", "Room facts for a day.")


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def make_variant(rng: random.Random, names: NameGen, evolved: bool) -> Variant:
    roles, p = q.draw_names(rng, names, evolved, _TOOL_NAMES, _ARG_NAMES)
    conv = {"day": rng.choice(FORMATS), "slot": rng.choice(SLOTS), "keys": q.draw_keys(rng, KEYS)}
    day_format = q.Template(conv["day"], DAY)

    def where(state: dict[str, Any], kw: dict[str, Any]) -> tuple[str, str]:
        room = str(kw[p["room"]]).strip().lower()
        parts = day_format.read(p["day"], kw[p["day"]])
        try:
            iso = date(int(parts["YYYY"]), int(parts["MM"]), int(parts["DD"])).isoformat()
        except ValueError as exc:
            raise ValueError(f"bad {p['day']} {kw[p['day']]!r}: {exc}") from None
        if room not in state["free"] or iso not in state["free"][room]:
            raise LookupError(f"room {room!r} cannot be booked on {iso}")
        return room, iso

    def book(state: dict[str, Any], **kw: Any) -> dict[str, Any]:
        room, iso = where(state, kw)
        span = int(kw[p["span"]])
        if span <= 0:
            raise ValueError(f"{p['span']} must be positive")
        start = OPEN + state["booked"][room][iso]
        minutes = span * conv["slot"]
        free = q.consume(state["free"][room], iso, minutes, "minutes")
        state["booked"][room][iso] += minutes
        return {
            "room": room,
            "from": _hhmm(start),
            "to": _hhmm(start + minutes),
            conv["keys"]["free"]: free / 60,
        }

    def hours(state: dict[str, Any], **kw: Any) -> dict[str, Any]:
        room, _ = where(state, kw)
        return {"room": room, "opens": "08:00", "closes": "20:00", "seats": 4 + len(room)}

    room_day_args = {"room": ("string", "room"), "day": ("string", "date")}
    main = q.ToolSpec(rng.choice(_DOCS), {**room_day_args, "span": ("integer", "duration")}, book)
    decoy = q.ToolSpec(rng.choice(_DECOY_DOCS), room_day_args, hours)
    return q.variant(FAMILY_NAME, evolved, roles, p, conv, main=main, decoy=decoy)


_Q = (
    "Book room {r} for {h} hours on {d}. How many hours are still free in it that day? Answer with the number only.",
    "Reserve {r} on {d} for {h} hours, then tell me the room's free hours left that day. Answer with the number only.",
    "I need room {r} for {h} hours on {d}. After booking, how many hours remain free? Answer with the number only.",
)


def make_task(variant: Variant, rng: random.Random) -> TaskDraft:
    rooms = rng.sample(ROOMS, 3)
    first = date(2025, 1, 1) + timedelta(days=rng.randint(0, 700))
    days = [(first + timedelta(days=k)).isoformat() for k in range(3)]
    booked = {r: {d: rng.randint(0, 4) * 30 for d in days} for r in rooms}
    free = {r: {d: 720 - booked[r][d] for d in days} for r in rooms}
    room, day, h = rooms[0], rng.choice(days), rng.choice((2, 4, 6))
    template = q.Template(variant.conv["day"], DAY)
    text = template.render(YYYY=day[:4], MM=day[5:7], DD=day[8:])
    span = h * 60 // variant.conv["slot"]
    return TaskDraft(
        kind="book",
        query=say(rng, _Q, r=room, h=h, d=day),
        answer=fmt_num((free[room][day] - h * 60) / 60),
        gold_calls=[
            {"name": variant.roles["main"], "arguments": variant.args("main", room=room, day=text, span=span)}
        ],
        intent={"room": room, "day": day, "hours": h},
        convention=f"days as {variant.conv['day']}; span counts {variant.conv['slot']}-minute slots",
        initial_state={"free": free, "booked": booked},
    )


def booked_minutes(observation: str) -> int | None:
    """Expert side: the length of a booking from its echoed start and end ('09:00' to '09:40')."""
    start, end = q.pick(observation, ("from",)), q.pick(observation, ("to",))
    if not (isinstance(start, str) and isinstance(end, str)):
        return None
    (h1, m1), (h2, m2) = (map(int, t.split(":")) for t in (start, end))
    return (h2 * 60 + m2) - (h1 * 60 + m1)


def expert(variant: Variant, task: Task, rng: random.Random) -> Generator[Step, CallRecord, None]:
    play = Play(rng)
    main, intent = variant.roles["main"], task.metadata["intent"]
    room, day, h = intent["room"], intent["day"], intent["hours"]
    day_format, span = q.Template("YYYY-MM-DD", DAY), h

    def args(n: int) -> dict[str, Any]:
        return variant.args(
            "main", room=room, day=day_format.render(YYYY=day[:4], MM=day[5:7], DD=day[8:]), span=n
        )

    thought = play.say(
        (
            "Bookings cannot be cancelled, so trial first: book {r} for {h} on {d} in the sandbox.",
            "What does span count? A sandbox booking of {h} shows it, and the date format too.",
            "Trial {tool} with span {h}; the echoed times show how long it really books.",
        ),
        r=room,
        h=h,
        d=day,
        tool=main,
    )
    record = yield from play.trial(main, args(h), thought)
    if record is not None and not record.ok and q.Template.learn(record.observation, DAY):
        day_format = q.Template.learn(record.observation, DAY) or day_format
        again = play.say(
            ("Dates are written '{f}'. Trial again.", "The error shows the date format '{f}'; retry."),
            f=day_format.text,
        )
        record = yield from play.trial(main, args(h), again)
    slot = None
    if record is not None:
        minutes = booked_minutes(record.observation) if record.ok else q.needed(record.observation)
        slot = round(minutes / h) if minutes else None
    if slot:
        span = h * 60 // slot
        act = play.say(
            (
                "Span {h} booked {m} minutes: one span is {s} minutes. {h} hours is span {n}.",
                "The echo shows {m} min for span {h}, so slots of {s} min; book span {n}.",
            ),
            h=h,
            m=slot * h,
            s=slot,
            n=span,
        )
    else:
        act = play.say(("No trials; book directly.", "Trials are off, so book for real."))
    result = yield from play.call(main, args(span), act)
    if not result.ok and q.Template.learn(result.observation, DAY):
        day_format = q.Template.learn(result.observation, DAY) or day_format
        fix = play.say(("Dates must look like '{f}'. Retry.",), f=day_format.text)
        result = yield from play.call(main, args(span), fix)
    free = q.pick(result.observation, KEYS["free"]) if result.ok else None
    yield play.answer(None if free is None else fmt_num(free))


def docs_only(variant: Variant, task: Task, rng: random.Random) -> Generator[Step, CallRecord, None]:
    play, intent = Play(rng), task.metadata["intent"]
    result = yield from play.call_as_documented(
        variant, room=intent["room"], day=intent["day"], span=intent["hours"]
    )
    free = q.pick(result.observation, KEYS["free"]) if result.ok else None
    yield play.answer(None if free is None else fmt_num(free))


# -------------------------------------------------------------- feedback levels (feedback.py)
FEEDBACK = {"day": fb.NAMES_FIX, "slot": fb.SILENT}


def feedback(variant: Variant, kind: str) -> dict[str, str]:
    """The day template (quoted by the error) always; the slot length unless a span is one hour."""
    return fb.quirks(FEEDBACK, "day", *(() if variant.conv["slot"] == 60 else ("slot",)))


FAMILY = FamilySpec(FAMILY_NAME, "book", False, make_variant, make_task, expert, docs_only, feedback)
