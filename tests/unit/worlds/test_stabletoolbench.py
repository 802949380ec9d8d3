"""tools=stabletoolbench against a loopback server speaking StableToolBench's ``POST /virtual`` (real HTTP): the
tools built from ToolEnv2404-shaped files, the requests the server gets, gold replays solved and perturbed ones
not (by rule and by a loopback judge through the OpenAI-compatible client), server errors and timeouts as error
observations, one-line errors for a missing server or key, and the key never in a trajectory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.benchmark_servers import JudgeServer, VirtualApiServer
from helpers.lookups import task_by_id
from helpers.scripted_replay import call_turns, replay
from helpers.stabletoolbench_fixtures import ANSWERS, FACTS, GOLD, RESPONSES, write_stabletoolbench

from toolmaster.envs.environment import EXECUTION, ToolEnv
from toolmaster.errors import ConfigError
from toolmaster.worlds.judge import OpenAIJudge, parse_verdict
from toolmaster.worlds.stabletoolbench import build_stabletoolbench_world
from toolmaster.worlds.stabletoolbench.names import change_name, function_name, standardize

KEY = "tbk-0123456789-secret"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_stabletoolbench(tmp_path_factory.mktemp("stb"))


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TOOLBENCH_KEY", KEY)
    with VirtualApiServer(RESPONSES, key=KEY, slow_s=2.0) as srv:
        yield srv


def build(files: tuple[Path, Path], server: VirtualApiServer, **kw):
    return build_stabletoolbench_world(str(files[0]), str(files[1]), server_url=server.virtual_url, **kw)


def test_names_follow_toolbench() -> None:
    assert standardize("Kick.com API | Kick API") == "kick_com_api_kick_api"
    assert standardize("3D Models!") == "get_3d_models"
    assert standardize("__Get  Movie-Details__") == "get_movie_details"
    assert change_name(standardize("ID")) == "is_id" and change_name("idx") == "idx"
    long = function_name("A very long api name " * 4, "some_tool_with_a_long_name")
    assert len(long) == 64 and long.endswith("_for_some_tool_with_a_long_name")


def test_tools_and_tasks_from_the_files(files, server) -> None:
    world = build(files, server)
    assert {k: [t.id for t in v] for k, v in world.splits.items()} == {
        "G1_instruction": [
            "G1_instruction-588",
            "G1_instruction-608",
        ],  # query 999's tool is missing: skipped
        "G1_tool": ["G1_tool-1073"],
    }
    task = task_by_id(world, "G1_instruction-588")
    tools = [world.suite.tools[k] for k in task.tool_names]
    assert [t.name for t in tools] == [
        "search_movie_for_movie_facts_hub",
        "get_movie_details_for_movie_facts_hub",
        "trending_now_for_movie_facts_hub",
    ]
    search, details, trending = (t.parameters for t in tools)
    assert search["required"] == ["title"] and search["properties"]["year"] == {
        "type": "integer",
        "example_value": 2010,
    }
    assert details["properties"]["is_id"]["type"] == "string" and details["required"] == ["is_id"]
    assert "required" not in trending and "region" in trending["properties"]  # optional-only APIs keep them
    assert tools[0].description.startswith("Search Movie of tool Movie Facts Hub: Search films")
    assert task.metadata["relevant_functions"] == [
        "search_movie_for_movie_facts_hub",
        "get_movie_details_for_movie_facts_hub",
    ]
    assert task.answer == "" and task.split == "G1_instruction"
    assert world.suite.origin["judge"] is None and KEY not in json.dumps(world.suite.origin)
    only = build(files, server, groups=["G1_tool"])
    assert list(only.splits) == ["G1_tool"]


def test_requests_follow_the_virtual_protocol(files, server) -> None:
    world = build(files, server)
    env = ToolEnv(world.suite, 2, 10.0, 1024, strict_types=False)
    env.reset(task_by_id(world, "G1_instruction-588"))
    try:
        record = env.execute("search_movie_for_movie_facts_hub", {"title": "Moon Harbor"}, EXECUTION)
    finally:
        env.close()
    assert record.ok and json.loads(record.observation)["results"][0]["id"] == "tt4242"
    (request,) = server.requests
    body = json.loads(request["body"])
    assert body == {
        "category": "Data",
        "tool_name": "movie_facts_hub",
        "api_name": "search_movie",
        "tool_input": json.dumps({"title": "Moon Harbor"}),
        "strip": "truncate",
        "toolbench_key": KEY,
    }
    assert request["headers"]["toolbench_key"] == KEY and request["path"] == "/virtual"


def _gold(task_ids: list[str], answer: bool = True) -> dict[str, list[str]]:
    return {i: call_turns(GOLD[i], ANSWERS[i] if answer else None) for i in task_ids}


def test_gold_replays_pass_and_perturbed_ones_do_not(files, server, tiny_tokenizer) -> None:
    for rule in ("answered", "relevant_apis"):
        world = build(files, server, rule=rule)
        tasks = [t for split in world.splits.values() for t in split]
        ids = [t.id for t in tasks]
        assert all(t.correct for t in replay(world, tasks, _gold(ids), tiny_tokenizer))
        silent = replay(world, tasks, _gold(ids, answer=False), tiny_tokenizer, max_turns=4)
        assert not any(t.correct for t in silent) and all(t.truncated for t in silent)
        # the answer without the relevant APIs: the first stage passes it, the stricter rule does not
        guessed = {i: call_turns([], ANSWERS[i]) for i in ids}
        passed = [t.correct for t in replay(world, tasks, guessed, tiny_tokenizer)]
        assert passed == ([True] * 3 if rule == "answered" else [False] * 3)


def test_a_judge_decides_answered_episodes(files, server, tiny_tokenizer, monkeypatch) -> None:
    monkeypatch.setenv("JUDGE_KEY", "judge-secret")
    with JudgeServer(FACTS, key="judge-secret") as grader:
        judge = OpenAIJudge(grader.base_url, "grader", api_key_env="JUDGE_KEY", votes=3)
        world = build(files, server, judge=judge)
        tasks = [t for split in world.splits.values() for t in split]
        ids = [t.id for t in tasks]
        assert all(t.correct for t in replay(world, tasks, _gold(ids), tiny_tokenizer))
        assert len(grader.requests) == 3 * len(tasks)  # three votes each
        wrong = {i: call_turns(GOLD[i], "I could not find it.") for i in ids}
        assert not any(t.correct for t in replay(world, tasks, wrong, tiny_tokenizer))
        asked = json.loads(grader.requests[0]["body"])
        assert asked["model"] == "grader" and "Tool calls:" in asked["messages"][1]["content"]
        assert KEY not in json.dumps([json.loads(r["body"]) for r in grader.requests])
    assert parse_verdict('{"verdict": "unsure"}') == 0.5 and parse_verdict("It is SOLVED.") == 1.0
    assert parse_verdict("no idea") == 0.5


def test_server_errors_and_timeouts_become_error_observations(files, server) -> None:
    world = build(files, server, request_timeout_s=0.5)
    env = ToolEnv(world.suite, 2, 5.0, 1024, strict_types=False)
    env.reset(task_by_id(world, "G1_instruction-608"))
    server.faults.extend(["500", "garbage", "error", "slow"])
    try:
        records = [env.execute("trending_now_for_movie_facts_hub", {}, EXECUTION) for _ in range(4)]
        ok = env.execute("trending_now_for_movie_facts_hub", {"region": "UK"}, EXECUTION)
    finally:
        env.close()
    assert [r.ok for r in records] == [False] * 4 and ok.ok
    assert {r.error for r in records} == {"tool_exception"}
    assert "HTTP 500" in records[0].observation
    assert "not JSON" in records[1].observation
    assert "API error: Message error..." in records[2].observation
    assert (
        "no answer from http://127.0.0.1" in records[3].observation
        and "within 0.5 s" in records[3].observation
    )


def test_a_server_that_goes_away_is_an_error_observation(files, monkeypatch) -> None:
    monkeypatch.setenv("TOOLBENCH_KEY", KEY)
    with VirtualApiServer(RESPONSES, key=KEY) as srv:
        world = build(files, srv)
    env = ToolEnv(world.suite, 2, 5.0, 1024, strict_types=False)
    env.reset(task_by_id(world, "G1_instruction-608"))
    try:
        record = env.execute("trending_now_for_movie_facts_hub", {}, EXECUTION)
    finally:
        env.close()
    assert not record.ok and "cannot reach http://127.0.0.1" in record.observation


def test_the_key_is_redacted_from_what_comes_back(files, server, tiny_tokenizer) -> None:
    world = build(files, server)
    task = task_by_id(world, "G1_instruction-608")
    server.faults.append("echo")  # a server that sends the whole request back, key included
    (trajectory,) = replay(world, [task], _gold([task.id]), tiny_tokenizer)
    dumped = json.dumps(trajectory.to_dict())
    assert "[redacted]" in dumped and KEY not in dumped
    assert KEY in server.requests[0]["body"].decode()  # it was sent


def test_missing_server_key_or_files_are_one_line_config_errors(files, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TOOLBENCH_KEY", KEY)
    with VirtualApiServer(RESPONSES) as srv:
        gone = srv.virtual_url
    with pytest.raises(ConfigError, match=r"no virtual API server there \(ConnectionRefusedError") as err:
        build_stabletoolbench_world(str(files[0]), str(files[1]), server_url=gone)
    assert "\n" not in str(err.value) and "python main.py" in str(err.value)
    monkeypatch.delenv("TOOLBENCH_KEY")
    with pytest.raises(ConfigError, match="environment variable TOOLBENCH_KEY is not set"):
        build_stabletoolbench_world(str(files[0]), str(files[1]), server_url=gone)
    with pytest.raises(ConfigError, match="tools.world.tools_dir=.*not found"):
        build_stabletoolbench_world(str(tmp_path / "none"), str(files[1]), key_env=None, check_server=False)
    with pytest.raises(ConfigError, match=r"no query file for \['G3_instruction'\]"):
        build_stabletoolbench_world(
            str(files[0]), str(files[1]), key_env=None, check_server=False, groups=["G3_instruction"]
        )
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="environment variable OPENAI_API_KEY is not set"):
        OpenAIJudge("http://127.0.0.1:9/v1", "m")
