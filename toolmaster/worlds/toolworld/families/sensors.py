"""Family ``sensors`` (seen): a pressure sensor's reading at an hour, from a log kept in the episode state.

Quirks (from ``quirks``):
- id format revealed by an error: the question names "sensor 12"; the tool wants a drawn id format.
- silent scale, probed with an obvious input: readings come back in a hidden unit (Pa, hPa, MPa, ...
  a power of ten times kPa, no unit shown). The question gives one known reading in kPa, so reading
  that hour in a trial shows the factor; the asked hour is then divided by it.
Evolved variant: renamed tools and arguments, suffix-style ids, and the hour argument wants a drawn
undocumented format ('HHMM', 'HH.MM', ...) that the same error reveals (every problem is reported at once).
Decoy: a sensor-info tool on the same id that returns model, site and calibration year.
"""

from __future__ import annotations

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

FAMILY_NAME = "sensors"
FACTORS = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)  # reading per kPa
HOUR = {"HH": r"\d{2}", "MM": r"\d{2}"}
HOUR_FORMATS = ("HH:MM",)
EVOLVED_HOUR_FORMATS = ("HHMM", "HH.MM", "HHhMM", "HH-MM", "T+HH:MM", "HH_MM")

_TOOL_NAMES = {
    "main": (("rd", "prs", "log"), ("gage", "baro", "fetch")),
    "decoy": (("inf", "meta"), ("desc", "spec")),
}
_ARG_NAMES = {"sensor": (("sensor", "sid"), ("probe", "gauge")), "at": (("at", "time"), ("hour", "when"))}
_DOCS = {
    False: ("Pressure reading of a sensor at a time.", "Read a pressure sensor.", "Sensor log lookup."),
    True: ("Barometric probe value at an hour.", "Fetch what a gauge recorded."),
}
_DECOY_DOCS = ("Sensor details.", "Describe a sensor.", "Sensor metadata.")


def make_variant(rng: random.Random, names: NameGen, evolved: bool) -> Variant:
    roles, p = q.draw_names(rng, names, evolved, _TOOL_NAMES, _ARG_NAMES)
    conv = {
        "id": q.IdFormat.draw(rng, ("PS", "SEN", "BAR", "GX"), evolved).spec(),
        "factor": q.draw_factor(rng, FACTORS),
        "hour": rng.choice(EVOLVED_HOUR_FORMATS if evolved else HOUR_FORMATS),
    }
    ids, hour = q.IdFormat(**conv["id"]), q.Template(conv["hour"], HOUR)

    def locate(state: dict[str, Any], kw: dict[str, Any], with_hour: bool) -> tuple[str, str]:
        checks = [lambda: str(ids.read("sensor", kw[p["sensor"]]))]
        if with_hour:
            checks.append(lambda: hour.read(p["at"], kw[p["at"]]))
        found = q.gather(*checks)
        sensor = found[0]
        if sensor not in state["log"]:
            raise LookupError(f"no sensor {kw[p['sensor']]!r} on this site")
        return sensor, f"{found[1]['HH']}:{found[1]['MM']}" if with_hour else ""

    def read(state: dict[str, Any], **kw: Any) -> float:
        sensor, at = locate(state, kw, True)
        if at not in state["log"][sensor]:
            raise LookupError(f"no reading at {kw[p['at']]!r}")
        return round(state["log"][sensor][at] * conv["factor"], 6)

    def info(state: dict[str, Any], **kw: Any) -> dict[str, Any]:
        sensor, _ = locate(state, kw, False)
        return {
            "model": f"BX-{len(sensor)}0",
            "site": "roof" if int(sensor) % 2 else "basement",
            "calibrated": 2021,
        }

    sensor_arg = {"sensor": ("string", "sensor id")}
    main = q.ToolSpec(rng.choice(_DOCS[evolved]), {**sensor_arg, "at": ("string", "time of day")}, read)
    decoy = q.ToolSpec(rng.choice(_DECOY_DOCS), sensor_arg, info)
    return q.variant(FAMILY_NAME, evolved, roles, p, conv, main=main, decoy=decoy)


_Q = (
    "Sensor {s} read {r} kPa at {h1}. What did it read at {h2}, in kPa? Answer with the number only.",
    "At {h1} sensor {s} showed {r} kPa. Give its reading at {h2} in kPa. Answer with the number only.",
    "Sensor {s}: {r} kPa at {h1}. What was the pressure at {h2} (kPa)? Answer with the number only.",
)


