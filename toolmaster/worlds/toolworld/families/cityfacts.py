"""Family ``cityfacts`` (unseen: never in train): a small knowledge base of fictional cities (in the state).

Tests mapping a question onto undocumented field names listed only in an error, and reading a unit
from a field name. Hidden conventions:
- ``field`` accepts seeded keys; 'mayor' is natural, but the population may sit under 'pop' or
  'inhabitants', the founding year under a key like 'est' and the elevation under a key like 'alt_ft' or
  'elev_m'; a wrong key raises an error listing them (45 key sets).
- an elevation under a ``_ft`` key is stored in *feet* (the key says so) while questions ask for metres.
So the natural reading answers mayor (and some population) questions and fails the rest.
Decoy: a tool taking the same city that returns its region and twin town.
"""

from __future__ import annotations

import random
import re
from collections.abc import Generator
from typing import Any

from toolmaster.envs.environment import CallRecord
from toolmaster.envs.task import Task
from toolmaster.worlds.scripted import Step
from toolmaster.worlds.toolworld import quirks as q
from toolmaster.worlds.toolworld.common import (
    FamilySpec,
    NameGen,
    Play,
    TaskDraft,
    Variant,
    first_number,
    gold,
    load_json,
    say,
)

FAMILY_NAME = "cityfacts"
_START = ("Nor", "Vel", "Ost", "Kar", "Bel", "Tir", "Mar", "Sel", "Dun", "Lor", "Gav", "Esk")
_END = ("vik", "mora", "hold", "bury", "stad", "gate", "wick", "heim", "port", "ford")
_MAYOR_FIRST = ("Ilse", "Odo", "Brannoc", "Sefa", "Tamsin", "Yorick", "Nadia", "Hale")
_MAYOR_LAST = ("Varga", "Penhallow", "Oyelaran", "Crane", "Lindqvist", "Abara", "Morrow")
REGIONS = ("North Reach", "Saltmarsh", "High Vale", "Eastfold")
FT = 0.3048
# question field -> (natural word a reader would pass, words that identify the real key)
FIELDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "population": ("population", ("population", "pop", "inhab")),
    "mayor": ("mayor", ("mayor",)),
    "founded": ("founded", ("est", "since", "found", "yr")),
    "elevation": ("elevation", ("alt", "elev", "height")),
}

_TOOL_NAMES = {"main": ("gzt", "cfx", "twn"), "decoy": ("prof", "cpr", "whr")}
_ARG_NAMES = {"city": ("city", "place", "town"), "field": ("field", "key", "fact", "attr")}
_DOCS = ("Facts about a city.", "City fact lookup.", "Gazetteer entry field.")
_DECOY_DOCS = ("City profile.", "Where a city is.")


