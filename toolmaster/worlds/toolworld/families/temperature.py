"""Family ``temperature`` (unseen: never in train): temperature conversion between C, F and K.

Tests combining an error-revealed format with a silent scale found by a probe with a known answer.
Hidden conventions:
- ``scale`` takes a seeded code such as 'C2F', 'c>f' or 'C_F' (6 separators, 2 cases); a natural
  'fahrenheit' raises an error that lists the accepted codes.
- the result is an integer in *tenths* or *hundredths of a degree* (100 C -> F gives 2120 or 21200);
  converting a value whose answer everyone knows (100 C is 212 F) exposes the factor.
24 conventions.
Decoy: a tool taking the same value that classifies it as cold / mild / hot.
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
    first_number,
    gold,
    nearest_power_of_ten,
    say,
)

FAMILY_NAME = "temperature"
SCALES = {"C": "Celsius", "F": "Fahrenheit", "K": "Kelvin"}
# a value per source scale whose conversions everyone knows (boiling water)
KNOWN = {"C": 100.0, "F": 212.0, "K": 373.15}

_TOOL_NAMES = {"main": ("thm", "tcv", "dgx"), "decoy": ("tck", "feel", "thr")}
_ARG_NAMES = {"value": ("value", "deg", "reading", "t"), "scale": ("scale", "mode", "conv", "pair")}
_DOCS = ("Convert a temperature.", "Temperature conversion.", "Thermal unit converter.")
_DECOY_DOCS = ("Temperature check.", "Rate a temperature reading.")


def to_kelvin(value: float, scale: str) -> float:
    if scale == "C":
        return value + 273.15
    if scale == "F":
        return (value - 32) * 5 / 9 + 273.15
    return value


def convert(value: float, frm: str, to: str) -> float:
    kelvin = to_kelvin(value, frm)
    if to == "C":
        return kelvin - 273.15
    if to == "F":
        return (kelvin - 273.15) * 9 / 5 + 32
    return kelvin


def tenths(value: float, frm: str, to: str) -> int:
    return round(convert(value, frm, to) * 10)


_SEPS = ("2", ">", "-to-", "", "_", ":")


def make_variant(rng: random.Random, names: NameGen, evolved: bool) -> Variant:
    roles, p = q.draw_names(rng, names, evolved, _TOOL_NAMES, _ARG_NAMES)
    conv = {"sep": rng.choice(_SEPS), "upper": rng.random() < 0.6, "factor": rng.choice((10, 100))}
    sep, upper, factor = conv["sep"], conv["upper"], conv["factor"]

    def code(frm: str, to: str) -> str:
        text = f"{frm}{sep}{to}"
        return text if upper else text.lower()

    codes = {code(a, b): (a, b) for a in SCALES for b in SCALES if a != b}

    def main_fn(**kwargs: Any) -> int:
        given = str(kwargs[p["scale"]]).strip()
        pair = codes.get(given) or codes.get(given.upper() if upper else given.lower())
        if pair is None:
            raise ValueError(f"bad {p['scale']} {given!r}; use one of {', '.join(codes)}")
        return tenths(float(kwargs[p["value"]]), *pair) * factor // 10

    def decoy_fn(**kwargs: Any) -> str:
        value = float(kwargs[p["value"]])
        return "cold" if value < 10 else "mild" if value < 25 else "hot"

    value_arg = {"value": ("number", "temperature")}
    main = q.ToolSpec(rng.choice(_DOCS), {**value_arg, "scale": ("string", "target scale")}, main_fn)
    decoy = q.ToolSpec(rng.choice(_DECOY_DOCS), value_arg, decoy_fn)
    return q.variant(FAMILY_NAME, evolved, roles, p, conv, main=main, decoy=decoy)


_QUERIES = (
    "What is {v} degrees {f} in {t}? Answer with the number only, rounded to one decimal.",
    "Convert {v} degrees {f} to {t}. Answer with the number only (one decimal).",
    "A sensor reads {v} degrees {f}. What is that in {t}? Answer with the number only, one decimal.",
)


def make_task(variant: Variant, rng: random.Random) -> TaskDraft:
    frm, to = rng.sample(sorted(SCALES), 2)
    low, high = {"C": (-40, 120), "F": (-40, 250), "K": (230, 400)}[frm]
    value = rng.randint(low, high)
    text = f"{frm}{variant.conv['sep']}{to}"
    code = text if variant.conv["upper"] else text.lower()
    return TaskDraft(
        kind=f"{frm}_to_{to}",
        query=say(rng, _QUERIES, v=value, f=SCALES[frm], t=SCALES[to]),
        answer=f"{tenths(value, frm, to) / 10:.1f}",
        gold_calls=[gold(variant.roles["main"], variant.args("main", value=value, scale=code))],
        intent={"value": value, "from": frm, "to": to},
        convention=f"scale code {code!r}; result in 1/{variant.conv['factor']} degree",
    )


def pick_code(observation: str, frm: str, to: str) -> str | None:
    """The listed code whose first and last letters are the source and target scales."""
    listing = observation.split("one of", 1)[-1]
    for token in re.findall(r"[A-Za-z][A-Za-z0-9>:_\-]*[A-Za-z]", listing):
        letters = [ch for ch in token.upper() if ch.isalpha()]
        if letters and letters[0] == frm and letters[-1] == to:
            return token
    return None


def expert(variant: Variant, task: Task, rng: random.Random) -> Generator[Step, CallRecord, None]:
    play = Play(rng)
    main = variant.roles["main"]
    intent = task.metadata["intent"]
    value, frm, to = intent["value"], intent["from"], intent["to"]
    guess = SCALES[to].lower()
    thought = play.say(
        (
            "The scale format is not documented; try '{g}'.",
            "'target scale' could be a name. Trial '{g}'.",
            "Test {tool} with scale '{g}' and read the reply.",
        ),
        g=guess,
        tool=main,
    )
    record = yield from play.trial(main, variant.args("main", value=value, scale=guess), thought)
    scale: str | None = guess
    factor = 1.0
    if record is not None and not record.ok:
        scale = pick_code(record.observation, frm, to)
        if scale is None:
            yield play.answer(None)
            return
        probe_thought = play.say(
            (
                "Codes like '{c}'. Probe a known case: {k:g} {f} must give {e:g} {t}.",
                "Use '{c}' on {k:g} {f}; the answer should be {e:g}, which checks the output scale.",
            ),
            c=scale,
            k=KNOWN[frm],
            f=frm,
            e=round(convert(KNOWN[frm], frm, to), 2),
            t=to,
        )
        probe = yield from play.trial(
            main, variant.args("main", value=KNOWN[frm], scale=scale), probe_thought
        )
        got = first_number(probe.observation) if probe is not None and probe.ok else None
        if got is not None:
            factor = nearest_power_of_ten(got / convert(KNOWN[frm], frm, to))
        if factor != 1:
            act = play.say(
                (
                    "It returned {g:g} for {e:g}: results are scaled by {x:g}. Convert and divide.",
                    "Output is in 1/{x:g} degrees ({g:g} means {e:g}). Execute, then divide by {x:g}.",
                ),
                g=got,
                e=round(convert(KNOWN[frm], frm, to), 2),
                x=factor,
            )
        else:
            act = play.say(("The probe is exact. Convert {v}.",), v=value)
    elif record is None:
        act = play.say(("No trials; call {tool} directly.",), tool=main)
    else:
        act = play.say(("'{g}' is accepted. Execute.",), g=guess)
    result = yield from play.call(main, variant.args("main", value=value, scale=scale), act)
    if not result.ok:
        fixed = pick_code(result.observation, frm, to)
        if fixed is None:
            yield play.answer(None)
            return
        result = yield from play.call(
            main,
            variant.args("main", value=value, scale=fixed),
            play.say(("Use the listed code '{c}'.",), c=fixed),
        )
    number = first_number(result.observation) if result.ok else None
    yield play.answer(None if number is None else f"{number / factor:.1f}")


def docs_only(variant: Variant, task: Task, rng: random.Random) -> Generator[Step, CallRecord, None]:
    play, intent = Play(rng), task.metadata["intent"]
    result = yield from play.call_as_documented(
        variant, value=intent["value"], scale=SCALES[intent["to"]].lower()
    )
    if not result.ok:
        result = yield from play.call_as_documented(
            variant, retry=True, value=intent["value"], scale=intent["to"]
        )
    number = first_number(result.observation) if result.ok else None
    yield play.answer(None if number is None else f"{number:.1f}")


# -------------------------------------------------------------- feedback levels (feedback.py)
FEEDBACK = {"code": fb.NAMES_FIX, "factor": fb.SILENT}


def feedback(variant: Variant, kind: str) -> dict[str, str]:
    """The scale code (the error lists every code) and the result's silent tenths / hundredths, always."""
    return fb.quirks(FEEDBACK, "code", "factor")


FAMILY = FamilySpec(FAMILY_NAME, "temp", False, make_variant, make_task, expert, docs_only, feedback)
