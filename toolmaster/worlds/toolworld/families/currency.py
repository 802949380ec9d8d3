"""Family ``currency`` (seen): currency conversion at the world's (fictional) exchange rates.

Tests spotting a silent scale convention with an identity probe (convert 1 X to X: the answer must be 1).
Hidden conventions (9 per space): one side is silently scaled: the *amount* is read in cents (1 -> 0.01),
or the result is an integer in cents (41.40 EUR -> 4140) or in mills (-> 41400); the result is a bare
number or an object under one of two field names. Evolved variants also want ISO *numeric* currency codes
(the error lists them: 840=USD, 978=EUR, ...).
Decoy: a rate lookup taking the same currency arguments that returns the inverse rate.
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
    say,
)

FAMILY_NAME = "currency"
# code -> (ISO numeric code, rough units per US dollar)
CURRENCIES: dict[str, tuple[str, float]] = {
    "USD": ("840", 1.0),
    "EUR": ("978", 0.92),
    "GBP": ("826", 0.79),
    "JPY": ("392", 151.0),
    "CHF": ("756", 0.9),
    "CAD": ("124", 1.36),
    "AUD": ("036", 1.52),
    "SEK": ("752", 10.6),
    "INR": ("356", 83.0),
    "MXN": ("484", 17.1),
}

_TOOL_NAMES = {
    "main": (("xch", "fx", "cur"), ("fxm", "mnyx", "swp")),
    "decoy": (("xr", "rate", "fxr"), ("fxq", "quot", "pq")),
}
_ARG_NAMES = {
    "amount": (("amount", "amt", "money", "sum_in"), ("sum", "value", "funds")),
    "src": (("src", "from_cur", "base", "have"), ("frm", "origin", "source_ccy")),
    "dst": (("dst", "to_cur", "quote", "want"), ("into", "target", "dest_ccy")),
}
_DOCS = {
    False: (
        "Currency exchange. Returns the converted amount.",
        "Exchange money between currencies.",
        "Convert money.",
    ),
    True: ("Money conversion between two currencies.", "FX: move a sum into another currency."),
}
_DECOY_DOCS = {
    False: ("Reference rate for a currency pair.", "Quoted exchange rate."),
    True: ("FX reference quote for two currencies.", "Pair quote."),
}


def cents_after(amount_cents: int, rate: float) -> int:
    """The converted amount in target cents; the single formula every variant and the answer share."""
    return round(amount_cents * rate)


def _code(conv: dict[str, Any], value: Any) -> str:
    text = str(value).strip().upper()
    if conv["numeric"]:
        for code, (num, _) in CURRENCIES.items():
            if text == num:
                return code
        listing = ", ".join(f"{num}={code}" for code, (num, _) in CURRENCIES.items())
        raise ValueError(f"unknown currency {value!r}; use numeric codes: {listing}")
    if text not in CURRENCIES:
        raise ValueError(f"unknown currency {value!r}")
    return text


# (which side is scaled, factor): amounts read in cents, or results in cents / mills
_SCALES = (("in", 100), ("out", 100), ("out", 1000))
_SHAPES = ("number", "amount", "converted")


def make_variant(rng: random.Random, names: NameGen, evolved: bool) -> Variant:
    roles, p = q.draw_names(rng, names, evolved, _TOOL_NAMES, _ARG_NAMES)
    side, factor = rng.choice(_SCALES)
    conv = {"numeric": evolved, "scale": side, "factor": factor, "shape": rng.choice(_SHAPES)}
    rates = {
        code: round(base * rng.uniform(0.9, 1.1), 4) if code != "USD" else 1.0
        for code, (_, base) in CURRENCIES.items()
    }

    def rate(src: str, dst: str) -> float:
        return rates[dst] / rates[src]

    def main_fn(**kwargs: Any) -> Any:
        src, dst = _code(conv, kwargs[p["src"]]), _code(conv, kwargs[p["dst"]])
        amount = float(kwargs[p["amount"]])
        if side == "in":
            result: float = cents_after(round(amount * 100 / factor), rate(src, dst)) / 100
        else:
            result = cents_after(round(amount * 100), rate(src, dst)) * factor // 100
        if conv["shape"] == "number":
            return result
        return {conv["shape"]: result, "currency": dst}

    def decoy_fn(**kwargs: Any) -> Any:
        src = str(kwargs[p["src"]]).strip().upper()
        dst = str(kwargs[p["dst"]]).strip().upper()
        by_num = {num: code for code, (num, _) in CURRENCIES.items()}
        src, dst = by_num.get(src, src), by_num.get(dst, dst)
        if src not in CURRENCIES or dst not in CURRENCIES:
            raise ValueError("unknown currency")
        return {"pair": f"{src}/{dst}", "quote": round(rates[src] / rates[dst], 6)}

    main = q.ToolSpec(
        rng.choice(_DOCS[evolved]),
        {
            "amount": ("number", "amount"),
            "src": ("string", "from currency"),
            "dst": ("string", "to currency"),
        },
        main_fn,
    )
    decoy = q.ToolSpec(
        rng.choice(_DECOY_DOCS[evolved]),
        {"src": ("string", "base currency"), "dst": ("string", "quote currency")},
        decoy_fn,
    )
    return q.variant(FAMILY_NAME, evolved, roles, p, conv, data={"rates": rates}, main=main, decoy=decoy)


_QUERIES = (
    "Convert {a} {s} to {d}. Answer with the amount only, two decimals.",
    "How much is {a} {s} in {d}? Answer with the number only, two decimals.",
    "I need to pay {a} {s} in {d}. What amount is that? Reply with the number only (2 decimals).",
)


def make_task(variant: Variant, rng: random.Random) -> TaskDraft:
    src, dst = rng.sample(sorted(CURRENCIES), 2)
    amount = rng.randint(5, 900)
    conv, rates = variant.conv, variant.data["rates"]
    cents = cents_after(amount * 100, rates[dst] / rates[src])
    codes = (CURRENCIES[src][0], CURRENCIES[dst][0]) if conv["numeric"] else (src, dst)
    sent = amount * conv["factor"] if conv["scale"] == "in" else amount
    args = variant.args("main", amount=sent, src=codes[0], dst=codes[1])
    unit = {100: "cents", 1000: "mills"}[conv["factor"]]
    convention = ("numeric ISO codes; " if conv["numeric"] else "") + (
        f"amount read in {unit}" if conv["scale"] == "in" else f"result in {unit}"
    )
    return TaskDraft(
        kind="exchange",
        query=say(rng, _QUERIES, a=amount, s=src, d=dst),
        answer=f"{cents / 100:.2f}",
        gold_calls=[gold(variant.roles["main"], args)],
        intent={"amount": amount, "src": src, "dst": dst},
        convention=convention,
    )


def code_table(observation: str) -> dict[str, str]:
    """{'USD': '840', ...} from an error listing '840=USD, 978=EUR'."""
    return {code: num for num, code in re.findall(r"(\d+)=([A-Z]{3})", observation)}


def expert(variant: Variant, task: Task, rng: random.Random) -> Generator[Step, CallRecord, None]:
    play = Play(rng)
    main = variant.roles["main"]
    intent = task.metadata["intent"]
    amount, src, dst = intent["amount"], intent["src"], intent["dst"]
    codes = {src: src, dst: dst}
    first = play.say(
        (
            "Try {tool} on the real amount first, with plain codes.",
            "Start with a trial of {a} {s} to {d} as written.",
            "See what {tool} returns for {a} {s} -> {d}.",
        ),
        tool=main,
        a=amount,
        s=src,
        d=dst,
    )
    record = yield from play.trial(main, variant.args("main", amount=amount, src=src, dst=dst), first)
    scale_in, scale_out = 1.0, 1.0
    if record is not None:
        if not record.ok:
            table = code_table(record.observation)
            codes = {src: table.get(src, src), dst: table.get(dst, dst)}
        probe_thought = play.say(
            (
                "Units are unclear. Probe: 1 {c} to {c} must give 1.",
                "Check the scale: converting 1 {c} into itself should return exactly 1.",
                "A same-currency trial with 1 reveals any hidden scaling.",
            ),
            c=src,
        )
        probe = yield from play.trial(
            main, variant.args("main", amount=1, src=codes[src], dst=codes[src]), probe_thought
        )
        value = first_number(probe.observation) if probe is not None and probe.ok else None
        if value is not None and value > 1.5:
            scale_out = value  # e.g. 100: results come back in cents
        elif value is not None and 0 < value < 0.5:
            scale_in = 1 / value  # e.g. 0.01: the amount is read in cents
    if record is None:
        act = play.say(
            ("No trials here; convert directly.", "Trials are off, so call {tool} for real."), tool=main
        )
    elif scale_out != 1:
        act = play.say(("1 came back as {k:g}: results are in cents. Convert and divide.",), k=scale_out)
    elif scale_in != 1:
        act = play.say(("1 came back as 0.01: amounts are read in cents. Send {c:g}.",), c=amount * scale_in)
    else:
        act = play.say(("No scaling; execute the conversion.", "The probe is clean. Convert for real."))
    args = variant.args("main", amount=round(amount * scale_in), src=codes[src], dst=codes[dst])
    result = yield from play.call(main, args, act)
    if not result.ok:
        table = code_table(result.observation)
        if src not in table or dst not in table:
            yield play.answer(None)
            return
        codes = {src: table[src], dst: table[dst]}
        fix = play.say(
            ("It wants numeric codes: {s}={a}, {d}={b}. Retry.",), s=src, a=codes[src], d=dst, b=codes[dst]
        )
        result = yield from play.call(
            main, variant.args("main", amount=amount, src=codes[src], dst=codes[dst]), fix
        )
    number = first_number(result.observation) if result.ok else None
    yield play.answer(None if number is None else f"{number / scale_out:.2f}")


def docs_only(variant: Variant, task: Task, rng: random.Random) -> Generator[Step, CallRecord, None]:
    play, intent = Play(rng), task.metadata["intent"]
    result = yield from play.call_as_documented(
        variant, amount=intent["amount"], src=intent["src"], dst=intent["dst"]
    )
    if not result.ok:
        result = yield from play.call_as_documented(
            variant, retry=True, amount=intent["amount"], src=intent["src"].lower(), dst=intent["dst"].lower()
        )
    number = first_number(result.observation) if result.ok else None
    yield play.answer(None if number is None else f"{number:.2f}")


# -------------------------------------------------------------- feedback levels (feedback.py)
FEEDBACK = {"codes": fb.NAMES_FIX, "scale": fb.SILENT}


def feedback(variant: Variant, kind: str) -> dict[str, str]:
    """Numeric codes, listed by the error (evolved); the silent cents / mills scale always."""
    return fb.quirks(FEEDBACK, *(("codes",) if variant.conv["numeric"] else ()), "scale")


FAMILY = FamilySpec(FAMILY_NAME, "fx", True, make_variant, make_task, expert, docs_only, feedback)