def make_variant(rng: random.Random, names: NameGen, evolved: bool) -> Variant:
    roles, p = q.draw_names(rng, names, evolved, _TOOL_NAMES, _ARG_NAMES)
    keys = {
        "population": rng.choice(("population", "pop", "inhabitants")),
        "mayor": "mayor",
        "founded": rng.choice(("est", "since", "yr_est")),
        "elevation": rng.choice(("alt_ft", "elev_ft", "height_ft", "alt_m", "elev_m")),
    }
    conv = {"keys": keys}

    def city_of(state: dict[str, Any], value: Any) -> dict[str, Any]:
        for name, facts in state["cities"].items():
            if name.lower() == str(value).strip().lower():
                return facts
        raise LookupError(f"no city {value!r}")

    def main_fn(state: dict[str, Any], **kwargs: Any) -> Any:
        facts = city_of(state, kwargs[p["city"]])
        key = str(kwargs[p["field"]]).strip().lower()
        if key not in facts["data"]:
            raise LookupError(
                f"unknown {p['field']} {kwargs[p['field']]!r}; {p['field']}s: {', '.join(facts['data'])}"
            )
        return facts["data"][key]

    def decoy_fn(state: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        facts = city_of(state, kwargs[p["city"]])
        return {"region": facts["region"], "twin_town": facts["twin"]}

    city_arg = {"city": ("string", "city name")}
    main = q.ToolSpec(rng.choice(_DOCS), {**city_arg, "field": ("string", "fact to return")}, main_fn)
    decoy = q.ToolSpec(rng.choice(_DECOY_DOCS), city_arg, decoy_fn)
    return q.variant(FAMILY_NAME, evolved, roles, p, conv, main=main, decoy=decoy)


_Q = {
    "population": ("What is the population of {c}? Answer with the number only.",),
    "mayor": ("Who is the mayor of {c}? Answer with the name only.",),
    "founded": ("In which year was {c} founded? Answer with the year only.",),
    "elevation": ("What is the elevation of {c} in metres? Answer with the whole number of metres only.",),
}


def make_task(variant: Variant, rng: random.Random) -> TaskDraft:
    keys = variant.conv["keys"]
    in_feet = keys["elevation"].endswith("_ft")
    names: list[str] = []
    while len(names) < 5:
        name = rng.choice(_START) + rng.choice(_END)
        if name not in names:
            names.append(name)
    cities: dict[str, Any] = {}
    for name in names:
        metres = rng.randint(2, 1800)
        cities[name] = {
            "data": {
                keys["population"]: rng.randint(800, 900000),
                keys["mayor"]: f"{rng.choice(_MAYOR_FIRST)} {rng.choice(_MAYOR_LAST)}",
                keys["founded"]: rng.randint(900, 1950),
                keys["elevation"]: round(metres / FT) if in_feet else metres,
            },
            "region": rng.choice(REGIONS),
            "twin": rng.choice([n for n in names if n != name]),
        }
    city = rng.choice(names)
    what = rng.choice(("population", "mayor", "founded", "founded", "elevation", "elevation"))
    value = cities[city]["data"][keys[what]]
    answer = str(round(value * FT)) if what == "elevation" and in_feet else str(value)
    return TaskDraft(
        kind=what,
        query=say(rng, _Q[what], c=city),
        answer=answer,
        gold_calls=[gold(variant.roles["main"], variant.args("main", city=city, field=keys[what]))],
        intent={"city": city, "field": what},
        convention=f"{what} under key {keys[what]!r}",
        initial_state={"cities": cities},
    )


def pick_key(observation: str, what: str) -> str | None:
    listing = observation.rsplit(":", 1)[-1]
    keys = [k.strip() for k in listing.split(",") if k.strip()]
    for stem in FIELDS[what][1]:
        for key in keys:
            if re.match(rf"(yr_)?{stem}", key):
                return key
    return None


def _answer(observation: str, what: str, key: str) -> str | None:
    data = load_json(observation)
    if data is None:  # plain strings come back verbatim, not as JSON
        data = observation
    if what == "elevation":
        number = first_number(str(data))
        if number is None:
            return None
        return str(round(number * FT)) if key.endswith("_ft") else str(round(number))
    return str(data)


def expert(variant: Variant, task: Task, rng: random.Random) -> Generator[Step, CallRecord, None]:
    play = Play(rng)
    main = variant.roles["main"]
    city, what = task.metadata["intent"]["city"], task.metadata["intent"]["field"]
    natural = FIELDS[what][0]
    thought = play.say(
        (
            "Field names are not documented. Trial '{n}' for {c}.",
            "Try the plain field '{n}' first; an error should list the real ones.",
            "Does {tool} know '{n}'? A trial will show.",
        ),
        n=natural,
        c=city,
        tool=main,
    )
    record = yield from play.trial(main, variant.args("main", city=city, field=natural), thought)
    key: str | None = natural
    if record is None:
        act = play.say(("No trials; ask for '{n}' directly.",), n=natural)
    elif record.ok:
        act = play.say(("'{n}' works. Execute the lookup.", "The field exists; run it for real."), n=natural)
    else:
        key = pick_key(record.observation, what)
        if key is None:
            yield play.answer(None)
            return
        act = play.say(
            (
                "The fields are listed; {w} is '{k}'.",
                "'{n}' is unknown, but '{k}' is the {w} field.",
                "Use '{k}' for the {w}.",
            ),
            w=what,
            k=key,
            n=natural,
        )
        if key.endswith("_ft"):
            act += play.say(
                (" It is in feet, so convert to metres.", " The suffix says feet; I will convert.")
            )
    result = yield from play.call(main, variant.args("main", city=city, field=key), act)
    if not result.ok:
        fixed = pick_key(result.observation, what)
        if fixed is None:
            yield play.answer(None)
            return
        key = fixed
        fix = play.say(("The error lists the fields; use '{k}'.",), k=key)
        result = yield from play.call(main, variant.args("main", city=city, field=key), fix)
    yield play.answer(_answer(result.observation, what, key) if result.ok else None)


def docs_only(variant: Variant, task: Task, rng: random.Random) -> Generator[Step, CallRecord, None]:
    play, intent = Play(rng), task.metadata["intent"]
    city, what = intent["city"], intent["field"]
    result = yield from play.call_as_documented(variant, city=city, field=FIELDS[what][0])
    if not result.ok:
        retry = {"founded": "year", "elevation": "altitude"}.get(what, what)
        result = yield from play.call_as_documented(variant, retry=True, city=city, field=retry)
    yield play.answer(_answer(result.observation, what, "") if result.ok else None)


FAMILY = FamilySpec(FAMILY_NAME, "city", False, make_variant, make_task, expert, docs_only)
