"""Family ``tickets`` (seen): log work time on a support ticket against its team's hour budget (stateful).

Quirks (from ``quirks``):
- id format revealed by an error: the question names "ticket 42"; the tool wants a drawn id format.
- silent scale, echoed: the time argument is read in a hidden unit (seconds, minutes, hours, quarter
  hours, work days); the seen tool echoes what it logged with its unit ("logged": "90 h").
- irreversible state: logged time is taken from the team budget for good (no undo tool).
- renamed fields: the budget field of the result is named per variant.
Evolved variant: renamed tools and arguments, suffix-style ids, and a different echo: no unit is shown,
only the hours it logged ("logged_h": 22.5), so the expert divides to find the unit.
Decoy: a ticket-view tool on the same id that returns status, team and age.
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
    fmt_num,
    say,
)

FAMILY_NAME = "tickets"
MINUTES = {"s": 1 / 60, "min": 1.0, "h": 60.0, "qh": 15.0, "wd": 480.0}  # minutes per unit
TEAMS = ("billing", "network", "accounts", "mobile", "payments")
KEYS = {"left": ("budget_left_h", "hours_left", "remaining_h", "left_h")}

_TOOL_NAMES = {
    "main": (("log", "tm", "wrk"), ("tsh", "eff", "reg")),
    "decoy": (("view", "shw"), ("case", "stat")),
}
_ARG_NAMES = {
    "ticket": (("ticket", "tid"), ("case", "ref")),
    "time": (("time", "spent"), ("effort", "amount")),
}
_DOCS = {
    False: ("Log time spent on a ticket.", "Record work on a ticket.", "Book effort against a ticket."),
    True: ("Timesheet entry for a case.", "Register effort on a support case."),
}
_DECOY_DOCS = ("Show a ticket.", "Ticket status.", "View a ticket's details.")


def make_variant(rng: random.Random, names: NameGen, evolved: bool) -> Variant:
    roles, p = q.draw_names(rng, names, evolved, _TOOL_NAMES, _ARG_NAMES)
    conv = {
        "id": q.IdFormat.draw(rng, ("TK", "TCK", "INC", "REQ"), evolved).spec(),
        "unit": rng.choice(sorted(MINUTES)),
        "keys": q.draw_keys(rng, KEYS),
        "echo": "hours" if evolved else "unit",
    }
    ids = q.IdFormat(**conv["id"])

    def find(state: dict[str, Any], value: Any) -> str:
        number = str(ids.read("ticket", value))
        if number not in state["team"]:
            raise LookupError(f"no ticket {value!r}")
        return number

    def log(state: dict[str, Any], **kw: Any) -> dict[str, Any]:
        ticket, amount = find(state, kw[p["ticket"]]), float(kw[p["time"]])
        if amount <= 0:
            raise ValueError(f"{p['time']} must be positive")
        minutes = amount * MINUTES[conv["unit"]]
        team = state["team"][ticket]
        left = q.consume(state["budget"], team, round(minutes, 6), "minutes")
        echo = (
            {"logged_h": round(minutes / 60, 4)}
            if evolved
            else {"logged": f"{fmt_num(amount)} {conv['unit']}"}
        )
        return {"ticket": ids.render(int(ticket)), **echo, conv["keys"]["left"]: round(left / 60, 4)}

    def view(state: dict[str, Any], **kw: Any) -> dict[str, Any]:
        ticket = find(state, kw[p["ticket"]])
        return {
            "ticket": ids.render(int(ticket)),
            "status": "open",
            "team": state["team"][ticket],
            "age_days": 3,
        }

    ticket_arg = {"ticket": ("string", "ticket id")}
    main = q.ToolSpec(rng.choice(_DOCS[evolved]), {**ticket_arg, "time": ("number", "time spent")}, log)
    decoy = q.ToolSpec(rng.choice(_DECOY_DOCS), ticket_arg, view)
    return q.variant(FAMILY_NAME, evolved, roles, p, conv, main=main, decoy=decoy)


_Q = (
    "Log {x} {u} of work on ticket {t}. How many hours are left in its team's budget? Answer with the number only.",
    "Record {x} {u} spent on ticket {t}, then report the team's remaining budget in hours. Answer with the number only.",
    "Ticket {t}: book {x} {u} of effort. How many budget hours does the team have left? Answer with the number only.",
)


def make_task(variant: Variant, rng: random.Random) -> TaskDraft:
    numbers = rng.sample(range(1, 900), 5)
    team = {str(n): rng.choice(TEAMS) for n in numbers}
    budget = {name: rng.randint(8000, 13000) * 15 for name in TEAMS}
    ticket = numbers[0]
    if rng.random() < 0.5:
        x, unit = rng.randint(1, 16) * 15, "minutes"
        minutes = x
    else:
        x, unit = rng.randint(1, 8), "hours"
        minutes = x * 60
    ids = q.IdFormat(**variant.conv["id"])
    amount = minutes / MINUTES[variant.conv["unit"]]
    return TaskDraft(
        kind=f"log_{unit}",
        query=say(rng, _Q, x=x, u=unit, t=ticket),
        answer=fmt_num((budget[team[str(ticket)]] - minutes) / 60),
        gold_calls=[
            {
                "name": variant.roles["main"],
                "arguments": variant.args("main", ticket=ids.render(ticket), time=amount),
            }
        ],
        intent={"ticket": ticket, "amount": x, "unit": unit, "minutes": minutes},
        convention=f"ids like {ids.render(7)}; time read in {variant.conv['unit']}",
        initial_state={"team": team, "budget": budget},
    )


def minutes_per_unit(observation: str, sent: float) -> float | None:
    """Expert side: minutes per unit of the time argument, from the echo of a log call."""
    data = q.pick(observation, ("logged",))
    echoed = q.echoed_amount(data) if data is not None else None
    if echoed is not None and echoed[1] in MINUTES:
        return MINUTES[echoed[1]]
    hours = q.pick(observation, ("logged_h",))
    if hours is None:
        return None
    return q.snap(float(hours) * 60, sent, tuple(MINUTES.values()))


def expert(variant: Variant, task: Task, rng: random.Random) -> Generator[Step, CallRecord, None]:
    play = Play(rng)
    main, intent = variant.roles["main"], task.metadata["intent"]
    number, x, minutes = intent["ticket"], intent["amount"], intent["minutes"]
    ticket, amount = str(number), x
    thought = play.say(
        (
            "Logged time cannot be taken back, so trial first: log {x} {u} on {t} in the sandbox.",
            "The time unit is not documented; a sandbox log of {x} shows what {tool} reads.",
            "Trial {tool} with ticket {t} and {x}; the result shows the id format and the unit.",
        ),
        x=x,
        u=intent["unit"],
        t=number,
        tool=main,
    )
    record = yield from play.trial(main, variant.args("main", ticket=ticket, time=x), thought)
    if record is not None and not record.ok and q.learn_id(record.observation, number):
        ticket = q.learn_id(record.observation, number) or ticket
        again = play.say(
            ("Tickets go by ids like '{t}'. Trial again.", "Retry the trial as '{t}'."), t=ticket
        )
        record = yield from play.trial(main, variant.args("main", ticket=ticket, time=x), again)
    per = None if record is None else minutes_per_unit(record.observation, x)
    if record is not None and per is None and q.needed(record.observation):  # refused: it named the need
        per = q.snap(q.needed(record.observation) or 1.0, x, tuple(MINUTES.values()))
    if per:
        amount = minutes / per
        act = play.say(
            (
                "The tool counts {p:g} minutes per unit; {m} minutes is {a}. Log it for real.",
                "One unit is {p:g} min, so send {a} for {m} minutes.",
            ),
            p=per,
            m=minutes,
            a=fmt_num(amount, 6),
        )
    else:
        act = play.say(("No trials; log the time directly.", "Trials are off, so log it for real."))
    result = yield from play.call(main, variant.args("main", ticket=ticket, time=amount), act)
    if not result.ok and q.learn_id(result.observation, number):
        ticket = q.learn_id(result.observation, number) or ticket
        fix = play.say(("The ticket id must look like '{t}'. Retry.",), t=ticket)
        result = yield from play.call(main, variant.args("main", ticket=ticket, time=amount), fix)
    left = q.pick(result.observation, KEYS["left"]) if result.ok else None
    yield play.answer(None if left is None else fmt_num(left))


def docs_only(variant: Variant, task: Task, rng: random.Random) -> Generator[Step, CallRecord, None]:
    play, intent = Play(rng), task.metadata["intent"]
    result = yield from play.call_as_documented(variant, ticket=str(intent["ticket"]), time=intent["amount"])
    left = q.pick(result.observation, KEYS["left"]) if result.ok else None
    yield play.answer(None if left is None else fmt_num(left))


# -------------------------------------------------------------- feedback levels (feedback.py)
FEEDBACK = {"id": fb.EXAMPLE, "unit": fb.SILENT}


def feedback(variant: Variant, kind: str) -> dict[str, str]:
    """The id format (an example id) always; the time's unit unless it is the unit the question gives."""
    natural = {"log_minutes": "min", "log_hours": "h"}[kind] == variant.conv["unit"]
    return fb.quirks(FEEDBACK, "id", *(() if natural else ("unit",)))


FAMILY = FamilySpec(FAMILY_NAME, "tick", True, make_variant, make_task, expert, docs_only, feedback)
