"""Family ``recipes`` (seen): cook a recipe from a pantry kept in the episode state, report what is left.

Quirks (from ``quirks``):
- silent scale, echoed: ``servings`` counts batches of a drawn size (1 = the documented servings, 2, 3,
  4, 5, 6, 8, 10, 12); the result echoes how many people the cooked food serves.
- irreversible state: cooking uses pantry stock for good (no undo tool), so the batch size has to be
  learnt on the sandbox before the real call.
- renamed fields: the result's field names (food used, pantry left) are drawn per variant.
Evolved variant: renamed tools and arguments; recipes are named by ids in a drawn format that a bare
number's error reveals ("recipe 12" -> 'RC-0012'), on top of the batch size.
Decoy: a nutrition tool on the same recipe that returns calories and allergens.
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

FAMILY_NAME = "recipes"
BATCHES = (1, 2, 3, 4, 5, 6, 8, 10, 12)
DISHES = ("pancakes", "risotto", "chili", "flatbread", "curry", "omelette", "porridge", "goulash", "pilaf")
FOODS = ("flour", "rice", "milk", "butter", "sugar", "oats", "beans", "onion", "cheese", "tomato")
KEYS = {
    "serves": ("serves", "feeds", "portions", "people"),
    "pantry": ("pantry", "left", "stock", "remaining"),
}

_TOOL_NAMES = {
    "main": (("cook", "prep", "mk"), ("meal", "kit", "brew")),
    "decoy": (("nut", "kcal"), ("diet", "fct")),
}
_ARG_NAMES = {"dish": (("recipe", "dish"), ("meal", "formula")), "n": (("servings", "n"), ("yield", "batch"))}
_DOCS = {
    False: ("Cook a recipe from the pantry.", "Prepare a dish.", "Cook servings of a recipe."),
    True: ("Kitchen: make a dish using stored food.", "Produce a meal from supplies."),
}
_DECOY_DOCS = ("Nutrition facts of a recipe.", "Calories of a dish.", "Dietary info for a recipe.")


def make_variant(rng: random.Random, names: NameGen, evolved: bool) -> Variant:
    roles, p = q.draw_names(rng, names, evolved, _TOOL_NAMES, _ARG_NAMES)
    conv: dict[str, Any] = {"batch": q.draw_factor(rng, BATCHES), "keys": q.draw_keys(rng, KEYS)}
    if evolved:
        conv["id"] = q.IdFormat.draw(rng, ("RC", "RCP", "DISH", "MEAL"), rng.random() < 0.5).spec()
    ids = q.IdFormat(**conv["id"]) if evolved else None
    keys = conv["keys"]

    def find(state: dict[str, Any], value: Any) -> str:
        name = str(ids.read("recipe", value)) if ids else str(value).strip().lower()
        if name not in state["recipes"]:
            raise LookupError(f"no recipe {value!r}")
        return name

    def cook(state: dict[str, Any], **kw: Any) -> dict[str, Any]:
        dish, n = find(state, kw[p["dish"]]), float(kw[p["n"]])
        if n <= 0:
            raise ValueError(f"{p['n']} must be positive")
        people = n * conv["batch"]
        for food, grams in state["recipes"][dish].items():
            q.consume(state["pantry"], food, round(grams * people, 3), f"g of {food}")
        return {keys["serves"]: round(people, 3), keys["pantry"]: dict(state["pantry"])}

    def facts(state: dict[str, Any], **kw: Any) -> dict[str, Any]:
        dish = find(state, kw[p["dish"]])
        return {"kcal_per_serving": 90 * len(state["recipes"][dish]) + len(dish) * 7, "allergens": ["gluten"]}

    dish_arg = {"dish": ("string", "recipe")}
    main = q.ToolSpec(rng.choice(_DOCS[evolved]), {**dish_arg, "n": ("number", "servings")}, cook)
    decoy = q.ToolSpec(rng.choice(_DECOY_DOCS), dish_arg, facts)
    return q.variant(FAMILY_NAME, evolved, roles, p, conv, main=main, decoy=decoy)


_Q = (
    "Cook {d} for {n} people, then tell me how many grams of {f} are left in the pantry. Answer with the number only.",
    "Make {n} servings of {d}. How many grams of {f} remain afterwards? Answer with the number only.",
    "Prepare {d} for {n}; report the grams of {f} still in the pantry. Answer with the number only.",
)


def make_task(variant: Variant, rng: random.Random) -> TaskDraft:
    dishes = rng.sample(DISHES, 3)
    recipes = {d: {f: rng.randint(2, 40) * 5 for f in rng.sample(FOODS, 3)} for d in dishes}
    pantry = {f: rng.randint(500, 900) * 50 for f in FOODS}  # never short, even for a wrong batch size
    numbers = rng.sample(range(1, 300), 3)
    if variant.evolved:  # the evolved tools know recipes by number; the question says "recipe 12"
        recipes = {str(n): recipes[d] for n, d in zip(numbers, dishes)}
    dish = next(iter(recipes))
    n = rng.randint(2, 9)
    food = rng.choice(sorted(recipes[dish]))
    gold_dish = q.IdFormat(**variant.conv["id"]).render(int(dish)) if variant.evolved else dish
    return TaskDraft(
        kind="cook",
        query=say(rng, _Q, d=f"recipe {dish}" if variant.evolved else dish, n=n, f=food),
        answer=fmt_num(pantry[food] - recipes[dish][food] * n),
        gold_calls=[
            {
                "name": variant.roles["main"],
                "arguments": variant.args("main", dish=gold_dish, n=n / variant.conv["batch"]),
            }
        ],
        intent={"dish": dish, "people": n, "food": food, "by_id": variant.evolved},
        convention=f"servings count batches of {variant.conv['batch']}",
        initial_state={"pantry": pantry, "recipes": recipes},
    )


def _left(observation: str, food: str) -> str | None:
    pantry = q.pick(observation, KEYS["pantry"])
    return fmt_num(pantry[food]) if isinstance(pantry, dict) and food in pantry else None


def expert(variant: Variant, task: Task, rng: random.Random) -> Generator[Step, CallRecord, None]:
    play = Play(rng)
    main, intent = variant.roles["main"], task.metadata["intent"]
    dish, people, food = intent["dish"], intent["people"], intent["food"]
    n: float = people
    thought = play.say(
        (
            "Cooking uses up the pantry, so trial first: cook {d} for {n} in the sandbox.",
            "A sandbox run of {tool} with {n} servings shows what the number really means.",
            "Trial {tool} on '{d}' with {n}; the result says how many it serves.",
        ),
        d=dish,
        n=people,
        tool=main,
    )
    record = yield from play.trial(main, variant.args("main", dish=dish, n=people), thought)
    if record is not None and not record.ok and q.learn_id(record.observation, int(dish)):
        dish = q.learn_id(record.observation, int(dish)) or dish
        again = play.say(
            ("Recipes go by id: '{d}'. Trial again.", "The error shows the id format; retry as '{d}'."),
            d=dish,
        )
        record = yield from play.trial(main, variant.args("main", dish=dish, n=people), again)
    serves = None if record is None else q.pick(record.observation, KEYS["serves"])
    if serves:
        batch = round(float(serves) / people)
        n = people / batch
        act = play.say(
            (
                "Asking {p} fed {s}: one serving unit is {b} people. Send {n}.",
                "{p} became {s} portions, so the number counts batches of {b}; cook {n}.",
            )
            if batch != 1
            else (
                "{p} servings fed {s}, as documented. Cook for real.",
                "The number counts people. Execute.",
            ),
            p=people,
            s=fmt_num(float(serves)),
            b=batch,
            n=fmt_num(n, 6),
        )
    else:
        act = play.say(("No trials; cook directly.", "Trials are off, so cook for real."))
    result = yield from play.call(main, variant.args("main", dish=dish, n=n), act)
    if not result.ok and q.learn_id(result.observation, int(dish) if dish.isdigit() else 0):
        dish = q.learn_id(result.observation, int(dish)) or dish
        fix = play.say(("The recipe id must look like '{d}'. Retry.",), d=dish)
        result = yield from play.call(main, variant.args("main", dish=dish, n=n), fix)
    yield play.answer(_left(result.observation, food) if result.ok else None)


def docs_only(variant: Variant, task: Task, rng: random.Random) -> Generator[Step, CallRecord, None]:
    play, intent = Play(rng), task.metadata["intent"]
    result = yield from play.call_as_documented(variant, dish=intent["dish"], n=intent["people"])
    yield play.answer(_left(result.observation, intent["food"]) if result.ok else None)


# -------------------------------------------------------------- feedback levels (feedback.py)
FEEDBACK = {"id": fb.EXAMPLE, "batch": fb.SILENT}


def feedback(variant: Variant, kind: str) -> dict[str, str]:
    """Recipe ids (an example id, evolved only); the batch size unless servings count single people."""
    return fb.quirks(
        FEEDBACK, *(("id",) if variant.evolved else ()), *(() if variant.conv["batch"] == 1 else ("batch",))
    )


FAMILY = FamilySpec(FAMILY_NAME, "rec", True, make_variant, make_task, expert, docs_only, feedback)