def make_task(variant: Variant, rng: random.Random) -> TaskDraft:
    numbers = rng.sample(range(1, 500), 3)
    log = {str(n): {f"{h:02d}:00": rng.randint(800, 1200) / 10 for h in range(24)} for n in numbers}
    sensor = numbers[0]
    h1, h2 = (f"{h:02d}:00" for h in rng.sample(range(24), 2))
    ids, hour = q.IdFormat(**variant.conv["id"]), q.Template(variant.conv["hour"], HOUR)
    at = hour.render(HH=h2[:2], MM="00")
    return TaskDraft(
        kind="reading",
        query=say(rng, _Q, s=sensor, r=fmt_num(log[str(sensor)][h1]), h1=h1, h2=h2),
        answer=fmt_num(log[str(sensor)][h2]),
        gold_calls=[
            {
                "name": variant.roles["main"],
                "arguments": variant.args("main", sensor=ids.render(sensor), at=at),
            }
        ],
        intent={"sensor": sensor, "known": log[str(sensor)][h1], "known_at": h1, "asked_at": h2},
        convention=f"ids like {ids.render(7)}; hours as {variant.conv['hour']}; x{variant.conv['factor']:g} per kPa",
        initial_state={"log": log},
    )


def expert(variant: Variant, task: Task, rng: random.Random) -> Generator[Step, CallRecord, None]:
    play = Play(rng)
    main, intent = variant.roles["main"], task.metadata["intent"]
    number, known, h1, h2 = intent["sensor"], intent["known"], intent["known_at"], intent["asked_at"]
    sensor, hour = str(number), q.Template("HH:MM", HOUR)

    def args(at: str) -> dict[str, Any]:
        return variant.args("main", sensor=sensor, at=hour.render(HH=at[:2], MM=at[3:]))

    thought = play.say(
        (
            "The unit is not documented. Read the hour I know ({h1}: {r} kPa) first to compare.",
            "Probe {tool} at {h1}, where the answer is known to be {r} kPa.",
            "Calibrate on the known reading: sensor {s} at {h1} should be {r} kPa.",
        ),
        h1=h1,
        r=fmt_num(known),
        s=number,
        tool=main,
    )
    record = yield from play.trial(main, args(h1), thought)
    if record is not None and not record.ok:  # the error names every format problem at once
        sensor = q.learn_id(record.observation, number) or sensor
        hour = q.Template.learn(record.observation, HOUR) or hour
        again = play.say(
            (
                "The error shows the formats: '{s}', hours as '{h}'. Probe again.",
                "Retry the probe as '{s}' at '{h}'.",
            ),
            s=sensor,
            h=hour.text,
        )
        record = yield from play.trial(main, args(h1), again)
    factor = 1.0
    if record is not None and record.ok:
        factor = q.snap(first_number(record.observation) or known, known, FACTORS)
        act = play.say(
            (
                "It returned {o} for {r} kPa: readings are x{f:g}. Now read {h2}.",
                "{o} means {r} kPa, a factor {f:g}; read {h2}.",
            ),
            o=record.observation,
            r=fmt_num(known),
            f=factor,
            h2=h2,
        )
    else:
        act = play.say(("No trials; read {h2} directly.", "Trials are off; read the sensor at {h2}."), h2=h2)
    result = yield from play.call(main, args(h2), act)
    if not result.ok:
        sensor = q.learn_id(result.observation, number) or sensor
        hour = q.Template.learn(result.observation, HOUR) or hour
        fix = play.say(("The error shows the formats; retry as '{s}'.",), s=sensor)
        result = yield from play.call(main, args(h2), fix)
    value = first_number(result.observation) if result.ok else None
    yield play.answer(None if value is None else fmt_num(value / factor, 6))


def docs_only(variant: Variant, task: Task, rng: random.Random) -> Generator[Step, CallRecord, None]:
    play, intent = Play(rng), task.metadata["intent"]
    result = yield from play.call_as_documented(variant, sensor=str(intent["sensor"]), at=intent["asked_at"])
    value = first_number(result.observation) if result.ok else None
    yield play.answer(None if value is None else fmt_num(value, 6))


# -------------------------------------------------------------- feedback levels (feedback.py)
FEEDBACK = {"id": fb.EXAMPLE, "hour": fb.NAMES_FIX, "factor": fb.SILENT}


def feedback(variant: Variant, kind: str) -> dict[str, str]:
    """The id format (an example id); the hour template (evolved); the reading's scale unless x1."""
    hour = () if variant.conv["hour"] == "HH:MM" else ("hour",)
    return fb.quirks(FEEDBACK, "id", *hour, *(() if variant.conv["factor"] == 1 else ("factor",)))


FAMILY = FamilySpec(FAMILY_NAME, "sens", True, make_variant, make_task, expert, docs_only, feedback)
