"""Family ``shipping`` (seen): postage for a parcel by weight and destination zone.

Tests noticing a silent unit from a probe result: the doc says ``weight: parcel weight`` with no unit,
but every result echoes the billed weight with its unit ("billed": "2.5 g").
Hidden conventions (10 seen, 6 evolved): the weight is read in a silent unit (seen: g, dag, hg, lb or
oz; evolved: kg, lb or oz) while questions give kilograms or grams, so the natural call is right at most
for one kind of question; the result's field names follow one of two schemes per space.
Price: base + per-100 g rate (rounded up to the next 100 g), per zone A-E; answers in dollars.
Decoy: a rate-card tool taking the same zone that returns the zone's tariff, not the postage.
"""

from __future__ import annotations

import math
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
    field_value,
    fmt_num,
    gold,
    load_json,
    say,
)

FAMILY_NAME = "shipping"
ZONES = "ABCDE"
GRAMS_PER = {"g": 1.0, "dag": 10.0, "hg": 100.0, "kg": 1000.0, "lb": 453.59237, "oz": 28.349523125}

_TOOL_NAMES = {
    "main": (("pst", "shp", "prc"), ("frt", "cns", "snd")),
    "decoy": (("zrt", "tar", "zn"), ("tarf", "rcard", "rgn")),
}
_ARG_NAMES = {
    "weight": (("weight", "w", "wt", "load"), ("mass", "heft", "gross")),
    "zone": (("zone", "dest", "band"), ("region", "area", "sector")),
}
_DOCS = {
    False: ("Postage for a parcel.", "Shipping cost of a parcel.", "Parcel price."),
    True: ("What a consignment costs to send.", "Freight charge for one package."),
}
_DECOY_DOCS = {
    False: ("Parcel rates for a zone.", "Zone tariff."),
    True: ("Freight tariff sheet by region.", "Regional rate card."),
}


def price_cents(tariff: dict[str, Any], grams: float, zone: str) -> int:
    hundreds = max(1, math.ceil(round(grams, 3) / 100 - 1e-9))
    return tariff["base"][zone] + tariff["per100"][zone] * hundreds


# the unit the weight is silently read in, and the result's (price, billed weight) field names
_UNITS = {False: ("g", "dag", "hg", "lb", "oz"), True: ("kg", "lb", "oz")}
_FIELDS = {
    False: (("cost", "billed"), ("postage", "billed_as")),
    True: (("charge", "billed_weight"), ("fee", "charged_for")),
}
PRICE_KEYS = ("cost", "postage", "charge", "fee")


def make_variant(rng: random.Random, names: NameGen, evolved: bool) -> Variant:
    roles, p = q.draw_names(rng, names, evolved, _TOOL_NAMES, _ARG_NAMES)
    conv = {"unit": rng.choice(_UNITS[evolved]), "fields": rng.choice(_FIELDS[evolved])}
    unit, (f_price, f_billed) = conv["unit"], conv["fields"]
    tariff = {
        "base": {z: rng.randint(250, 900) for z in ZONES},
        "per100": {z: rng.randint(15, 120) for z in ZONES},
    }

    def zone_of(value: Any) -> str:
        zone = str(value).strip().upper()
        if zone not in ZONES:
            raise ValueError(f"unknown {p['zone']} {value!r}")
        return zone

    def main_fn(**kwargs: Any) -> dict[str, Any]:
        weight = float(kwargs[p["weight"]])
        if weight <= 0:
            raise ValueError(f"{p['weight']} must be positive")
        cents = price_cents(tariff, weight * GRAMS_PER[unit], zone_of(kwargs[p["zone"]]))
        return {f_price: cents / 100, f_billed: f"{fmt_num(weight, 3)} {unit}"}

    def decoy_fn(**kwargs: Any) -> dict[str, Any]:
        zone = zone_of(kwargs[p["zone"]])
        return {"zone": zone, "base": tariff["base"][zone] / 100, "per_100g": tariff["per100"][zone] / 100}

    main = q.ToolSpec(
        rng.choice(_DOCS[evolved]),
        {"weight": ("number", "parcel weight"), "zone": ("string", "destination zone")},
        main_fn,
    )
    decoy = q.ToolSpec(rng.choice(_DECOY_DOCS[evolved]), {"zone": ("string", "zone")}, decoy_fn)
    return q.variant(FAMILY_NAME, evolved, roles, p, conv, data=tariff, main=main, decoy=decoy)


