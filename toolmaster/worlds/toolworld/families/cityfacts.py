"""Family ``cityfacts`` (unseen: never in train): a small knowledge base of fictional cities (in the state).

Tests mapping a question onto undocumented field names listed only in an error, and reading a unit
from a field name. Hidden conventions:
- ``field`` accepts seeded keys; 'mayor' is natural, but the population may sit under 'pop' or
  'inhabitants', the founding year under a key like 'est' and the elevation under a key like 'alt_ft' or
  'elev_m'; a wrong key raises an error listing them (45 key sets).
- an elevation under a ``_ft`` key is stored in *feet* (the key says so) while questions ask for metres.
- census questions ("the population of X in the 1990 census", a third of the tasks) want a field in a
  drawn form ('pop_1990', 'inhabitants-90', ...: the population key, a separator, 4 or 2 year digits);
  the error lists the fields and quotes the census field of 1950 only, which the caller must adapt
  (feedback level ``example``; the other kinds are ``names_fix``, or ``none`` where the natural word is
  the key, see ``feedback.py``). Added for the feedback levels, without changing any other task.
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
    # the census field's form ('pop_1990', 'inhabitants90', ...): drawn from a stream of its own, keyed on
    # the variant's tool name, so that adding the census kind left every other draw of the world as it was
    census = fb.substream(FAMILY_NAME, "census", roles["main"])
    conv = {"keys": keys, "census": {"sep": census.choice(CENSUS_SEPS), "digits": census.choice((4, 2))}}

    def city_of(state: dict[str, Any], value: Any) -> dict[str, Any]:
        for name, facts in state["cities"].items():
            if name.lower() == str(value).strip().lower():
                return facts
        raise LookupError(f"no city {value!r}")

    def main_fn(state: dict[str, Any], **kwargs: Any) -> Any:
        facts = city_of(state, kwargs[p["city"]])
        key = str(kwargs[p["field"]]).strip().lower()
        census = facts.get("census", {})  # census tasks only: one count per census year
        if key in census:
            return census[key]
        if key not in facts["data"]:
            example = f"; census counts: e.g. {next(iter(census))!r}" if census else ""
            raise LookupError(
                f"unknown {p['field']} {kwargs[p['field']]!r}; {p['field']}s: {', '.join(facts['data'])}"
                + example
            )
        return facts["data"][key]

    def decoy_fn(state: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        facts = city_of(state, kwargs[p["city"]])
        return {"region": facts["region"], "twin_town": facts["twin"]}

    city_arg = {"city": ("string", "city name")}
    main = q.ToolSpec(rng.choice(_DOCS), {**city_arg, "field": ("string", "fact to return")}, main_fn)
    decoy = q.ToolSpec(rng.choice(_DECOY_DOCS), city_arg, decoy_fn)
    return q.variant(FAMILY_NAME, evolved, roles, p, conv, main=main, decoy=decoy)


CENSUS_YEARS = tuple(range(1950, 2021, 10))  # the first one is the example the error quotes
CENSUS_SEPS = ("_", "-", "@", ":", "/", "")
# the kind drawn per task, one slot each. The two census slots were a second 'founded' and a second
# 'elevation' before the census kind existed: the draw is the same, a third of the tasks are census, and
# a census task is deduplicated as the task its slot drew before (TaskDraft.dedupe), so every other task
# of the world is the task it was. Each slot asks its own census years, so no two census tasks coincide.
KINDS = ("population", "mayor", "founded", "census", "elevation", "census")
CENSUS_SLOTS = {3: ("founded", (1960, 1980, 2000, 2020)), 5: ("elevation", (1970, 1990, 2010))}


def census_key(conv: dict[str, Any], year: int) -> str:
    """The field of the census count of ``year`` under the variant's census form ('pop_1990')."""
    digits = str(year) if conv["census"]["digits"] == 4 else f"{year % 100:02d}"
    return f"{conv['keys']['population']}{conv['census']['sep']}{digits}"


