"""Family ``geo`` (unseen): great-circle distance between two points given by latitude and longitude.

Quirks (from ``quirks``):
- undocumented argument format revealed by an error: points must be written in a drawn template
  ('LAT;LON', '(LON|LAT)', ...); the natural "48.85, 2.35" is never accepted and the error quotes the
  template, for both points at once.
- silent scale probed with an obvious input: the distance comes back as a bare number in a hidden unit
  (km, miles, nautical miles, metres, feet, yards, chains). One degree of latitude along a meridian,
  (0, 0) to (1, 0), is 111.19 km, so a probe there shows the unit.
Held out: no variant of this family is ever trained on.
Decoy: a bearing tool on the same two points that returns the initial compass bearing.
"""

from __future__ import annotations

import math
import random
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
    first_number,
    fmt_num,
    say,
)

FAMILY_NAME = "geo"
EARTH_KM = 6371.0
PER_KM = {
    "km": 1.0,
    "mi": 0.621371,
    "nmi": 0.539957,
    "m": 1000.0,
    "ft": 3280.84,
    "yd": 1093.61,
    "ch": 49.7097,
}
POINT = {"LAT": r"-?\d+(?:\.\d+)?", "LON": r"-?\d+(?:\.\d+)?"}
FORMATS = ("LAT;LON", "LON;LAT", "(LAT|LON)", "LON/LAT", "LAT LON", "[LON:LAT]", "LAT_LON", "lat=LAT&lon=LON")
DEGREE_KM = EARTH_KM * math.pi / 180  # the probe: one degree along a meridian

_TOOL_NAMES = {"main": ("dst", "gcd", "far"), "decoy": ("brg", "hdg")}
_ARG_NAMES = {"a": ("a", "src", "origin"), "b": ("b", "dst", "target")}
_DOCS = (
    "Distance between two points.",
    "How far apart two places are.",
    "Great-circle distance of two points.",
)
_DECOY_DOCS = ("Compass bearing from one point to another.", "Heading between two points.")


