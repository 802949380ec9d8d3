"""tools=toolhop on ToolHop-shaped fixtures: loading and its one-line errors, splits by query, ToolHop's answer
check (its quirk included), gold replays through the real rollout loop and tool host, hostile functions
contained, and no function ever running in the trainer's process."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers.lookups import task_by_id
from helpers.scripted_replay import call_turns, replay
from helpers.toolhop_fixtures import GOLD, RECORDS, hostile_record, write_hostile_toolhop, write_toolhop

from toolmaster.envs.calls import Isolation
from toolmaster.envs.environment import EXECUTION, TRIAL, ToolEnv
from toolmaster.errors import ConfigError, DataError
from toolmaster.trajectory import Trajectory
from toolmaster.worlds.toolhop import PROMPTS, build_toolhop_world
from toolmaster.worlds.toolhop.functions import ToolHopFunction
from toolmaster.worlds.toolhop.records import defined_function
from toolmaster.worlds.toolhop.scorer import contains_answer, score


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_toolhop(tmp_path_factory.mktemp("toolhop") / "ToolHop.json")


@pytest.fixture(scope="module")
def world(data: Path):
    return build_toolhop_world(str(data), test_fraction=0.34, split_seed=1)


def test_records_become_tasks_with_their_own_tools(world) -> None:
    task = task_by_id(world, "toolhop-0")
    assert task.answer == "3" and task.scorer == "toolmaster.worlds.toolhop.scorer:score"
    assert task.tool_names == ["0/architect_finder", "0/first_name_extractor", "0/letter_counter"]
    assert task.query.endswith("Question: " + RECORDS[0]["question"])
    assert "must come from a tool" in task.query and "YYYY-MM-DD" in task.query
    assert task.metadata["category"] == "3_hops" and len(task.metadata["sub_task"]) == 3
    tool = world.suite.tools["0/letter_counter"]
    assert tool.name == "letter_counter" and tool.parameters["required"] == ["word"]
    # one name, two records: two tools (each record's own function)
    assert world.suite.tools["0/letter_counter"] is not world.suite.tools["5/letter_counter"]
    assert world.suite.origin["_target_"] == "toolmaster.worlds.toolhop.build_toolhop_world"
    free = task_by_id(build_toolhop_world(world.suite.origin["path"], prompt="free"), "toolhop-0")
    assert free.query == PROMPTS["free"].replace("{question}", RECORDS[0]["question"])
    mine = build_toolhop_world(world.suite.origin["path"], instructions="Q: {question} {not a field}")
    assert task_by_id(mine, "toolhop-1").query == "Q: " + RECORDS[1]["question"] + " {not a field}"


def test_splits_are_by_query_and_stable(world, data: Path) -> None:
    splits = {name: [t.id for t in tasks] for name, tasks in world.splits.items()}
    assert splits == {
        "train": ["toolhop-0", "toolhop-1", "toolhop-2", "toolhop-3"],
        "test_seen": ["toolhop-5"],  # mountain_country_locator, capital_finder, letter_counter: all in train
        "test_unseen": ["toolhop-4"],  # string_reverser is in no train query
        "all": [f"toolhop-{i}" for i in range(6)],
    }
    assert all(t.split == name for name, tasks in world.splits.items() for t in tasks)
    again = build_toolhop_world(str(data), test_fraction=0.34, split_seed=1)
    assert {k: [t.id for t in v] for k, v in again.splits.items()} == splits
    default = build_toolhop_world(str(data))  # 20% of 6: one query held out
    assert len(default.splits["test_seen"]) + len(default.splits["test_unseen"]) == 1
    assert len(default.splits["train"]) == 5


@pytest.mark.parametrize(
    "gold,text,official,strict",
    [
        ("3", "<answer>3</answer>", True, True),
        ("Ada Lind", "<answer>ada lind</answer>", True, True),
        ("1962", "<answer>1,962</answer>", True, True),  # commas are removed from the reply
        ("12", "<answer>12.0</answer>", True, True),
        ("Velia", "<answer>Tolm</answer>", False, False),
        ("100", "<answer>1</answer>", True, False),  # rstrip('.0'): 100 -> 1
        ("0", "<answer>no idea</answer>", True, False),  # rstrip('.0'): 0 -> '' (found everywhere)
    ],
)
def test_answer_check_is_toolhops_containment(gold, text, official, strict) -> None:
    assert contains_answer(gold, text, "official") is official
    assert contains_answer(gold, text, "strict") is strict


def test_scorer_reads_the_last_reply_or_the_tool_result_before_it(world) -> None:
    task = task_by_id(world, "toolhop-2")

    def trajectory(*messages: tuple[str, str]) -> Trajectory:
        return Trajectory(task.id, task.split, [{"role": r, "content": c} for r, c in messages])

    assert score(task, trajectory(("user", "q"), ("assistant", "<answer>Velia</answer>")))
    assert score(
        task, trajectory(("user", "q"), ("tool", "Velia"), ("assistant", "<answer>see above</answer>"))
    )
    assert not score(task, trajectory(("user", "q"), ("assistant", "<answer>Tolm</answer>")))
    # ran out of turns right after a call: the last message is a tool result, not a reply
    assert not score(task, trajectory(("user", "q"), ("assistant", "<call>{}</call>"), ("tool", "Velia")))


def test_gold_replays_score_solved_and_perturbed_ones_do_not(world, tiny_tokenizer) -> None:
    tasks = world.tasks("all")
    gold = {t.id: call_turns(GOLD[t.metadata["toolhop_id"]], t.answer) for t in tasks}
    trajectories = replay(world, tasks, gold, tiny_tokenizer)
    assert [t.correct for t in trajectories] == [True] * 6
    for t in trajectories:
        assert all(c["ok"] for c in t.calls), t.calls
    first = trajectories[0]
    assert [c["observation"] for c in first.calls][1:] == ["Ada", "3"]
    assert json.loads(first.calls[0]["observation"])["architect"] == "Ada Lind"

    # the last hop skipped and a wrong answer (after the last hop, its result alone would count, as in ToolHop)
    wrong = {t.id: call_turns(GOLD[t.metadata["toolhop_id"]][:-1], "Lumen") for t in tasks}
    silent = {t.id: call_turns(GOLD[t.metadata["toolhop_id"]], None) for t in tasks}  # never answers
    bad_args = {
        t.id: call_turns([(n, {"nope": 1}) for n, _ in GOLD[t.metadata["toolhop_id"]]], "?") for t in tasks
    }
    assert not any(t.correct for t in replay(world, tasks, wrong, tiny_tokenizer))
    assert not any(t.correct for t in replay(world, tasks, silent, tiny_tokenizer, max_turns=4))
    refused = replay(world, tasks, bad_args, tiny_tokenizer)
    assert not any(t.correct for t in refused)
    assert all(c["error"] == "invalid_arguments" for t in refused for c in t.calls)


def test_hostile_functions_are_contained(tmp_path: Path, tiny_tokenizer) -> None:
    marker = tmp_path / "marker"
    world = build_toolhop_world(str(write_hostile_toolhop(tmp_path / "ToolHop.json", marker)))
    assert not marker.exists(), "building the world ran a function's source"
    task = task_by_id(world, "toolhop-99")
    env = ToolEnv(world.suite, 2, timeout_s=1.0, max_observation_chars=500)
    env.reset(task)
    try:
        exited = env.execute("exit_now", {}, EXECUTION)
        hung = env.execute("hang", {}, EXECUTION)
        flood = env.execute("flood", {}, EXECUTION)
        shout = env.execute("shout", {}, TRIAL)
        assert not marker.exists(), "a trial or a failed call ran `marked`"
        marked = env.execute("marked", {}, EXECUTION)
    finally:
        env.close()
    assert (exited.ok, exited.error) == (False, "tool_exited") and "exit code 3" in exited.observation
    assert (hung.ok, hung.error) == (False, "timeout") and hung.duration_s < 5
    assert flood.ok and flood.output_truncated and len(flood.observation) < 700
    assert shout.ok and shout.observation == "quiet now"  # megabytes printed, none of it kept
    assert marked.ok and marked.observation == "marked" and marker.read_text() == "ran"
    # the episode goes on after every failure: a normal record in the same file still replays correct
    normal = task_by_id(world, "toolhop-2")
    (trajectory,) = replay(world, [normal], {normal.id: call_turns(GOLD["2"], "Velia")}, tiny_tokenizer)
    assert trajectory.correct


def test_a_function_never_runs_in_the_process_that_built_it(world) -> None:
    env = ToolEnv(world.suite, 2, 2.0, 500, isolation=Isolation("thread"))
    env.reset(task_by_id(world, "toolhop-2"))
    record = env.execute("mountain_country_locator", {"mountain": "Mount Orel"}, EXECUTION)
    assert not record.ok and "RefusedInTrainer" in record.observation
    assert "tools.isolation=process" in record.observation
    fn = world.suite.tools["2/mountain_country_locator"].fn
    assert isinstance(fn, ToolHopFunction) and fn.built_in == os.getpid()
    with pytest.raises(RuntimeError, match="never in the trainer's process"):
        fn(mountain="Mount Orel")


def test_the_result_is_cut_in_the_call_process() -> None:
    fn = ToolHopFunction("big", ("def big():\n    return 'z' * 1000\n",), max_result_chars=100, built_in=-1)
    out = fn()
    assert out.startswith("z" * 100) and out.endswith("[result cut: 900 more characters]")
    assert (
        defined_function("import os\n\n# default: def in a comment\ndef real(x):\n    return x\n") == "real"
    )


@pytest.mark.parametrize(
    "records,needle",
    [
        ([1, 2], "a ToolHop record must be a JSON object, got int"),
        ([{"id": 1, "question": "q"}], "missing field(s) ['answer', 'tools', 'functions']"),
        ([{**RECORDS[0], "functions": ["def broken(:\n"]}], "functions[0] is not valid Python"),
        ([{**RECORDS[0], "tools": {}}], "'tools' must be a non-empty mapping"),
        ([RECORDS[0], RECORDS[0]], "duplicate record id '0'"),
    ],
)
def test_bad_files_are_one_line_data_errors(tmp_path: Path, records, needle) -> None:
    path = tmp_path / "ToolHop.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    with pytest.raises(DataError) as err:
        build_toolhop_world(str(path))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_missing_file_and_bad_options_are_one_line_config_errors(tmp_path: Path, data: Path) -> None:
    with pytest.raises(ConfigError, match=r"tools.world.path=.*ToolHop.json not found \(download it from"):
        build_toolhop_world(str(tmp_path / "nowhere" / "ToolHop.json"))
    (tmp_path / "bad.json").write_text("[{oops", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.json:1: not valid JSON"):
        build_toolhop_world(str(tmp_path / "bad.json"))
    with pytest.raises(ConfigError, match="placeholder"):
        build_toolhop_world(str(data), instructions="no question here")
    with pytest.raises(ConfigError, match="test_fraction"):
        build_toolhop_world(str(data), test_fraction=1.5)
    assert hostile_record(tmp_path / "m")["id"] == 99
