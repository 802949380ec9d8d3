"""Family ``inventory`` (seen): reserve stock of an item held in the episode state, then report what is left.

Quirks (from ``quirks``):
- id format revealed by an error: items are asked for by number ("item 42"); the tool wants ids in a
  drawn format (tag, separator, padding, case), and a bare number fails with "ids look like 'SKU-0007'".
- silent scale, echoed: ``qty`` counts lots of a drawn size (1 = the documented units, 2, 4, 5, 6, 10,
  12, 20, 25); the result echoes the units actually reserved.
- irreversible state: a reservation takes stock for good (no undo tool), so a wrong execution call
  leaves the wrong stock behind; only a trial reservation (on the sandbox) is a safe way to learn the lot.
- renamed fields: the result's field names are drawn per variant.
Evolved variant: renamed tools and arguments; ids take the suffix style ('0007-WH').
Decoy: a stock check with the same id that reports the stock before any reservation and bin counts.
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
from toolmaster.worlds.toolworld.common import FamilySpec, NameGen, Play, TaskDraft, Variant, say

FAMILY_NAME = "inventory"
LOTS = (1, 2, 4, 5, 6, 10, 12, 20, 25)
KEYS = {"units": ("units", "reserved", "taken", "pieces"), "left": ("left", "remaining", "on_hand", "stock")}

_TOOL_NAMES = {
    "main": (("rsv", "hold", "bk"), ("ermk", "setx", "alo")),
    "decoy": (("stk", "chk"), ("lvl", "bin")),
}
_ARG_NAMES = {
    "item": (("item", "sku"), ("goods", "article")),
    "qty": (("qty", "quantity"), ("amount", "count")),
}
_DOCS = {
    False: ("Reserve stock of an item.", "Hold units of an item for an order.", "Book stock."),
    True: ("Earmark goods in the warehouse.", "Set aside goods from the store."),
}
_DECOY_DOCS = ("Stock level of an item.", "Check an item's stock.", "Warehouse bins of an item.")


def make_variant(rng: random.Random, names: NameGen, evolved: bool) -> Variant:
    roles, p = q.draw_names(rng, names, evolved, _TOOL_NAMES, _ARG_NAMES)
    ids = q.IdFormat.draw(
        rng, ("WH", "ST", "INV", "LOC") if evolved else ("SKU", "ITM", "PRT", "ART"), evolved
    )
    conv = {"id": ids.spec(), "lot": q.draw_factor(rng, LOTS), "keys": q.draw_keys(rng, KEYS)}
    keys = conv["keys"]

    def find(state: dict[str, Any], value: Any) -> str:
        number = ids.read("item", value)
        if str(number) not in state["stock"]:
            raise LookupError(f"no item {value!r} in this warehouse")
        return str(number)

    def reserve(state: dict[str, Any], **kw: Any) -> dict[str, Any]:
        item, qty = find(state, kw[p["item"]]), int(kw[p["qty"]])
        if qty <= 0:
            raise ValueError(f"{p['qty']} must be positive")
        units = qty * conv["lot"]
        left = q.consume(state["stock"], item, units, "units")
        return {"id": ids.render(int(item)), keys["units"]: units, keys["left"]: left}

    def check(state: dict[str, Any], **kw: Any) -> dict[str, Any]:
        item = find(state, kw[p["item"]])
        return {"id": ids.render(int(item)), "bins": state["bins"][item], "restock_days": 3 + int(item) % 9}

    item_arg = {"item": ("string", "item id")}
    main = q.ToolSpec(rng.choice(_DOCS[evolved]), {**item_arg, "qty": ("integer", "quantity")}, reserve)
    decoy = q.ToolSpec(rng.choice(_DECOY_DOCS), item_arg, check)
    return q.variant(FAMILY_NAME, evolved, roles, p, conv, main=main, decoy=decoy)


_Q = (
    "Reserve {n} units of item {i}, then tell me how many units of item {i} are left. Answer with the number only.",
    "Put {n} units of item {i} on hold. How many units of it remain in stock? Answer with the number only.",
    "Item {i}: reserve {n} units and report the remaining stock. Answer with the number only.",
)


def make_task(variant: Variant, rng: random.Random) -> TaskDraft:
    lot = variant.conv["lot"]
    numbers = rng.sample(range(1, 400), 4)
    stock = {str(n): rng.randint(1500, 5000) for n in numbers}
    item = numbers[0]
    lots = rng.randint(2, 60 // lot + 3)
    n = lots * lot
    ids = q.IdFormat(**variant.conv["id"])
    return TaskDraft(
        kind="reserve",
        query=say(rng, _Q, n=n, i=item),
        answer=str(stock[str(item)] - n),
        gold_calls=[
            {
                "name": variant.roles["main"],
                "arguments": variant.args("main", item=ids.render(item), qty=lots),
            }
        ],
        intent={"item": item, "units": n},
        convention=f"ids like {ids.render(7)}; qty counts lots of {lot}",
        initial_state={"stock": stock, "bins": {str(k): rng.randint(1, 9) for k in numbers}},
    )


def expert(variant: Variant, task: Task, rng: random.Random) -> Generator[Step, CallRecord, None]:
    play = Play(rng)
    main, intent = variant.roles["main"], task.metadata["intent"]
    item, units = intent["item"], intent["units"]
    item_id, qty = str(item), units
    thought = play.say(
        (
            "Reservations are final, so trial first: hold {n} of item {i} in the sandbox.",
            "Test {tool} on the sandbox with item {i} and {n}; it shows the id format and what qty counts.",
            "A trial reservation is safe; check how {tool} reads '{i}' and {n}.",
        ),
        n=units,
        i=item,
        tool=main,
    )
    record = yield from play.trial(main, variant.args("main", item=item_id, qty=units), thought)
    if record is not None and not record.ok and q.learn_id(record.observation, item):
        item_id = q.learn_id(record.observation, item) or item_id
        again = play.say(
            (
                "Ids look different: item {i} is '{d}'. Trial again with it.",
                "The error shows the id format; retry as '{d}'.",
            ),
            i=item,
            d=item_id,
        )
        record = yield from play.trial(main, variant.args("main", item=item_id, qty=units), again)
    got = (
        None if record is None else q.pick(record.observation, KEYS["units"]) or q.needed(record.observation)
    )
    if got:
        lot = round(float(got) / units) if got else 1
        qty = max(1, units // max(1, lot))
        act = play.say(
            (
                "Asking {n} reserved {g} units: qty counts lots of {l}. Reserve {q} for real.",
                "{n} became {g} units, so one qty is {l} units; {n} units is qty {q}.",
            )
            if lot != 1
            else ("The trial reserved exactly {n} units. Do it for real.", "qty counts units. Execute."),
            n=units,
            g=got,
            l=lot,
            q=qty,
        )
    else:
        act = play.say(("No trials; reserve directly.", "Trials are off, so reserve for real."))
    result = yield from play.call(main, variant.args("main", item=item_id, qty=qty), act)
    if not result.ok and q.learn_id(result.observation, item):
        item_id = q.learn_id(result.observation, item) or item_id
        fix = play.say(("The id must look like '{d}'. Retry.",), d=item_id)
        result = yield from play.call(main, variant.args("main", item=item_id, qty=qty), fix)
    left = q.pick(result.observation, KEYS["left"]) if result.ok else None
    yield play.answer(None if left is None else f"{left:g}")


def docs_only(variant: Variant, task: Task, rng: random.Random) -> Generator[Step, CallRecord, None]:
    play, intent = Play(rng), task.metadata["intent"]
    result = yield from play.call_as_documented(variant, item=str(intent["item"]), qty=intent["units"])
    left = q.pick(result.observation, KEYS["left"]) if result.ok else None
    yield play.answer(None if left is None else f"{left:g}")


# -------------------------------------------------------------- feedback levels (feedback.py)
FEEDBACK = {"id": fb.EXAMPLE, "lot": fb.SILENT}


def feedback(variant: Variant, kind: str) -> dict[str, str]:
    """The id format (an example id) always; the lot size unless qty counts single units."""
    return fb.quirks(FEEDBACK, "id", *(() if variant.conv["lot"] == 1 else ("lot",)))


FAMILY = FamilySpec(FAMILY_NAME, "inv", True, make_variant, make_task, expert, docs_only, feedback)