def haversine_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    (lat1, lon1), (lat2, lon2) = (tuple(map(math.radians, point)) for point in (a, b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_KM * math.asin(math.sqrt(h))


def make_variant(rng: random.Random, names: NameGen, evolved: bool) -> Variant:
    roles, p = q.draw_names(rng, names, evolved, _TOOL_NAMES, _ARG_NAMES)
    conv = {"point": rng.choice(FORMATS), "unit": rng.choice(sorted(PER_KM))}
    point = q.Template(conv["point"], POINT)

    def points(kw: dict[str, Any]) -> list[tuple[float, float]]:
        parsed = q.gather(lambda: point.read(p["a"], kw[p["a"]]), lambda: point.read(p["b"], kw[p["b"]]))
        out = [(float(v["LAT"]), float(v["LON"])) for v in parsed]
        if any(abs(lat) > 90 or abs(lon) > 180 for lat, lon in out):
            raise ValueError("latitude must be within +-90 and longitude within +-180")
        return out

    def distance(**kw: Any) -> float:
        a, b = points(kw)
        return round(haversine_km(a, b) * PER_KM[conv["unit"]], 4)

    def bearing(**kw: Any) -> float:
        (lat1, lon1), (lat2, lon2) = ((math.radians(x), math.radians(y)) for x, y in points(kw))
        y = math.sin(lon2 - lon1) * math.cos(lat2)
        x = math.cos(lat1) * math.sin(lat2) - math.sin(lat1) * math.cos(lat2) * math.cos(lon2 - lon1)
        return round(math.degrees(math.atan2(y, x)) % 360, 1)

    point_args = {"a": ("string", "first point"), "b": ("string", "second point")}
    main = q.ToolSpec(rng.choice(_DOCS), point_args, distance)
    decoy = q.ToolSpec(rng.choice(_DECOY_DOCS), point_args, bearing)
    return q.variant(FAMILY_NAME, evolved, roles, p, conv, main=main, decoy=decoy)


_Q = (
    "How far is it from {a} to {b} (latitude, longitude)? Answer in km, rounded to a whole number, number only.",
    "Give the great-circle distance between {a} and {b} (lat, lon) in kilometres. Answer with a whole number only.",
    "A drone flies from {a} to {b} (latitude, longitude). How many km is that? Answer with a whole number only.",
)


def _natural(lat: float, lon: float) -> str:
    return f"{fmt_num(lat)}, {fmt_num(lon)}"


def make_task(variant: Variant, rng: random.Random) -> TaskDraft:
    a, b = ((round(rng.uniform(-60, 70), 2), round(rng.uniform(-179, 179), 2)) for _ in range(2))
    point = q.Template(variant.conv["point"], POINT)
    render = [point.render(LAT=fmt_num(lat), LON=fmt_num(lon)) for lat, lon in (a, b)]
    return TaskDraft(
        kind="distance",
        query=say(rng, _Q, a=_natural(*a), b=_natural(*b)),
        answer=str(round(haversine_km(a, b))),
        gold_calls=[
            {"name": variant.roles["main"], "arguments": variant.args("main", a=render[0], b=render[1])}
        ],
        intent={"a": list(a), "b": list(b)},
        convention=f"points as {variant.conv['point']}; distance in {variant.conv['unit']}",
    )


def expert(variant: Variant, task: Task, rng: random.Random) -> Generator[Step, CallRecord, None]:
    play = Play(rng)
    main, intent = variant.roles["main"], task.metadata["intent"]
    point = q.Template("LAT, LON", POINT)

    def args(a: list[float], b: list[float]) -> dict[str, Any]:
        return variant.args(
            "main",
            a=point.render(LAT=fmt_num(a[0]), LON=fmt_num(a[1])),
            b=point.render(LAT=fmt_num(b[0]), LON=fmt_num(b[1])),
        )

    probe = ([0.0, 0.0], [1.0, 0.0])
    thought = play.say(
        (
            "Neither the point format nor the unit is documented. Probe one degree of latitude: 111.19 km.",
            "Trial {tool} on (0, 0) to (1, 0), a known 111.19 km, to see the format and the unit.",
            "Calibrate first: one degree along a meridian should come out as 111.19 km.",
        ),
        tool=main,
    )
    record = yield from play.trial(main, args(*probe), thought)
    if record is not None and not record.ok and q.Template.learn(record.observation, POINT):
        point = q.Template.learn(record.observation, POINT) or point
        again = play.say(
            (
                "Points are written '{f}'. Probe again in that form.",
                "The error shows the format '{f}'; retry.",
            ),
            f=point.text,
        )
        record = yield from play.trial(main, args(*probe), again)
    per_km = 1.0
    if record is not None and record.ok:
        per_km = q.snap(first_number(record.observation) or DEGREE_KM, DEGREE_KM, tuple(PER_KM.values()))
        act = play.say(
            (
                "One degree came out as {o}: {f:g} units per km. Measure the real trip.",
                "{o} for 111.19 km: divide by {f:g}.",
            ),
            o=record.observation,
            f=per_km,
        )
    else:
        act = play.say(
            ("No trials; measure directly.", "Trials are off; call {tool} on the two points."), tool=main
        )
    result = yield from play.call(main, args(intent["a"], intent["b"]), act)
    if not result.ok and q.Template.learn(result.observation, POINT):
        point = q.Template.learn(result.observation, POINT) or point
        fix = play.say(("Points must look like '{f}'. Retry.",), f=point.text)
        result = yield from play.call(main, args(intent["a"], intent["b"]), fix)
    value = first_number(result.observation) if result.ok else None
    yield play.answer(None if value is None else str(round(value / per_km)))


def docs_only(variant: Variant, task: Task, rng: random.Random) -> Generator[Step, CallRecord, None]:
    play, intent = Play(rng), task.metadata["intent"]
    result = yield from play.call_as_documented(variant, a=_natural(*intent["a"]), b=_natural(*intent["b"]))
    value = first_number(result.observation) if result.ok else None
    yield play.answer(None if value is None else str(round(value)))


# -------------------------------------------------------------- feedback levels (feedback.py)
FEEDBACK = {"point": fb.NAMES_FIX, "unit": fb.SILENT}


def feedback(variant: Variant, kind: str) -> dict[str, str]:
    """The point template (quoted by the error) always; the distance unit unless it is km."""
    return fb.quirks(FEEDBACK, "point", *(() if variant.conv["unit"] == "km" else ("unit",)))


FAMILY = FamilySpec(FAMILY_NAME, "geo", False, make_variant, make_task, expert, docs_only, feedback)