_QUERIES = (
    "What does it cost to ship a {w} {u} parcel to zone {z}? Answer in dollars, number only, two decimals.",
    "Price a {w} {u} package going to zone {z}. Answer with the dollar amount only, two decimals.",
    "How much is postage for {w} {u} to zone {z}? Answer with the number only (dollars, 2 decimals).",
)


def make_task(variant: Variant, rng: random.Random) -> TaskDraft:
    zone = rng.choice(ZONES)
    if rng.random() < 0.5:
        grams = rng.randint(10, 200) * 100
        weight, unit = grams / 1000, "kg"
    else:
        grams = rng.randint(60, 1900)
        weight, unit = grams, "g"
    tool_weight = grams / GRAMS_PER[variant.conv["unit"]]
    return TaskDraft(
        kind=f"weight_{unit}",
        query=say(rng, _QUERIES, w=fmt_num(weight), u=unit, z=zone),
        answer=f"{price_cents(variant.data, grams, zone) / 100:.2f}",
        gold_calls=[gold(variant.roles["main"], variant.args("main", weight=tool_weight, zone=zone))],
        intent={"weight": weight, "unit": unit, "zone": zone},
        convention=f"weight read in {variant.conv['unit']}",
    )


def billed_unit(observation: str) -> str | None:
    data = load_json(observation)
    text = field_value(data, "billed", "billed_as", "billed_weight", "charged_for")
    match = re.search(r"[\d.]+\s*([a-z]+)", str(text or observation))
    return match.group(1) if match and match.group(1) in GRAMS_PER else None


def _cost(observation: str) -> str | None:
    value = field_value(load_json(observation), *PRICE_KEYS)
    return None if value is None else f"{float(value):.2f}"


def expert(variant: Variant, task: Task, rng: random.Random) -> Generator[Step, CallRecord, None]:
    play = Play(rng)
    main = variant.roles["main"]
    intent = task.metadata["intent"]
    weight, unit, zone = intent["weight"], intent["unit"], intent["zone"]
    thought = play.say(
        (
            "The weight unit is not documented. Trial {w} for {w} {u} and read the billed weight.",
            "Does weight mean {u}? A trial will echo what it billed.",
            "Try the parcel as stated ({w}) to see which unit the tool assumes.",
        ),
        w=fmt_num(weight),
        u=unit,
    )
    record = yield from play.trial(main, variant.args("main", weight=weight, zone=zone), thought)
    send = weight
    if record is not None and record.ok:
        tool_unit = billed_unit(record.observation)
        if tool_unit is not None and tool_unit != unit:
            send = weight * GRAMS_PER[unit] / GRAMS_PER[tool_unit]
            act = play.say(
                (
                    "It billed {w} {t}: weight is in {t}. {w} {u} is {s} {t}.",
                    "The tool reads {t}, not {u}. Send {s}.",
                    "Billed as {t}; convert {w} {u} to {s} {t} and execute.",
                ),
                w=fmt_num(weight),
                t=tool_unit,
                u=unit,
                s=fmt_num(send, 6),
            )
            if play.rng.random() < 0.4:
                yield from play.trial(main, variant.args("main", weight=send, zone=zone), act)
                act = play.say(
                    ("Billed weight now matches the parcel. Execute.", "That bills the right weight; go.")
                )
        else:
            act = play.say(
                ("It billed {w} {u} as intended. Execute.", "Units match; run it for real."),
                w=fmt_num(weight),
                u=unit,
            )
    else:
        act = play.say(
            ("No trials; price it directly.", "Trials are off; call {tool} as written."), tool=main
        )
    result = yield from play.call(main, variant.args("main", weight=send, zone=zone), act)
    yield play.answer(_cost(result.observation) if result.ok else None)


def docs_only(variant: Variant, task: Task, rng: random.Random) -> Generator[Step, CallRecord, None]:
    play, intent = Play(rng), task.metadata["intent"]
    result = yield from play.call_as_documented(variant, weight=intent["weight"], zone=intent["zone"])
    yield play.answer(_cost(result.observation) if result.ok else None)


# -------------------------------------------------------------- feedback levels (feedback.py)
FEEDBACK = {"unit": fb.SILENT}


def feedback(variant: Variant, kind: str) -> dict[str, str]:
    """The weight's silent unit, unless it is the unit the question gives ('weight_kg' / 'weight_g')."""
    return fb.quirks(FEEDBACK, *(() if variant.conv["unit"] == kind.removeprefix("weight_") else ("unit",)))


FAMILY = FamilySpec(FAMILY_NAME, "ship", True, make_variant, make_task, expert, docs_only, feedback)