_Q = {
    "population": ("What is the population of {c}? Answer with the number only.",),
    "mayor": ("Who is the mayor of {c}? Answer with the name only.",),
    "founded": ("In which year was {c} founded? Answer with the year only.",),
    "elevation": ("What is the elevation of {c} in metres? Answer with the whole number of metres only.",),
    "census": ("What was the population of {c} in the {y} census? Answer with the number only.",),
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
    slot = rng.choice(range(len(KINDS)))  # the very draw rng.choice(KINDS) makes
    what, dedupe = KINDS[slot], ""
    if what == "census":  # its draws come from a stream of their own, keyed on what this task drew
        replaced, years = CENSUS_SLOTS[slot]
        dedupe = _Q[replaced][0].format(c=city)
        extra = fb.substream(FAMILY_NAME, "census", variant.key, cities, city)
        for facts in cities.values():
            count = facts["data"][keys["population"]]
            facts["census"] = {
                census_key(variant.conv, y): round(count * extra.uniform(0.4, 1.1)) for y in CENSUS_YEARS
            }
        year = extra.choice(years)
        field, intent = census_key(variant.conv, year), {"city": city, "field": what, "year": year}
        answer = str(cities[city]["census"][field])
    else:
        field, intent, year = keys[what], {"city": city, "field": what}, None
        value = cities[city]["data"][field]
        answer = str(round(value * FT)) if what == "elevation" and in_feet else str(value)
    return TaskDraft(
        dedupe=dedupe,
        kind=what,
        query=say(rng, _Q[what], c=city, y=year),
        answer=answer,
        gold_calls=[gold(variant.roles["main"], variant.args("main", city=city, field=field))],
        intent=intent,
        convention=f"{what} under key {field!r}",
        initial_state={"cities": cities},
    )


def natural_field(intent: dict[str, Any]) -> str:
    """The field a reader of the question would ask for ('population', 'population 1990')."""
    if intent["field"] == "census":
        return f"population {intent['year']}"
    return FIELDS[intent["field"]][0]


def learn_census(observation: str, year: int) -> str | None:
    """Expert side: the census field of ``year`` after the example an error quoted ('pop_1950')."""
    match = re.search(r"e\.g\. '([^']*?)(\d+)'", observation or "")
    if match is None:
        return None
    prefix, digits = match.groups()
    return prefix + (str(year) if len(digits) == 4 else f"{year % 100:02d}")


def learn_key(observation: str, intent: dict[str, Any]) -> str | None:
    """Expert side: the field an error reveals for the question (a listed key, or an adapted example)."""
    if intent["field"] == "census":
        return learn_census(observation, intent["year"])
    return pick_key(observation, intent["field"])


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
    intent = task.metadata["intent"]
    city, what = intent["city"], intent["field"]
    natural = natural_field(intent)
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
        key = learn_key(record.observation, intent)
        if key is None:
            yield play.answer(None)
            return
        if what == "census":
            act = play.say(
                (
                    "The error shows a census field for another year; for {y} it is '{k}'.",
                    "Census counts go by year, like the example; ask for '{k}'.",
                ),
                y=intent["year"],
                k=key,
            )
        else:
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
        fixed = learn_key(result.observation, intent)
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
    result = yield from play.call_as_documented(variant, city=city, field=natural_field(intent))
    if not result.ok:
        retry = {"founded": "year", "elevation": "altitude"}.get(what, what)
        result = yield from play.call_as_documented(variant, retry=True, city=city, field=retry)
    yield play.answer(_answer(result.observation, what, "") if result.ok else None)


# -------------------------------------------------------------- feedback levels (feedback.py)
FEEDBACK = {"field": fb.NAMES_FIX, "census": fb.EXAMPLE}


def feedback(variant: Variant, kind: str) -> dict[str, str]:
    """The field's key (listed by the error) unless it is the natural word; a census field (an example)."""
    if kind == "census":
        return fb.quirks(FEEDBACK, "census")
    return fb.quirks(FEEDBACK, *(() if variant.conv["keys"][kind] == FIELDS[kind][0] else ("field",)))


FAMILY = FamilySpec(FAMILY_NAME, "city", False, make_variant, make_task, expert, docs_only, feedback)
