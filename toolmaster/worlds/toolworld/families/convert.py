"""Family ``convert`` (seen): unit conversion driven by one spec string.

Tests reading an undocumented argument format out of an error message.
Hidden conventions: the doc only says ``spec: conversion spec``; the natural 'km to mi' raises.
- seen variants: the error shows one example, e.g. ``expected like 'KG2LB'`` (units joined by one of 6
  separators, upper or lower case, source unit first); the expert infers the pattern from that example.
- evolved variants: the spec puts the *target unit first* (6 other separators) and the error shows a
  template (``write '<to>@<from>'``).
- either way the result may come back as a bare number or a string with the unit ("3.1069 mi").
24 conventions per space.
Decoy: a tool taking the same spec that reports the dimension and factor, not the converted value.
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
    fmt_num,
    gold,
    say,
)

FAMILY_NAME = "convert"
# unit -> (dimension, size in the dimension's base unit, plural name)
UNITS: dict[str, tuple[str, float, str]] = {
    "m": ("length", 1.0, "metres"),
    "km": ("length", 1000.0, "kilometres"),
    "cm": ("length", 0.01, "centimetres"),
    "mi": ("length", 1609.344, "miles"),
    "yd": ("length", 0.9144, "yards"),
    "ft": ("length", 0.3048, "feet"),
    "in": ("length", 0.0254, "inches"),
    "kg": ("mass", 1.0, "kilograms"),
    "g": ("mass", 0.001, "grams"),
    "lb": ("mass", 0.45359237, "pounds"),
    "oz": ("mass", 0.028349523125, "ounces"),
    "l": ("volume", 1.0, "litres"),
    "ml": ("volume", 0.001, "millilitres"),
    "gal": ("volume", 3.785411784, "US gallons"),
    "qt": ("volume", 0.946352946, "US quarts"),
}

_TOOL_NAMES = {
    "main": (("cv", "cnv", "xf", "mtrx"), ("rx", "qtz", "remag")),
    "decoy": (("cvi", "unt", "dimx"), ("rxd", "route", "qinfo")),
}
_ARG_NAMES = {
    "spec": (("spec", "mode", "pair", "units", "conv"), ("route", "via", "path", "how")),
    "value": (("value", "amount", "x", "qty"), ("magnitude", "size", "q", "measure")),
}
_DOCS = {
    False: ("Unit converter.", "Converts a value between units.", "Convert an amount using a spec."),
    True: (
        "Change units of a quantity.",
        "Quantity re-expression.",
        "Re-express a magnitude in other units.",
    ),
}
_DECOY_DOCS = {
    False: ("Unit converter info for a spec.", "Describe a conversion spec."),
    True: ("Conversion details for a route.", "Explain a unit route."),
}


def convert_value(value: float, frm: str, to: str) -> float:
    return round(value * UNITS[frm][1] / UNITS[to][1], 4)


def _render(conv: dict[str, Any], frm: str, to: str) -> str:
    a, b = (to, frm) if conv["reverse"] else (frm, to)
    text = f"{a}{conv['sep']}{b}"
    return text.upper() if conv["upper"] else text


def _parse(conv: dict[str, Any], data: dict[str, Any], spec: str, pname: str) -> tuple[str, str]:
    parts = spec.strip().lower().split(conv["sep"].lower())
    if len(parts) != 2 or not all(parts):
        ex_from, ex_to = data["example"]
        if conv["reverse"]:
            to_tpl, from_tpl = ("<TO>", "<FROM>") if conv["upper"] else ("<to>", "<from>")
            tpl = f"{to_tpl}{conv['sep']}{from_tpl}"
            raise ValueError(f"bad {pname} {spec!r}; write {tpl!r}, e.g. {_render(conv, ex_from, ex_to)!r}")
        raise ValueError(f"bad {pname} {spec!r}; expected like {_render(conv, ex_from, ex_to)!r}")
    a, b = parts
    frm, to = (b, a) if conv["reverse"] else (a, b)
    for unit in (frm, to):
        if unit not in UNITS:
            raise ValueError(f"unknown unit {unit!r}")
    if UNITS[frm][0] != UNITS[to][0]:
        raise ValueError(f"cannot convert {UNITS[frm][0]} to {UNITS[to][0]}")
    return frm, to


_SEPS = {False: ("2", ">", ":", "_", "~", "="), True: ("@", "|", "<-", "/", "<", "::")}


def make_variant(rng: random.Random, names: NameGen, evolved: bool) -> Variant:
    roles, p = q.draw_names(rng, names, evolved, _TOOL_NAMES, _ARG_NAMES)
    conv = {
        "sep": rng.choice(_SEPS[evolved]),
        "upper": rng.random() < 0.5,
        "reverse": evolved,  # evolved: target unit first, and the error shows a template
        "unit_in_result": rng.random() < 0.5,  # "3.1069 mi" instead of 3.1069
    }
    ex_dim = rng.choice(sorted({d for d, _, _ in UNITS.values()}))
    example = rng.sample(sorted(u for u, (d, _, _) in UNITS.items() if d == ex_dim), 2)
    data = {"example": example}

    def main_fn(**kwargs: Any) -> Any:
        frm, to = _parse(conv, data, str(kwargs[p["spec"]]), p["spec"])
        result = convert_value(float(kwargs[p["value"]]), frm, to)
        return f"{fmt_num(result)} {to}" if conv["unit_in_result"] else result

    def decoy_fn(**kwargs: Any) -> Any:
        frm, to = _parse(conv, data, str(kwargs[p["spec"]]), p["spec"])
        return {"dimension": UNITS[frm][0], "factor": round(UNITS[frm][1] / UNITS[to][1], 6)}

    spec_arg = {"spec": ("string", "conversion route" if evolved else "conversion spec")}
    main = q.ToolSpec(rng.choice(_DOCS[evolved]), {**spec_arg, "value": ("number", "amount")}, main_fn)
    decoy = q.ToolSpec(rng.choice(_DECOY_DOCS[evolved]), spec_arg, decoy_fn)
    return q.variant(FAMILY_NAME, evolved, roles, p, conv, data=data, main=main, decoy=decoy)


_QUERIES = (
    "Convert {v} {fname} to {tname}. Answer with the number only.",
    "How many {tname} is {v} {fname}? Answer with the number only.",
    "Express {v} {fname} in {tname}. Reply with just the number.",
    "I have {v} {fname}; what is that in {tname}? Answer with the number only.",
)


def make_task(variant: Variant, rng: random.Random) -> TaskDraft:
    while True:  # redraw conversions whose result would round to (almost) nothing or be huge
        dim = rng.choice(sorted({d for d, _, _ in UNITS.values()}))
        frm, to = rng.sample(sorted(u for u, (d, _, _) in UNITS.items() if d == dim), 2)
        value: float = rng.randint(1, 250) if rng.random() < 0.7 else rng.randint(5, 999) / 10
        if 0.05 <= convert_value(value, frm, to) <= 100_000:
            break
    spec = _render(variant.conv, frm, to)
    query = say(
        rng, _QUERIES, v=fmt_num(value), fname=f"{UNITS[frm][2]} ({frm})", tname=f"{UNITS[to][2]} ({to})"
    )
    return TaskDraft(
        kind="convert",
        query=query,
        answer=fmt_num(convert_value(value, frm, to)),
        gold_calls=[gold(variant.roles["main"], variant.args("main", spec=spec, value=value))],
        intent={"value": value, "from": frm, "to": to},
        convention=f"spec format {spec!r} for {frm}->{to}",
    )


def infer_spec(observation: str, frm: str, to: str) -> str | None:
    """The spec for frm->to, read from an error that shows a template ('<to>@<from>') or an example."""
    template = re.search(r"'([^']*<(?:from|to)>[^']*)'", observation, re.IGNORECASE)
    if template:
        text = template.group(1)
        for tag, unit in (("from", frm), ("to", to)):
            text = text.replace(f"<{tag.upper()}>", unit.upper()).replace(f"<{tag}>", unit)
        return text
    example = re.search(r"like '([^']+)'", observation)
    if not example:
        return None
    ex = example.group(1)
    for i in range(1, len(ex)):
        for j in range(i + 1, len(ex)):
            a, sep, b = ex[:i], ex[i:j], ex[j:]
            if a.lower() in UNITS and b.lower() in UNITS and not any(ch.isalpha() for ch in sep):
                spec = f"{frm}{sep}{to}"
                return spec.upper() if a.isupper() else spec
    return None


def expert(variant: Variant, task: Task, rng: random.Random) -> Generator[Step, CallRecord, None]:
    play = Play(rng)
    main = variant.roles["main"]
    frm, to, value = (
        task.metadata["intent"]["from"],
        task.metadata["intent"]["to"],
        task.metadata["intent"]["value"],
    )
    guess = f"{frm} to {to}"
    thought = play.say(
        (
            "The {p} format is undocumented; try the obvious '{g}' in a trial.",
            "The doc does not say how to write {p}. Test '{g}' first.",
            "Probe {tool} with a natural {p}, '{g}', to see what it accepts.",
            "I do not know the {p} syntax. A trial with '{g}' will tell me.",
        ),
        g=guess,
        tool=main,
        p=variant.params["main"]["spec"],
    )
    record = yield from play.trial(main, variant.args("main", spec=guess, value=value), thought)
    spec: str | None = guess
    if record is not None and not record.ok:
        spec = infer_spec(record.observation, frm, to)
        if spec is not None and play.rng.random() < 0.5:
            check = play.say(
                (
                    "The error shows the format; check '{s}' on 1 unit.",
                    "So the spec should be '{s}'. Confirm it on a value of 1.",
                    "Rebuild the spec as '{s}' and test it once with 1.",
                ),
                s=spec,
            )
            probe = yield from play.trial(main, variant.args("main", spec=spec, value=1), check)
            if probe is not None and not probe.ok:
                spec = infer_spec(probe.observation, frm, to) or spec
    if record is None:  # trials refused: act directly and learn from execution errors
        act = play.say(("No trials allowed; call {tool} with '{g}' and read any error.",), tool=main, g=guess)
    elif spec == guess:
        act = play.say(("'{s}' works; run it for real.", "The natural spec is accepted. Execute."), s=spec)
    else:
        act = play.say(
            (
                "The spec must look like '{s}'. Now convert {v}.",
                "Use the corrected spec '{s}' for the real call.",
                "With '{s}' the tool should accept it; execute.",
            ),
            s=spec,
            v=fmt_num(value),
        )
    if spec is None:
        yield play.answer(None)
        return
    result = yield from play.call(main, variant.args("main", spec=spec, value=value), act)
    if not result.ok:
        fixed = infer_spec(result.observation, frm, to)
        if fixed is None or fixed == spec:
            yield play.answer(None)
            return
        again = play.say(
            ("The error shows the format: '{s}'. Retry.", "Fix the spec to '{s}' and call again."), s=fixed
        )
        result = yield from play.call(main, variant.args("main", spec=fixed, value=value), again)
    number = first_number(result.observation) if result.ok else None
    yield play.answer(None if number is None else fmt_num(number))


def docs_only(variant: Variant, task: Task, rng: random.Random) -> Generator[Step, CallRecord, None]:
    play, intent = Play(rng), task.metadata["intent"]
    frm, to, value = intent["from"], intent["to"], intent["value"]
    result = yield from play.call_as_documented(variant, spec=f"{frm} to {to}", value=value)
    if not result.ok:
        result = yield from play.call_as_documented(variant, retry=True, spec=f"{frm}-{to}", value=value)
    number = first_number(result.observation) if result.ok else None
    yield play.answer(None if number is None else fmt_num(number))


# -------------------------------------------------------------- feedback levels (feedback.py)
FEEDBACK = {"spec": fb.EXAMPLE, "spec_template": fb.NAMES_FIX}


def feedback(variant: Variant, kind: str) -> dict[str, str]:
    """The spec format: an example spec (seen), a template with the target unit first (evolved)."""
    return fb.quirks(FEEDBACK, "spec_template" if variant.conv["reverse"] else "spec")


FAMILY = FamilySpec(FAMILY_NAME, "conv", True, make_variant, make_task, expert, docs_only, feedback)
