"""The quirk-built families: each one, over many fresh variants, needs trials and rewards them.

Every task here draws its own variant (as the per-task world does) and is played through a real
ToolEnv: the expert with two trials solves nearly all of them, the same expert without trials and the
docs-only baseline clearly fewer; each family draws many distinct hidden conventions; and the policies
work with ``Variant.conv`` replaced by an object that refuses every access, so no policy reads it.
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Callable
from typing import Any

import pytest

from toolmaster.envs.environment import EXECUTION, TRIAL, ToolEnv
from toolmaster.envs.task import Task
from toolmaster.envs.tool import ToolSuite
from toolmaster.worlds.scripted import run_policy
from toolmaster.worlds.toolworld import quirks as q
from toolmaster.worlds.toolworld.common import FamilySpec, NameGen, Variant
from toolmaster.worlds.toolworld.families import ALL, BY_NAME

NEW = ("inventory", "recipes", "sensors", "tickets", "geo", "booking")
N_TASKS = 60


class _Sealed:
    """A stand-in for ``Variant.conv`` that fails any policy that looks at it, in any way."""

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a policy read Variant.conv")

    __getitem__ = __contains__ = __iter__ = __len__ = __eq__ = __hash__ = _refuse

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"a policy read Variant.conv.{name}")


def _case(family: FamilySpec, seed: int, evolved: bool = False) -> tuple[Variant, Task]:
    """One task on its own fresh variant, with the variant's conv sealed after the task is drawn."""
    rng = random.Random(seed * 7_919 + 13)
    variant = family.make_variant(rng, NameGen(rng), evolved)
    draft = family.make_task(variant, rng)
    names = variant.tool_names
    rng.shuffle(names)
    task = Task(
        id=f"t-{family.short}-{seed}",
        query=draft.query,
        answer=draft.answer,
        tool_names=names,
        family=family.name,
        initial_state=draft.initial_state,
        gold_calls=draft.gold_calls,
        metadata={"intent": draft.intent, "kind": draft.kind, "convention": draft.convention},
    )
    variant.conv = _Sealed()  # type: ignore[assignment]  # the tools keep their own copy
    return variant, task


def _rate(family: FamilySpec, policy: Callable[..., Any], budget: int, evolved: bool = False) -> float:
    wins = 0
    for seed in range(N_TASKS):
        variant, task = _case(family, seed, evolved)
        env = ToolEnv(ToolSuite.of(variant.tools), trial_budget=budget)
        episode = run_policy(functools.partial(policy, variant), task, env, random.Random(seed))
        assert episode.steps[-1].kind == "answer", (family.name, seed)
        assert sum(step.kind == "trial" for step in episode.steps) <= max(budget, 1)
        wins += episode.correct
    return wins / N_TASKS


def test_new_families_are_registered() -> None:
    assert set(NEW) <= set(BY_NAME)
    assert len(ALL) >= 16
    assert sum(not family.seen for family in ALL) >= 5
    assert sum(not BY_NAME[name].seen for name in NEW) >= 2


@pytest.mark.parametrize("name", NEW)
def test_trials_pay_off(name: str) -> None:
    family = BY_NAME[name]
    for evolved in (False, True) if family.seen else (False,):
        expert = _rate(family, family.expert, 2, evolved)
        blind = _rate(family, family.expert, 0, evolved)
        docs = _rate(family, family.docs_only, 2, evolved)
        assert expert >= 0.95, (name, evolved, expert)
        assert blind <= expert - 0.3, (name, evolved, expert, blind)
        assert docs <= 0.5, (name, evolved, docs)


@pytest.mark.parametrize("name", NEW)
def test_many_conventions(name: str) -> None:
    family = BY_NAME[name]
    convs = set()
    for seed in range(50):
        rng = random.Random(seed)
        convs.add(json.dumps(family.make_variant(rng, NameGen(rng), False).conv, sort_keys=True))
    assert len(convs) >= 6, (name, len(convs))


@pytest.mark.parametrize("name", [n for n in NEW if n in BY_NAME and BY_NAME[n].seen])
def test_evolved_variants_differ_in_structure(name: str) -> None:
    family = BY_NAME[name]
    rng = random.Random(3)
    names = NameGen(rng)
    base, evolved = family.make_variant(rng, names, False), family.make_variant(rng, names, True)
    assert evolved.key == base.key + "~evolved" and evolved.evolved
    assert not set(base.tool_names) & set(evolved.tool_names)
    assert set(base.params["main"].values()) != set(evolved.params["main"].values())
    # a different kind of convention: a new one appears, or the ids switch from prefix to suffix style
    assert set(base.conv) != set(evolved.conv) or base.conv["id"]["suffix"] != evolved.conv["id"]["suffix"]


