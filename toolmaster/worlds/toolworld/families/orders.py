"""Family ``orders`` (seen): placing orders against an inventory held in the episode state (stateful).

Tests probing a stateful tool safely: trial orders only touch the sandbox, while a wrong execution order
changes the real stock for good (there is no undo tool), so the final answer is then wrong.
Hidden conventions (3 rules x 3 result schemes per space):
- ``qty`` counts *packs* (pack size per item, e.g. 6) or single units; the result shows the units actually
  ordered, and an oversized order fails with "... this order needs 360";
- the order total comes back in dollars or in *cents* (the unit price beside it gives it away);
- the result's field names follow one of three schemes (seen and evolved schemes differ).
Tasks order a number of units (or packs) and ask for the stock left or the order total.
Decoy: a quote tool with the same arguments that prices an order without placing it.
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
    load_json,
    nearest_power_of_ten,
    say,
)

FAMILY_NAME = "orders"
ITEMS = ("gear", "bolt", "valve", "hinge", "spring", "gasket", "bracket", "pulley", "washer", "clamp")
PACKS = (4, 6, 8, 10, 12)

_TOOL_NAMES = {
    "main": (("ord", "plc", "od"), ("buy", "po", "sbm")),
    "decoy": (("qte", "prc", "oq"), ("est", "dry", "bq")),
}
_ARG_NAMES = {
    "item": (("item", "product", "sku_name", "part"), ("goods", "article", "ware")),
    "qty": (("qty", "quantity", "n", "amount"), ("count", "units", "volume")),
}
_DOCS = {
    False: {
        "main": ("Place an order for an item.", "Order stock.", "Create an order."),
        "decoy": ("Price an order.", "Order quote."),
    },
    True: {
        "main": ("Submit a purchase for goods.", "Buy goods from inventory."),
        "decoy": ("Estimate a purchase.", "Dry-run cost of goods."),
    },
}


# result field schemes: order id, units ordered, unit price (dollars), order total, stock left
_SCHEMES = {
    False: (
        ("order", "units", "each", "total", "left"),
        ("ref", "qty_units", "unit_price", "amount", "remaining"),
        ("order_no", "n_units", "price_each", "sum", "on_hand"),
    ),
    True: (
        ("id", "units", "each", "total", "stock_left"),
        ("po", "pieces", "per_piece", "charge", "balance"),
        ("ticket", "count_units", "item_price", "due", "still_stocked"),
    ),
}
UNITS_KEYS = tuple(scheme[1] for schemes in _SCHEMES.values() for scheme in schemes)
EACH_KEYS = tuple(scheme[2] for schemes in _SCHEMES.values() for scheme in schemes)
TOTAL_KEYS = tuple(scheme[3] for schemes in _SCHEMES.values() for scheme in schemes)
LEFT_KEYS = tuple(scheme[4] for schemes in _SCHEMES.values() for scheme in schemes)
# (what qty counts, what the total is in); plain units and dollars would need no trial
_RULES = (("pack", "dollars"), ("pack", "cents"), ("unit", "cents"))


def make_variant(rng: random.Random, names: NameGen, evolved: bool) -> Variant:
    roles, p = q.draw_names(rng, names, evolved, _TOOL_NAMES, _ARG_NAMES)
    qty_counts, total_in = rng.choice(_RULES)
    fields = rng.choice(_SCHEMES[evolved])
    conv = {"qty": qty_counts, "total": total_in, "fields": fields}

    def lookup(state: dict[str, Any], item: Any) -> tuple[str, dict[str, Any]]:
        name = str(item).strip().lower()
        if name not in state["stock"]:
            raise LookupError(f"unknown item {item!r}")
        return name, state["stock"][name]

    def main_fn(state: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        name, entry = lookup(state, kwargs[p["item"]])
        qty = int(kwargs[p["qty"]])
        if qty <= 0:
            raise ValueError(f"{p['qty']} must be positive")
        units = qty * entry["pack"] if qty_counts == "pack" else qty
        if units > entry["on_hand"]:
            raise ValueError(f"only {entry['on_hand']} {name} in stock; this order needs {units}")
        entry["on_hand"] -= units
        state["seq"] += 1
        order_id = f"ORD-{state['seq']}"
        state["orders"].append({"id": order_id, "item": name, "units": units})
        total_cents = units * entry["price_cents"]
        total = total_cents if total_in == "cents" else total_cents / 100
        values = (order_id, units, entry["price_cents"] / 100, total, entry["on_hand"])
        return dict(zip(fields, values))

    def decoy_fn(state: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        name, entry = lookup(state, kwargs[p["item"]])
        return {"item": name, "unit_price": entry["price_cents"] / 100, "in_stock": entry["on_hand"] > 0}

    docs = _DOCS[evolved]
    order_args = {"item": ("string", "item name"), "qty": ("integer", "quantity")}
    main = q.ToolSpec(rng.choice(docs["main"]), order_args, main_fn)
    decoy = q.ToolSpec(rng.choice(docs["decoy"]), order_args, decoy_fn)
    return q.variant(FAMILY_NAME, evolved, roles, p, conv, main=main, decoy=decoy)


_Q = {
    ("units", "left"): (
        "Order {n} units of {item}, then tell me how many units of {item} are left in stock. Answer with the number only.",
        "Buy {n} {item}s (units) and report the remaining stock of {item}. Answer with the number only.",
    ),
    ("packs", "left"): (
        "Order {n} packs of {item} ({per} per pack) and tell me how many units are left. Answer with the number only.",
    ),
    ("units", "total"): (
        "Order {n} units of {item}. What is the order total in dollars? Answer with the number only, two decimals.",
        "Buy {n} {item}s (units) and give the order's total price in dollars. Answer with the number only, two decimals.",
    ),
}


def make_task(variant: Variant, rng: random.Random) -> TaskDraft:
    names = rng.sample(ITEMS, 4)
    stock = {
        name: {
            "on_hand": rng.randint(60, 400),
            "pack": rng.choice(PACKS),
            "price_cents": rng.randint(25, 2500),
        }
        for name in names
    }
    item = names[0]
    entry = stock[item]
    pack = entry["pack"]
    kinds = [("units", "left"), ("units", "total"), ("packs", "left")]
    unit_word, ask = rng.choice(kinds)
    packs = rng.randint(1, max(1, min(12, entry["on_hand"] // pack)))
    units = packs * pack
    n = packs if unit_word == "packs" else units
    qty = packs if variant.conv["qty"] == "pack" else units
    answer = str(entry["on_hand"] - units) if ask == "left" else f"{units * entry['price_cents'] / 100:.2f}"
    return TaskDraft(
        kind=f"{unit_word}_{ask}",
        query=say(rng, _Q[(unit_word, ask)], n=n, item=item, per=pack),
        answer=answer,
        gold_calls=[gold(variant.roles["main"], variant.args("main", item=item, qty=qty))],
        intent={"item": item, "units": units, "asked": unit_word, "n": n, "ask": ask},
        convention=f"qty counts {variant.conv['qty']}s; total in {variant.conv['total']}",
        initial_state={"stock": stock, "orders": [], "seq": 0},
    )


def _read(observation: str, ask: str, scaled: bool) -> str | None:
    """The answer from an order result; ``scaled``: infer the total's scale from units x unit price."""
    data = load_json(observation)
    if ask == "left":
        value = field_value(data, *LEFT_KEYS)
        return None if value is None else str(value)
    total = field_value(data, *TOTAL_KEYS)
    if total is None:
        return None
    each, units = field_value(data, *EACH_KEYS), field_value(data, *UNITS_KEYS)
    cents = nearest_power_of_ten(float(total) / (float(each) * units)) if scaled and each and units else 1.0
    return f"{float(total) / cents:.2f}"


