"""Family ``directory`` (seen): an employee directory kept in the episode state (a small knowledge base).

Tests taking an id format from an error. Questions name the employee either by staff number ("employee
42") or by name. Hidden conventions (72 seen, 40 evolved):
- the lookup wants ids in a seeded undocumented format (seen: one of 6 prefixes, padded to 4 or 5 digits or
  not at all; evolved: one of 5 suffixes, 5 or 6 digits). The seen directory suggests the id it would
  match, so '42' raises ``no employee '42'; did you mean 'EMP-0042'?`` (the error names the fix: feedback
  level ``names_fix``, see ``feedback.py``), and shows an example for a number it does not know (``no
  employee '999'; ids look like 'EMP-0007'``); the evolved one only shows an example, ``unknown id '42'
  (format: '00007-HQ')`` (level ``example``). Before feedback levels existed the seen directory showed the
  example too; it suggests now so that ``names_fix`` occurs in train and test_seen, whose other families
  never name a fix;
- the record's field names vary (seen: dept / department, ext / extension; evolved: unit / team, tel /
  phone, full_name).
- by-name questions go through the search tool first and work as documented (the natural reading is
  right there; the docs-only baseline solves them).
Decoy: a tool taking the same id that returns the employee's manager, not the employee's record.
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
    field_value,
    gold,
    infer_id,
    load_json,
    quoted,
    say,
)

FAMILY_NAME = "directory"
FIRST = (
    "Mara",
    "Tobin",
    "Ilse",
    "Odo",
    "Perrin",
    "Kesia",
    "Lune",
    "Barto",
    "Wren",
    "Anselm",
    "Dagny",
    "Fenna",
)
LAST = (
    "Quill",
    "Harrow",
    "Vantrep",
    "Osk",
    "Belcamp",
    "Ruddle",
    "Marsh",
    "Tindle",
    "Okafor",
    "Strand",
    "Voss",
    "Pell",
)
DEPTS = ("Logistics", "Payroll", "Research", "Facilities", "Legal", "Sales", "Support", "Security")
FIELD_KEYS = {"dept": ("dept", "department", "unit", "team"), "ext": ("ext", "extension", "tel", "phone")}
FIELD_WORDS = {"dept": "department", "ext": "phone extension"}

_TOOL_NAMES = {
    "main": (("emp", "who", "stf"), ("pcard", "prs", "pfl")),
    "search": (("find", "srch", "nm"), ("loc", "pfind", "srx")),
    "decoy": (("boss", "mgr", "rpt"), ("lmgr", "line", "up")),
}
_ARG_NAMES = {
    "id": (("id", "emp_id", "staff_id", "key"), ("person", "pid", "ref")),
    "name": (("name", "q", "who", "text"), ("query", "needle", "pattern")),
}
_DOCS = {
    False: {
        "main": ("Employee record by id.", "Look up a staff record.", "Staff directory entry."),
        "search": ("Search staff by name.", "Find employees matching a name."),
        "decoy": ("Reporting line for an employee.", "Employee supervisor lookup."),
    },
    True: {
        "main": ("Fetch a personnel card.", "Personnel file for one person."),
        "search": ("Name search over personnel.", "Locate people by name."),
        "decoy": ("Who does this person report to?", "Line manager of a person."),
    },
}


# id formats: seen ids carry a prefix (zero-padded or not), evolved ids a suffix; record field names differ
_ID_PRE = ("EMP-", "STF-", "P", "E-", "ID", "U")
_ID_POST = ("-HQ", "-EU", "-NX", "/B", "X")
_FIELDS = {
    False: {"name": ("name",), "dept": ("dept", "department"), "ext": ("ext", "extension")},
    True: {"name": ("full_name",), "dept": ("unit", "team"), "ext": ("tel", "phone")},
}


def _number(text: Any) -> int | None:
    digits = re.findall(r"\d+", str(text))
    return int(digits[0]) if len(digits) == 1 else None


def suggest(staff: dict[str, Any], key: Any) -> str | None:
    """The staff id with the same number as ``key`` ('42' -> 'EMP-0042'), or None."""
    wanted = _number(key)
    return next((k for k in staff if wanted is not None and _number(k) == wanted), None)


def make_variant(rng: random.Random, names: NameGen, evolved: bool) -> Variant:
    roles, p = q.draw_names(rng, names, evolved, _TOOL_NAMES, _ARG_NAMES)
    if evolved:
        id_fmt = {"pre": "", "post": rng.choice(_ID_POST), "width": rng.choice((5, 6))}
    else:
        id_fmt = {"pre": rng.choice(_ID_PRE), "post": "", "width": rng.choice((0, 4, 5))}
    fields = {key: rng.choice(options) for key, options in _FIELDS[evolved].items()}
    conv = {"id": id_fmt, "fields": fields}
    example = rng.randint(3, 19)

    def render(number: int) -> str:
        return f"{id_fmt['pre']}{number:0{id_fmt['width']}d}{id_fmt['post']}"

    def record(state: dict[str, Any], key: Any) -> dict[str, Any]:
        staff = state["staff"]
        if key not in staff and not evolved and suggest(staff, key) is not None:
            raise LookupError(f"no employee {key!r}; did you mean {suggest(staff, key)!r}?")
        if key not in staff:
            if evolved:
                raise LookupError(f"unknown id {key!r} (format: {render(example)!r})")
            raise LookupError(f"no employee {key!r}; ids look like {render(example)!r}")
        return staff[key]

    def main_fn(state: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        entry = record(state, kwargs[p["id"]])
        return {fields["name"]: entry["name"], fields["dept"]: entry["dept"], fields["ext"]: entry["ext"]}

    def search_fn(state: dict[str, Any], **kwargs: Any) -> list[str]:
        needle = str(kwargs[p["name"]]).strip().lower()
        return sorted(
            key for key, entry in state["staff"].items() if needle and needle in entry["name"].lower()
        )

    def decoy_fn(state: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {"manager": record(state, kwargs[p["id"]])["manager"]}

    docs = _DOCS[evolved]
    id_arg = {"id": ("string", "employee id")}
    main = q.ToolSpec(rng.choice(docs["main"]), id_arg, main_fn)
    search = q.ToolSpec(rng.choice(docs["search"]), {"name": ("string", "name or part of it")}, search_fn)
    decoy = q.ToolSpec(rng.choice(docs["decoy"]), id_arg, decoy_fn)
    return q.variant(
        FAMILY_NAME, evolved, roles, p, conv, data={"example": example}, main=main, search=search, decoy=decoy
    )


_Q_NUMBER = (
    "What is the {what} of employee number {n}? Answer with the {what} only.",
    "Look up staff member #{n} and give their {what}. Answer with the {what} only.",
)
_Q_NAME = (
    "What is the {what} of {name}? Answer with the {what} only.",
    "Find {name} in the directory and report their {what}. Answer with the {what} only.",
)


def make_task(variant: Variant, rng: random.Random) -> TaskDraft:
    id_fmt = variant.conv["id"]
    size = rng.randint(5, 7)
    numbers = rng.sample(range(20, 999), size)
    firsts, lasts = rng.sample(FIRST, size), rng.sample(LAST, size)
    staff: dict[str, dict[str, Any]] = {}
    ids = []
    for i, number in enumerate(numbers):
        key = f"{id_fmt['pre']}{number:0{id_fmt['width']}d}{id_fmt['post']}"
        ids.append(key)
        staff[key] = {
            "name": f"{firsts[i]} {lasts[i]}",
            "dept": rng.choice(DEPTS),
            "ext": str(rng.randint(1000, 9899)),
            "manager": "",
        }
    for i, key in enumerate(ids):
        staff[key]["manager"] = staff[ids[(i + 1) % size]]["name"]
    target = rng.randrange(size)
    key = ids[target]
    what = rng.choice(("dept", "ext"))
    by = rng.choice(("number", "name"))
    main, search = variant.roles["main"], variant.roles["search"]
    calls = [gold(main, variant.args("main", id=key))]
    if by == "name":
        calls.insert(0, gold(search, variant.args("search", name=staff[key]["name"])))
        query = say(rng, _Q_NAME, what=FIELD_WORDS[what], name=staff[key]["name"])
    else:
        query = say(rng, _Q_NUMBER, what=FIELD_WORDS[what], n=numbers[target])
    return TaskDraft(
        kind=f"by_{by}",
        query=query,
        answer=staff[key][what],
        gold_calls=calls,
        intent={"by": by, "number": numbers[target], "name": staff[key]["name"], "field": what},
        convention=f"ids look like {key!r}",
        initial_state={"staff": staff},
    )


def _field(observation: str, what: str) -> str | None:
    value = field_value(load_json(observation), *FIELD_KEYS[what])
    return None if value is None else str(value)


def _example_id(observation: str, tried: str) -> str | None:
    found = [text for text in quoted(observation) if text != tried and any(ch.isdigit() for ch in text)]
    return found[0] if found else None


def expert(variant: Variant, task: Task, rng: random.Random) -> Generator[Step, CallRecord, None]:
    play = Play(rng)
    main, search = variant.roles["main"], variant.roles["search"]
    intent = task.metadata["intent"]
    what = intent["field"]
    if intent["by"] == "name":
        name = intent["name"]
        thought = play.say(
            (
                "I need {name}'s id first; trial a search.",
                "Search {tool} for '{name}' to learn the id format too.",
                "Find the record id of {name} with a trial search.",
            ),
            name=name,
            tool=search,
        )
        found = yield from play.trial(search, variant.args("search", name=name), thought)
        if found is None:
            found = yield from play.call(
                search, variant.args("search", name=name), play.say(("No trials; search for real.",))
            )
        ids = load_json(found.observation) if found.ok else None
        if not isinstance(ids, list) or not ids:
            yield play.answer(None)
            return
        key = str(ids[0])
        act = play.say(
            ("The id is {k}. Fetch the record.", "{name} is {k}; look it up.", "Got id {k}; read the {w}."),
            k=key,
            name=name,
            w=FIELD_WORDS[what],
        )
        result = yield from play.call(main, variant.args("main", id=key), act)
        yield play.answer(_field(result.observation, what) if result.ok else None)
        return
    number = intent["number"]
    thought = play.say(
        (
            "The id format is not documented; try '{n}' in a trial.",
            "Does {tool} take a bare number? Test '{n}'.",
            "Trial the lookup with '{n}'; an error should show the id format.",
        ),
        n=number,
        tool=main,
    )
    record = yield from play.trial(main, variant.args("main", id=str(number)), thought)
    key: str | None = str(number)
    if record is None:
        act = play.say(("Trials are off; look up '{n}' directly.",), n=number)
    elif record.ok:
        act = play.say(("The bare number works. Execute.",))
    else:
        example = _example_id(record.observation, str(number))
        key = infer_id(example, number) if example else None
        act = play.say(
            (
                "The error suggests '{k}' for employee {n}; use it.",
                "It asks 'did you mean {k}?'. That is the id.",
                "The directory names the id: '{k}'.",
            )
            if "did you mean" in record.observation
            else (
                "Ids look like '{e}', so employee {n} is '{k}'.",
                "The error shows the format '{e}'; use '{k}'.",
                "Rewrite the id as '{k}' after the example '{e}'.",
            ),
            e=example,
            n=number,
            k=key,
        )
        if key is not None and play.rng.random() < 0.35:
            yield from play.trial(main, variant.args("main", id=key), act)
            act = play.say(("That id works. Now the real lookup.", "Confirmed; execute."))
    if key is None:
        yield play.answer(None)
        return
    result = yield from play.call(main, variant.args("main", id=key), act)
    if not result.ok:
        example = _example_id(result.observation, key)
        fixed = infer_id(example, number) if example else None
        if fixed is None or fixed == key:
            yield play.answer(None)
            return
        again = play.say(("The error shows ids like '{e}'; retry with '{k}'.",), e=example, k=fixed)
        result = yield from play.call(main, variant.args("main", id=fixed), again)
    yield play.answer(_field(result.observation, what) if result.ok else None)


def docs_only(variant: Variant, task: Task, rng: random.Random) -> Generator[Step, CallRecord, None]:
    play, intent = Play(rng), task.metadata["intent"]
    if intent["by"] == "name":
        found = yield from play.call_as_documented(variant, "search", name=intent["name"])
        ids = load_json(found.observation) if found.ok else None
        if not isinstance(ids, list) or not ids:
            yield play.answer(None)
            return
        key = str(ids[0])
    else:
        key = str(intent["number"])
    result = yield from play.call_as_documented(variant, id=key)
    if not result.ok:
        result = yield from play.call_as_documented(variant, retry=True, id=f"#{key}")
    yield play.answer(_field(result.observation, intent["field"]) if result.ok else None)


# -------------------------------------------------------------- feedback levels (feedback.py)
FEEDBACK = {"id": fb.EXAMPLE, "id_suggested": fb.NAMES_FIX}


def feedback(variant: Variant, kind: str) -> dict[str, str]:
    """By number: the id, which the seen directory suggests and the evolved one shows by example; by name:
    none (the search returns the id, as documented)."""
    if kind != "by_number":
        return {}
    return fb.quirks(FEEDBACK, "id" if variant.evolved else "id_suggested")


FAMILY = FamilySpec(FAMILY_NAME, "dir", True, make_variant, make_task, expert, docs_only, feedback)