@pytest.mark.parametrize("name", NEW)
def test_gold_calls_work_and_decoys_differ(name: str) -> None:
    family = BY_NAME[name]
    for seed in range(20):
        variant, task = _case(family, seed)
        env = ToolEnv(ToolSuite.of(variant.tools), trial_budget=2)
        env.reset(task)
        call = task.gold_calls[0]
        real = env.execute(call["name"], call["arguments"], TRIAL)
        decoy = variant.roles["decoy"]
        props = variant.tools[variant.tool_names.index(decoy)].parameters["properties"]
        fake = env.execute(decoy, {k: v for k, v in call["arguments"].items() if k in props}, TRIAL)
        assert real.ok and fake.ok and real.observation != fake.observation, (name, seed, fake.observation)
        for call in task.gold_calls:
            assert env.execute(call["name"], call["arguments"], EXECUTION).ok, (name, seed, call)


def test_template_round_trip_and_learning() -> None:
    tokens = {"YYYY": r"\d{4}", "MM": r"\d{2}", "DD": r"\d{2}"}
    template = q.Template("DD.MM.YYYY", tokens)
    text = template.render(YYYY="2025", MM="03", DD="07")
    assert text == "07.03.2025" and template.parse(text) == {"DD": "07", "MM": "03", "YYYY": "2025"}
    assert template.parse("2025-03-07") is None
    with pytest.raises(ValueError) as err:
        template.read("day", "2025-03-07")
    learned = q.Template.learn(str(err.value), tokens)
    assert learned is not None and learned.render(YYYY="2024", MM="12", DD="31") == "31.12.2024"


def test_id_format_round_trip_and_learning() -> None:
    for seed in range(30):
        ids = q.IdFormat.draw(random.Random(seed), ("SKU", "WH"), seed % 2 == 1)
        assert ids.parse(ids.render(42)) == 42 and ids.parse("42") is None
        with pytest.raises(LookupError) as err:
            ids.read("item", "42")
        assert q.learn_id(str(err.value), 42) == ids.render(42)


def test_snap_and_consume() -> None:
    assert q.snap(2150.0, 21.5, (0.01, 0.1, 1, 10, 100)) == 100
    pool = {"a": 10}
    assert q.consume(pool, "a", 4, "units") == 6
    with pytest.raises(ValueError, match="needs 7"):
        q.consume(pool, "a", 7, "units")
    assert pool == {"a": 6}


def test_draw_names_reads_flat_and_per_evolved_choices() -> None:
    tools = {"main": ("aa", "bb"), "decoy": (("cc",), ("dd",))}
    args = {"x": ("x1", "x2"), "y": {False: ("base_y",), True: ("new_y",)}}
    for evolved in (False, True):
        rng = random.Random(3)
        roles, params = q.draw_names(rng, NameGen(rng), evolved, tools, args)
        assert roles["main"].split("_")[1] in ("aa", "bb") and params["x"] in ("x1", "x2")
        assert roles["decoy"].endswith("_dd" if evolved else "_cc")
        assert params["y"] == ("new_y" if evolved else "base_y")


def test_variant_renames_logical_args_and_derives_params() -> None:
    def main_fn(**kw: Any) -> Any:
        return kw["qq"] * 2

    roles, params = {"main": "zz_main", "decoy": "zz_dec"}, {"n": "qq", "tag": "label"}
    variant = q.variant(
        "fam",
        True,
        roles,
        params,
        {"k": 1},
        data={"d": 2},
        main=q.ToolSpec("Main.", {"n": ("integer", "count"), "tag": ("string", "a tag")}, main_fn),
        decoy=q.ToolSpec("Decoy.", {"tag": ("string", "other")}, lambda **kw: kw["label"]),
    )
    assert variant.key == "fam~evolved" and variant.tool_names == ["zz_main", "zz_dec"]
    assert variant.params == {"main": {"n": "qq", "tag": "label"}, "decoy": {"tag": "label"}}
    main, decoy = variant.tools
    assert main.parameters["properties"] == {
        "qq": {"type": "integer", "description": "count"},
        "label": {"type": "string", "description": "a tag"},
    }
    assert main.parameters["required"] == ["qq", "label"] and decoy.family == "fam"
    assert main.fn(**variant.args("main", n=21, tag="t")) == 42 and variant.data == {"d": 2}
    with pytest.raises(ValueError, match="roles"):
        q.variant("fam", False, roles, params, {}, main=q.ToolSpec("Main.", {}, main_fn))