def units_seen(record: CallRecord) -> int | None:
    """Units an order turned into: the result's units field, or the 'needs N' of a stock error."""
    if record.ok:
        value = field_value(load_json(record.observation), *UNITS_KEYS)
        return int(value) if isinstance(value, (int, float)) else None
    match = re.search(r"needs (\d+)", record.observation)
    return int(match.group(1)) if match else None


def expert(variant: Variant, task: Task, rng: random.Random) -> Generator[Step, CallRecord, None]:
    play = Play(rng)
    main = variant.roles["main"]
    intent = task.metadata["intent"]
    item, units, n, ask = intent["item"], intent["units"], intent["n"], intent["ask"]
    thought = play.say(
        (
            "Orders are real, so trial first: order {n} {item} in the sandbox and read what it did.",
            "Test {tool} with {n} in a trial; the result shows how the quantity is counted.",
            "A trial order of {n} is safe and shows the units and totals.",
        ),
        n=n,
        item=item,
        tool=main,
    )
    record = yield from play.trial(main, variant.args("main", item=item, qty=n), thought)
    qty = n
    if record is not None:
        got = units_seen(record)
        per = got / n if got else 1.0
        qty = max(1, round(units / per))
        if per != 1:
            act = play.say(
                (
                    "Asking {n} gave {g} units: qty counts packs of {p:g}. Order {q}.",
                    "{n} turned into {g} units, so one qty is {p:g} units. {u} units = qty {q}.",
                ),
                n=n,
                g=got,
                p=per,
                q=qty,
                u=units,
            )
        elif qty != n:
            act = play.say(
                ("Quantity counts single units; {n} packs are {u} units. Order {q}.",), n=n, u=units, q=qty
            )
        else:
            act = play.say(
                (
                    "The trial order looks right. Place it for real and check the total's scale.",
                    "Quantity counts units. Execute.",
                )
            )
    else:
        act = play.say(("No trials; place the order directly.", "Trials are off, so order for real."))
    result = yield from play.call(main, variant.args("main", item=item, qty=qty), act)
    if not result.ok:
        got = units_seen(result)
        if got is None:
            yield play.answer(None)
            return
        per = got / qty
        qty = max(1, round(units / per))
        fix = play.say(("It counted {p:g} units per qty; order {q} instead.",), p=per, q=qty)
        result = yield from play.call(main, variant.args("main", item=item, qty=qty), fix)
    yield play.answer(_read(result.observation, ask, True) if result.ok else None)


def docs_only(variant: Variant, task: Task, rng: random.Random) -> Generator[Step, CallRecord, None]:
    play, intent = Play(rng), task.metadata["intent"]
    result = yield from play.call_as_documented(variant, item=intent["item"], qty=intent["n"])
    if not result.ok:
        result = yield from play.call_as_documented(variant, retry=True, item=intent["item"], qty=intent["n"])
    yield play.answer(_read(result.observation, intent["ask"], False) if result.ok else None)


# -------------------------------------------------------------- feedback levels (feedback.py)
FEEDBACK = {"qty": fb.SILENT, "total": fb.SILENT}


def feedback(variant: Variant, kind: str) -> dict[str, str]:
    """What qty counts, unless it is what the question counts in; the total's cents, for totals only."""
    qty = () if (variant.conv["qty"] == "pack") == kind.startswith("packs") else ("qty",)
    total = ("total",) if kind.endswith("_total") and variant.conv["total"] == "cents" else ()
    return fb.quirks(FEEDBACK, *qty, *total)


FAMILY = FamilySpec(FAMILY_NAME, "ord", True, make_variant, make_task, expert, docs_only, feedback)
