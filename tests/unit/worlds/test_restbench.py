"""tools=restbench against a loopback REST server (real HTTP, Bearer token checked as TMDB does): tools from a
TMDB-shaped OpenAPI spec, live calls, a session recorded and then replayed offline with the server gone, gold
paths solved and perturbed ones not (by rule and by a loopback judge), one-line errors for a missing token,
spec or recording, and the token in no recording or trajectory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.benchmark_servers import JudgeServer, RestServer
from helpers.lookups import task_by_id
from helpers.restbench_fixtures import ANSWERS, FACTS, GOLD, TABLE, write_recording, write_restbench
from helpers.scripted_replay import call_turns, replay

from toolmaster.envs.environment import EXECUTION, ToolEnv
from toolmaster.errors import ConfigError, DataError
from toolmaster.worlds.judge import OpenAIJudge
from toolmaster.worlds.restbench import build_restbench_world
from toolmaster.worlds.restbench.recording import canonical_request
from toolmaster.worlds.restbench.scorer import is_subsequence
from toolmaster.worlds.restbench.spec import endpoint_key, tool_name

TOKEN = "tmdb-read-token-abcdef0123"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_restbench(tmp_path_factory.mktemp("restbench"))


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TMDB_ACCESS_TOKEN", TOKEN)
    with RestServer(TABLE, token=TOKEN) as server:
        yield server


def live(files, api, **kw):
    return build_restbench_world(str(files[0]), str(files[1]), base_url=api.url, **kw)


def _gold(ids: list[str], answer: bool = True) -> dict[str, list[str]]:
    return {i: call_turns(GOLD[i], ANSWERS[i] if answer else None) for i in ids}


def test_spec_becomes_get_tools(files, api) -> None:
    world = live(files, api)
    assert sorted(world.suite.tools) == [
        "get_movie_movie_id_credits",
        "get_movie_top_rated",
        "get_person_person_id_movie_credits",
        "get_search_movie",
        "get_search_person",
        "get_trending_media_type_time_window",
    ]
    search = world.suite.tools["get_search_person"]
    assert search.description == "GET /search/person: Search for people."
    assert search.parameters["required"] == ["query"]
    assert search.parameters["properties"]["page"]["type"] == "integer"  # a $ref into components
    credits = world.suite.tools["get_person_person_id_movie_credits"].parameters  # a path-level parameter
    assert credits["required"] == ["person_id"] and credits["properties"]["person_id"]["type"] == "integer"
    task = task_by_id(world, "tmdb-3")
    assert task.metadata["solution"] == ["GET /movie/top_rated", "GET /movie/{movie_id}/credits"]
    assert task.metadata["solution_tools"] == ["get_movie_top_rated", "get_movie_movie_id_credits"]
    assert task.tool_names == list(world.suite.tools) and task.split == "test"
    assert endpoint_key(" GET /search/movie ") == ("GET", "/search/movie") and endpoint_key("GET") is None
    assert tool_name("GET", "/trending/{media_type}/{time_window}") == "get_trending_media_type_time_window"
    assert canonical_request("get", "/x", {"b": True, "a": "q r"}) == "GET /x?a=q+r&b=true"
    assert is_subsequence(["a", "c"], ["a", "b", "c"]) and not is_subsequence(["c", "a"], ["a", "b", "c"])


def test_live_calls_send_the_token_and_fail_as_observations(files, api) -> None:
    world = live(files, api)
    env = ToolEnv(world.suite, 2, 10.0, 2000, strict_types=False)
    env.reset(task_by_id(world, "tmdb-1"))
    try:
        ok = env.execute("get_search_person", {"query": "Sofia Coppola"}, EXECUTION)
        missing = env.execute("get_movie_movie_id_credits", {"movie_id": 1}, EXECUTION)
        api.faults.append("500")
        broken = env.execute("get_movie_top_rated", {"page": 1}, EXECUTION)
    finally:
        env.close()
    assert ok.ok and json.loads(ok.observation)["results"][0]["id"] == 1769
    assert api.requests[0]["headers"]["authorization"] == f"Bearer {TOKEN}"
    assert api.requests[0]["path"] == "/search/person?query=Sofia+Coppola"
    assert not missing.ok and "HTTP 404 for GET /movie/1/credits" in missing.observation
    assert not broken.ok and "HTTP 500" in broken.observation


def test_gold_paths_pass_and_perturbed_ones_do_not(files, api, tiny_tokenizer) -> None:
    world = live(files, api)
    tasks = world.tasks("test")
    ids = [t.id for t in tasks]
    assert all(t.correct for t in replay(world, tasks, _gold(ids), tiny_tokenizer))
    reversed_path = {i: call_turns(list(reversed(GOLD[i])), ANSWERS[i]) for i in ids}
    first_only = {i: call_turns(GOLD[i][:1], ANSWERS[i]) for i in ids}
    as_trials = {i: call_turns(GOLD[i], ANSWERS[i], kind="trial") for i in ids}  # probes only
    silent = _gold(ids, answer=False)
    for perturbed in (reversed_path, first_only, as_trials):
        assert not any(t.correct for t in replay(world, tasks, perturbed, tiny_tokenizer))
    assert not any(t.correct for t in replay(world, tasks, silent, tiny_tokenizer, max_turns=3))


def test_a_recorded_session_replays_offline(files, tmp_path, monkeypatch, tiny_tokenizer) -> None:
    monkeypatch.setenv("TMDB_ACCESS_TOKEN", TOKEN)
    recording = tmp_path / "tmdb.recording.jsonl"
    with RestServer(TABLE, token=TOKEN) as server:
        world = live(files, server, mode="record", recording=str(recording))
        tasks = world.tasks("test")
        online = replay(world, tasks, _gold([t.id for t in tasks]), tiny_tokenizer)
    text = recording.read_text()
    assert TOKEN not in text
    recorded = {json.loads(line)["request"]: json.loads(line) for line in text.splitlines()}
    expected = {
        json.loads(line)["request"]: json.loads(line)
        for line in write_recording(tmp_path / "x").read_text().splitlines()
    }
    assert recorded == expected  # exactly the gold requests, in the fixture recording's format
    monkeypatch.delenv("TMDB_ACCESS_TOKEN")  # offline: no server, no token
    offline_world = build_restbench_world(
        str(files[0]), str(files[1]), mode="replay", recording=str(recording)
    )
    offline = replay(offline_world, tasks, _gold([t.id for t in tasks]), tiny_tokenizer)
    assert all(t.correct for t in offline)
    assert [c["observation"] for t in offline for c in t.calls] == [
        c["observation"] for t in online for c in t.calls
    ]
    env = ToolEnv(offline_world.suite, 2, 5.0, 500)
    env.reset(tasks[0])
    try:
        unknown = env.execute("get_search_person", {"query": "Nobody"}, EXECUTION)
    finally:
        env.close()
    assert (
        not unknown.ok and "no recorded response for GET /search/person?query=Nobody" in unknown.observation
    )


def test_a_judge_decides_success(files, api, tiny_tokenizer, monkeypatch) -> None:
    monkeypatch.setenv("JUDGE_KEY", "judge-secret")
    with JudgeServer(FACTS, key="judge-secret") as grader:
        world = live(files, api, judge=OpenAIJudge(grader.base_url, "grader", api_key_env="JUDGE_KEY"))
        tasks = world.tasks("test")
        ids = [t.id for t in tasks]
        assert all(t.correct for t in replay(world, tasks, _gold(ids), tiny_tokenizer))
        # a right answer on another path: the judge accepts it (no path rule), a wrong one it does not
        shortcut = {i: call_turns(GOLD[i][:1], ANSWERS[i]) for i in ids}
        assert all(t.correct for t in replay(world, tasks, shortcut, tiny_tokenizer))
        wrong = {i: call_turns(GOLD[i], "Keanu Reeves") for i in ids}
        assert not any(t.correct for t in replay(world, tasks, wrong, tiny_tokenizer))


def test_one_line_errors_for_token_spec_recording_and_server(files, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("TMDB_ACCESS_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="environment variable TMDB_ACCESS_TOKEN is not set") as err:
        build_restbench_world(str(files[0]), str(files[1]))
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"tools.world.recording=.*not found \(record one first"):
        build_restbench_world(
            str(files[0]), str(files[1]), mode="replay", recording=str(tmp_path / "none.jsonl")
        )
    with pytest.raises(ConfigError, match=r"tools.world.spec=.*tmdb_oas.json not found"):
        build_restbench_world(str(files[0]), str(tmp_path / "tmdb_oas.json"), mode="replay")
    monkeypatch.setenv("TMDB_ACCESS_TOKEN", TOKEN)
    with RestServer(TABLE, token=TOKEN) as server:
        gone = server.url
    with pytest.raises(
        ConfigError, match=r"cannot connect \(ConnectionRefusedError.*tools.world.mode=replay"
    ):
        build_restbench_world(str(files[0]), str(files[1]), base_url=gone)
    bad = tmp_path / "tmdb.json"
    bad.write_text(json.dumps([{"query": "q", "solution": ["GET /no/such/endpoint"]}]))
    with pytest.raises(DataError, match=r"solution endpoint\(s\) \['GET /no/such/endpoint'\]"):
        build_restbench_world(
            str(bad), str(files[1]), mode="replay", recording=str(write_recording(tmp_path / "r"))
        )
