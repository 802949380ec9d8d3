"""Reward components on small hand-built trajectories, the outcome-dominance rule and the reward YAMLs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from toolmaster.config import validate
from toolmaster.envs.task import Task
from toolmaster.errors import ConfigError
from toolmaster.rewards import RewardGroup, build_reward_group
from toolmaster.rewards.components import (
    CallMatch,
    ExecError,
    Format,
    Outcome,
    TrialCost,
    best_pairing,
    call_score,
    degenerate_answer,
    values_match,
)
from toolmaster.trajectory import Trajectory

REWARD_DIR = Path(__file__).resolve().parents[3] / "toolmaster" / "conf" / "reward"
QUERY = "Convert 3 km to miles with qv_conv."
GOLD = [
    {"name": "qv_conv", "arguments": {"spec": "km>mi", "value": 3}},
    {"name": "qv_round", "arguments": {"x": 1.864, "digits": 2}},
]
TASK = Task(id="t1", query=QUERY, answer="1.86", tool_names=["qv_conv", "qv_round"], gold_calls=GOLD)
NO_GOLD_TASK = Task(id="t2", query=QUERY, answer="1.86", tool_names=["qv_conv"])


def call(
    phase: str, name: str | None, arguments: Any = None, ok: bool = True, error: str | None = None
) -> dict:
    return {
        "phase": phase,
        "name": name,
        "arguments": {} if arguments is None else arguments,
        "observation": "",
        "ok": ok,
        "error": error,
    }


def trial(name: str = "qv_conv", ok: bool = True, error: str | None = None, **arguments: Any) -> dict:
    return call("trial", name, arguments, ok, error)


def execute(name: str = "qv_conv", ok: bool = True, error: str | None = None, **arguments: Any) -> dict:
    return call("execution", name, arguments, ok, error)


def traj(
    answer: str | None = "1.86",
    calls: list[dict] | None = None,
    format_errors: int = 0,
    truncated: bool = False,
    trial_budget: int = 2,
) -> Trajectory:
    return Trajectory(
        task_id="t1",
        split="test_seen",
        messages=[{"role": "user", "content": QUERY}],
        calls=calls or [],
        answer=answer,
        format_errors=format_errors,
        truncated=truncated,
        truncation_reason="max_turns" if truncated else None,
        trial_budget=trial_budget,
    )


# ------------------------------------------------------------------ Outcome
@pytest.mark.parametrize(
    ("answer", "expected"),
    [("1.86", 1.0), ("1.860", 1.0), (" 1.86. ", 1.0), ("1.87", 0.0), ("", 0.0), (None, 0.0)],
)
def test_outcome(answer: str | None, expected: float) -> None:
    assert Outcome()(traj(answer), TASK) == expected


# ------------------------------------------------------------------ Format
@pytest.mark.parametrize(
    ("trajectory", "expected"),
    [
        (traj("1.86"), 1.0),
        (traj("The answer is 1.86 miles"), 1.0),  # wrong answers still get format credit
        (traj("x" * 200), 1.0),  # exactly max_answer_chars
        (traj(None), 0.0),
        (traj(""), 0.0),
        (traj("   "), 0.0),
        (traj("."), 0.0),
        (traj("?!... --"), 0.0),
        (traj(QUERY), 0.0),  # copies the query
        (traj("  " + QUERY.upper() + " "), 0.0),  # copy after normalisation
        (traj("x" * 201), 0.0),
        (traj("a" * 500), 0.0),
        (traj("1.86", truncated=True), 0.0),
        (traj("1.86", format_errors=1), 0.0),
        (traj("1.86", format_errors=3), 0.0),
    ],
    ids=[
        "valid",
        "wrong-but-valid",
        "200-chars",
        "none",
        "empty",
        "spaces",
        "dot",
        "punctuation",
        "query",
        "query-normalised",
        "201-chars",
        "500-chars",
        "truncated",
        "one-format-error",
        "three-format-errors",
    ],
)
def test_format_strict(trajectory: Trajectory, expected: float) -> None:
    assert Format()(trajectory, TASK) == expected


@pytest.mark.parametrize(
    ("trajectory", "expected"),
    [
        (traj("1.86"), 1.0),
        (traj("1.86", format_errors=1), 0.75),
        (traj("1.86", format_errors=2), 0.5),
        (traj("1.86", format_errors=9), 0.0),  # floored at 0
        (traj(".", format_errors=1), 0.0),  # degenerate answer: no partial credit
        (traj("1.86", format_errors=1, truncated=True), 0.0),
        (traj(None, format_errors=1), 0.0),
    ],
)
def test_format_partial_credit(trajectory: Trajectory, expected: float) -> None:
    assert Format(per_error_penalty=0.25)(trajectory, TASK) == pytest.approx(expected)


def test_format_custom_answer_limit() -> None:
    assert Format(max_answer_chars=4)(traj("1.86"), TASK) == 1.0
    assert Format(max_answer_chars=3)(traj("1.86"), TASK) == 0.0


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (None, "no answer"),
        ("", "empty"),
        ("  \n", "empty"),
        (".", "letter or digit"),
        (QUERY, "query"),
        ("a" * 500, "longer"),
    ],
)
def test_degenerate_answer_reasons(answer: str | None, reason: str) -> None:
    found = degenerate_answer(answer, QUERY, 200)
    assert found is not None and reason in found
    assert degenerate_answer("1.86", QUERY, 200) is None


# ------------------------------------------------------------------ TrialCost
@pytest.mark.parametrize(
    ("component", "trajectory", "expected"),
    [
        (TrialCost(), traj(calls=[]), 0.0),
        (TrialCost(), traj(calls=[trial(), trial(), execute()]), -0.1),  # 2 trials x 0.05; executions free
        (TrialCost(per_call=0.2), traj(calls=[trial()]), -0.2),
        (TrialCost(free_calls=1), traj(calls=[trial(), trial(), trial()]), -0.1),
        (TrialCost(free_calls=5), traj(calls=[trial(), trial()]), 0.0),
        # failed trial calls (parse errors included) still cost
        (
            TrialCost(),
            traj(
                calls=[
                    trial(ok=False, error="invalid_arguments"),
                    call("trial", None, "{", False, "parse_error"),
                ]
            ),
            -0.1,
        ),
        # over_budget: budget 2, two trials fine, third refused by the environment
        (TrialCost(mode="over_budget", per_call=0.1), traj(calls=[trial(), trial()]), 0.0),
        (
            TrialCost(mode="over_budget", per_call=0.1),
            traj(
                calls=[
                    trial(),
                    trial(),
                    trial(ok=False, error="over_budget"),
                    trial(ok=False, error="over_budget"),
                ]
            ),
            -0.2,
        ),
        # budget 0: every trial is over budget
        (
            TrialCost(mode="over_budget", per_call=0.1),
            traj(calls=[trial(ok=False, error="over_budget")], trial_budget=0),
            -0.1,
        ),
        # trajectories without the error tag (e.g. teachers): count trials beyond the budget
        (
            TrialCost(mode="over_budget", per_call=0.1),
            traj(calls=[trial(), trial(), trial()], trial_budget=1),
            -0.2,
        ),
        (
            TrialCost(mode="over_budget", per_call=0.1, free_calls=1),
            traj(
                calls=[trial(), trial(ok=False, error="over_budget"), trial(ok=False, error="over_budget")],
                trial_budget=1,
            ),
            -0.1,
        ),
    ],
)
def test_trial_cost(component: TrialCost, trajectory: Trajectory, expected: float) -> None:
    assert component(trajectory, TASK) == pytest.approx(expected)


# ------------------------------------------------------------------ ExecError
@pytest.mark.parametrize(
    ("component", "trajectory", "expected"),
    [
        (ExecError(), traj(calls=[execute(), execute()]), 0.0),
        (ExecError(), traj(calls=[execute(ok=False, error="tool_exception"), execute()]), -0.1),
        (ExecError(), traj(calls=[trial(ok=False, error="tool_exception")]), 0.0),  # trial failures are free
        (
            ExecError(per_error=0.05),
            traj(
                calls=[execute(ok=False, error="timeout"), call("execution", None, "{", False, "parse_error")]
            ),
            -0.1,
        ),
        (
            ExecError(per_error=0.1, cap=0.25),
            traj(calls=[execute(ok=False, error="unknown_tool")] * 5),
            -0.25,
        ),
        (ExecError(per_error=0.1, cap=0.25), traj(calls=[execute(ok=False, error="unknown_tool")] * 2), -0.2),
    ],
)
def test_exec_error(component: ExecError, trajectory: Trajectory, expected: float) -> None:
    assert component(trajectory, TASK) == pytest.approx(expected)


# ------------------------------------------------------------------ CallMatch
CONV_OK = {"spec": "km>mi", "value": 3}
ROUND_OK = {"x": 1.864, "digits": 2}


@pytest.mark.parametrize(
    ("component", "trajectory", "task", "expected"),
    [
        # both gold calls made exactly (order ignored)
        (
            CallMatch(),
            traj(calls=[execute("qv_round", **ROUND_OK), execute("qv_conv", **CONV_OK)]),
            TASK,
            1.0,
        ),
        # values normalised: "3" == 3, " KM>MI " == "km>mi", "1.8640" == 1.864, 2.0 == 2
        (
            CallMatch(),
            traj(
                calls=[
                    execute("qv_conv", spec=" KM>MI ", value="3"),
                    execute("qv_round", x="1.8640", digits=2.0),
                ]
            ),
            TASK,
            1.0,
        ),
        # only the first gold call: (1 + 1) / 2
        (CallMatch(), traj(calls=[execute("qv_conv", **CONV_OK)]), TASK, 0.5),
        # trial calls never count
        (CallMatch(), traj(calls=[trial("qv_conv", **CONV_OK), trial("qv_round", **ROUND_OK)]), TASK, 0.0),
        # failed execution calls never count
        (
            CallMatch(),
            traj(calls=[execute("qv_conv", ok=False, error="tool_exception", **CONV_OK)]),
            TASK,
            0.0,
        ),
        # right tool, one of two values wrong: name 1, jaccard 1, values 1/2 -> 2.5/3; second gold unmatched
        (CallMatch(), traj(calls=[execute("qv_conv", spec="km>mi", value=4)]), TASK, (2.5 / 3) / 2),
        # right tool, an extra and a missing parameter: jaccard |{spec}| / |{spec, value, unit}| = 1/3,
        # values 1/2 -> (1 + 1/3 + 1/2) / 3; second gold unmatched
        (
            CallMatch(),
            traj(calls=[execute("qv_conv", spec="km>mi", unit="x")]),
            TASK,
            ((1 + 1 / 3 + 0.5) / 3) / 2,
        ),
        # wrong tool name with the right arguments: (0 + 1 + 1) / 3 for the first gold call
        (CallMatch(), traj(calls=[execute("qv_other", **CONV_OK)]), TASK, (2 / 3) / 2),
        # one predicted call cannot satisfy two gold calls
        (
            CallMatch(),
            traj(calls=[execute("qv_conv", **CONV_OK)]),
            Task("t3", QUERY, "x", ["qv_conv"], gold_calls=[GOLD[0], GOLD[0]]),
            0.5,
        ),
        # no gold calls -> 0.0
        (CallMatch(), traj(calls=[execute("qv_conv", **CONV_OK)]), NO_GOLD_TASK, 0.0),
        # extra-call penalty: 2 exact + 1 unpaired call -> 1.0 - 0.25
        (
            CallMatch(extra_call_penalty=0.25),
            traj(
                calls=[
                    execute("qv_conv", **CONV_OK),
                    execute("qv_round", **ROUND_OK),
                    execute("qv_conv", **CONV_OK),
                ]
            ),
            TASK,
            0.75,
        ),
        # penalty floors at 0
        (
            CallMatch(extra_call_penalty=1.0),
            traj(calls=[execute("a"), execute("b"), execute("c")]),
            TASK,
            0.0,
        ),
    ],
)
def test_call_match(component: CallMatch, trajectory: Trajectory, task: Task, expected: float) -> None:
    assert component(trajectory, task) == pytest.approx(expected)


def test_pairing_is_optimal_not_greedy() -> None:
    # greedy would take the best pair (g0, p0) = 1.0 and leave (g1, p1) = 0.0: total 1.0;
    # the optimum pairs g0-p1 and g1-p0: 0.9 + 0.9 = 1.8
    assert best_pairing([[1.0, 0.9], [0.9, 0.0]]) == (pytest.approx(1.8), 2)
    assert best_pairing([[0.5, 0.2, 0.0]]) == (pytest.approx(0.5), 1)
    assert best_pairing([[0.5], [0.7], [0.6]]) == (pytest.approx(0.7), 1)
    assert best_pairing([]) == (0.0, 0)
    assert best_pairing([[]]) == (0.0, 0)


def test_pairing_beyond_exact_size_falls_back_to_greedy() -> None:
    size = 12  # more predicted calls than the exact search takes
    scores = [[1.0 if g == p else 0.1 for p in range(size)] for g in range(3)]
    assert best_pairing(scores) == (pytest.approx(3.0), 3)


def test_call_match_same_tool_twice() -> None:
    task = Task(
        "t4",
        QUERY,
        "x",
        ["f"],
        gold_calls=[{"name": "f", "arguments": {"a": 1, "b": 2}}, {"name": "f", "arguments": {"a": 1}}],
    )
    assert CallMatch()(traj(calls=[execute("f", a=1), execute("f", a=1, b=2)]), task) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("predicted", "gold", "match"),
    [
        (3, "3", True),
        ("12.50", 12.5, True),
        ("1,000", 1000, True),
        ("Paris", " paris ", True),
        (True, "true", True),
        (True, 1, False),
        (None, None, True),
        (None, "", False),
        ([1, "2"], ["1", 2.0], True),
        ([1, 2], [2, 1], False),
        ({"a": "X"}, {"a": "x"}, True),
        ("km>mi", "mi>km", False),
    ],
)
def test_values_match(predicted: Any, gold: Any, match: bool) -> None:
    assert values_match(predicted, gold) is match


def test_call_score_of_calls_without_arguments() -> None:
    assert call_score({"name": "now", "arguments": {}}, {"name": "now", "arguments": {}}) == 1.0
    assert call_score(
        {"name": "now", "arguments": {"tz": "utc"}}, {"name": "now", "arguments": {}}
    ) == pytest.approx(2 / 3)


# ------------------------------------------------------------------ component validation and max_value
@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: TrialCost(per_call=-1.0), "per_call"),
        (lambda: TrialCost(mode="sometimes"), "mode"),  # type: ignore[arg-type]
        (lambda: TrialCost(free_calls=-1), "free_calls"),
        (lambda: ExecError(cap=-0.1), "cap"),
        (lambda: Format(max_answer_chars=0), "max_answer_chars"),
        (lambda: Format(per_error_penalty=1.5), "per_error_penalty"),
        (lambda: CallMatch(extra_call_penalty=-0.1), "extra_call_penalty"),
        (lambda: Outcome(weight=float("nan")), "weight"),
    ],
)
def test_component_range_checks(factory: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        factory()


@pytest.mark.parametrize(
    ("component", "expected"),
    [
        (Outcome(weight=1.0), 1.0),
        (Format(weight=0.1), 0.1),
        (CallMatch(weight=0.2), 0.2),
        (TrialCost(weight=1.0), 0.0),
        (ExecError(weight=1.0, cap=0.5), 0.0),
        (ExecError(weight=-1.0, cap=0.5), 0.5),  # a negated capped penalty is a bounded bonus
        (TrialCost(weight=-1.0), float("inf")),  # ... an uncapped one is unbounded
    ],
)
def test_max_value(component: Any, expected: float) -> None:
    assert component.max_value == pytest.approx(expected)


# ------------------------------------------------------------------ RewardGroup and outcome dominance
def spec(target: str, **kwargs: Any) -> dict[str, Any]:
    return {"_target_": f"toolmaster.rewards.components.{target}", **kwargs}


def test_reward_group_total_is_weighted_sum() -> None:
    group = build_reward_group(
        {
            "outcome": spec("Outcome", weight=1.0),
            "format": spec("Format", weight=0.1),
            "trial_cost": spec("TrialCost", weight=0.5, per_call=0.1),
            "exec_error": spec("ExecError", weight=2.0, per_error=0.05),
            "call_match": spec("CallMatch", weight=0.2),
        }
    )
    trajectory = traj(
        "1.86",
        calls=[
            trial("qv_conv", **CONV_OK),
            execute("qv_conv", ok=False, error="invalid_arguments", spec="km>mi"),
            execute("qv_conv", **CONV_OK),
        ],
    )
    total, parts = group(trajectory, TASK)
    assert parts == pytest.approx(
        {"outcome": 1.0, "format": 1.0, "trial_cost": -0.1, "exec_error": -0.05, "call_match": 0.5}
    )
    assert total == pytest.approx(1.0 * 1.0 + 0.1 * 1.0 + 0.5 * -0.1 + 2.0 * -0.05 + 0.2 * 0.5)
    group.score([trajectory], {"t1": TASK})
    assert trajectory.reward == pytest.approx(total)
    assert trajectory.reward_components == parts


def test_correct_answer_always_beats_format_only() -> None:
    group = build_reward_group({"outcome": spec("Outcome"), "format": spec("Format", weight=0.9)})
    correct_sloppy, _ = group(traj("1.86", format_errors=2), TASK)
    wrong_tidy, _ = group(traj("2.0"), TASK)
    assert correct_sloppy > wrong_tidy


@pytest.mark.parametrize(
    ("components", "named"),
    [
        ({"outcome": spec("Outcome", weight=1.0), "format": spec("Format", weight=1.0)}, "format 1"),
        (
            {
                "outcome": spec("Outcome"),
                "format": spec("Format", weight=0.5),
                "call_match": spec("CallMatch", weight=0.5),
            },
            "format 0.5 + call_match 0.5",
        ),
        (
            {"outcome": spec("Outcome", weight=0.5), "call_match": spec("CallMatch", weight=0.6)},
            "call_match 0.6",
        ),
        ({"outcome": spec("Outcome"), "bonus": spec("TrialCost", weight=-1.0)}, "bonus inf"),
    ],
)
def test_outcome_dominance_violation_is_one_line_config_error(components: dict, named: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_reward_group(components)
    message = str(info.value)
    assert "\n" not in message
    assert "outweigh a correct answer" in message and named in message


@pytest.mark.parametrize(
    "components",
    [
        {"outcome": spec("Outcome"), "format": spec("Format", weight=0.99)},
        {
            "outcome": spec("Outcome"),
            "trial_cost": spec("TrialCost", weight=5.0),
            "exec_error": spec("ExecError", weight=5.0),
        },
        {"format": spec("Format", weight=3.0)},  # no outcome: nothing to dominate
        {"outcome": spec("Outcome", weight=0.0)},
    ],
)
def test_outcome_dominance_allows(components: dict) -> None:
    assert isinstance(build_reward_group(components), RewardGroup)


def test_bad_component_value_is_config_error() -> None:
    with pytest.raises(ConfigError, match="reward.components.trial_cost"):
        build_reward_group({"outcome": spec("Outcome"), "trial_cost": spec("TrialCost", per_call=-1.0)})


# ------------------------------------------------------------------ the reward YAMLs
@pytest.mark.parametrize(
    ("name", "expected_components"),
    [
        ("outcome", {"outcome"}),
        ("outcome_format", {"outcome", "format"}),
        ("shaped", {"outcome", "format", "trial_cost", "exec_error", "call_match"}),
    ],
)
def test_reward_yaml_composes(name: str, expected_components: set[str]) -> None:
    path = REWARD_DIR / f"{name}.yaml"
    assert path.read_text().startswith("# ")
    cfg = OmegaConf.load(path)
    components = OmegaConf.to_container(cfg.components, resolve=True)
    validate({"reward": {"components": components}})
    group = build_reward_group(components)
    assert set(group.components) == expected_components
    total, parts = group(
        traj("1.86", calls=[execute("qv_conv", **CONV_OK), execute("qv_round", **ROUND_OK)]), TASK
    )
    assert parts["outcome"] == 1.0
    assert total == pytest.approx(sum(group.components[k].weight * v for k, v in parts.items()))


def test_shaped_yaml_values() -> None:
    group = build_reward_group(OmegaConf.to_container(OmegaConf.load(REWARD_DIR / "shaped.yaml").components))
    # correct, valid format, 3 trials with budget 2 (one refused), one failed execution, both gold calls
    trajectory = traj(
        "1.86",
        calls=[
            trial(),
            trial(),
            trial(ok=False, error="over_budget"),
            execute("qv_conv", ok=False, error="invalid_arguments"),
            execute("qv_conv", **CONV_OK),
            execute("qv_round", **ROUND_OK),
        ],
    )
    total, parts = group(trajectory, TASK)
    assert parts == pytest.approx(
        {"outcome": 1.0, "format": 1.0, "trial_cost": -0.1, "exec_error": -0.05, "call_match": 1.0}
    )
    assert total == pytest.approx(1.0 + 0.1 - 0.1 - 0.05 + 0.2)
