"""``tools=restbench``: RestBench's TMDB split (``datasets/tmdb.json``) over TMDB's OpenAPI spec as a world.

The user brings the query file (``queries``: a JSON array of ``{"query", "solution": ["GET /search/movie",
...]}``, 100 queries) and the spec (``spec``: RestGPT's ``specs/tmdb_oas.json``); every GET endpoint of the spec
becomes a tool (``spec.py``) and every query a task of split ``test`` offering all of them (RestGPT's planner
sees every endpoint too). Calls are live against ``base_url`` with the token in ``$token_env``
(``mode=live``), live and written to ``recording`` (``mode=record``), or served from ``recording`` with no
network and no token (``mode=replay``), see ``client.py``. ``base_url`` null means ``$base_url_env`` when that
is set, else the spec's first server (``https://api.themoviedb.org/3``). The base URL is checked once when the
world is built (live and record), and the recording file in replay mode.

Scoring (``scorer.py``): the correct path (the gold endpoints a subsequence of the successful calls) for an
answered episode, or an LLM judge's verdict with ``judge`` set. ``metadata.solution`` keeps the gold endpoints.

Departures from RestGPT's evaluation: the model is this framework's policy (trial phase, one call per
assistant turn), not RestGPT's planner / API selector / caller / parser pipeline; responses are shown as JSON
clipped to ``tools.max_observation_chars`` instead of being parsed by an LLM; the success rate needs a judge
(RestGPT's was human).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from toolmaster.envs.task import Task
from toolmaster.envs.tool import Tool, ToolSuite
from toolmaster.errors import ConfigError, DataError
from toolmaster.worlds.base import World
from toolmaster.worlds.files import existing_file, read_json, resolve_path
from toolmaster.worlds.judge import register
from toolmaster.worlds.remote import read_secret, unreachable
from toolmaster.worlds.restbench.client import MODES, RestEndpoint
from toolmaster.worlds.restbench.spec import endpoint_key, load_spec, tool_name

SCORER = "toolmaster.worlds.restbench.scorer:score"
SOURCE = "RestGPT's repository (Yifan-Song793/RestGPT): datasets/tmdb.json and specs/tmdb_oas.json"


def _queries(path: Path, names: set[str]) -> list[tuple[str, list[str], list[str]]]:
    """(query, gold endpoints as written, their tool names) per entry of the query file."""
    data = read_json(path)
    if not isinstance(data, list) or not data:
        raise DataError(f"{path}: RestBench's query file is a JSON array of {{query, solution}}")
    out = []
    for i, entry in enumerate(data):
        where = f"{path}: query [{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("query"), str):
            raise DataError(f"{where}: needs 'query' (a string) and 'solution' (a list of 'GET /path')")
        solution = entry.get("solution") or []
        keys = [endpoint_key(str(step)) for step in solution] if isinstance(solution, list) else [None]
        if None in keys:
            raise DataError(f"{where}: 'solution' must be a list of 'METHOD /path' strings, got {solution!r}")
        tools = [tool_name(*key) for key in keys if key is not None]
        unknown = [step for step, tool in zip(solution, tools) if tool not in names]
        if unknown:
            raise DataError(f"{where}: solution endpoint(s) {unknown} are not GET endpoints of the spec")
        out.append((entry["query"].strip(), [" ".join(step.split()) for step in solution], tools))
    return out


def _base_url(base_url: str | None, base_url_env: str | None, spec_url: str | None) -> str:
    url = base_url or (os.environ.get(base_url_env) if base_url_env else None) or spec_url
    if not url:
        raise ConfigError(
            "tools.world.base_url: not set and the spec names no server; pass tools.world.base_url=..."
        )
    return url


def _check_mode(mode: str, recording: str | None, token_env: str | None, url: str, check: bool) -> str | None:
    """The resolved recording path (or None); one-line ConfigErrors for what the mode is missing."""
    if mode not in MODES:
        raise ConfigError(f"tools.world.mode: unknown {mode!r}; available: {', '.join(MODES)}")
    if mode == "replay":
        hint = "record one first with tools.world.mode=record"
        return str(existing_file(recording, "tools.world.recording", "recording.jsonl", hint))
    if mode == "record" and not recording:
        raise ConfigError(
            "tools.world.recording is not set: mode=record needs a file to write the responses to"
        )
    if token_env:
        read_secret(token_env, "tools.world.token_env", "TMDB API read access token")
    if check:
        problem = unreachable(url)
        if problem is not None:
            raise ConfigError(
                f"tools.world.base_url={url}: cannot connect ({problem}); check the network, or replay a "
                "recording offline with tools.world.mode=replay"
            )
    return str(resolve_path(recording).absolute()) if recording else None


def build_restbench_world(
    queries: str,
    spec: str,
    mode: Literal["live", "record", "replay"] = "live",
    recording: str | None = None,
    base_url: str | None = None,
    base_url_env: str | None = "TMDB_BASE_URL",
    token_env: str | None = "TMDB_ACCESS_TOKEN",
    judge: Any = None,
    request_timeout_s: float = 20.0,
    max_description_chars: int = 300,
    check_server: bool = True,
) -> World:
    """The RestBench (TMDB) world: ``queries`` over the endpoints of ``spec``."""
    spec_path = existing_file(spec, "tools.world.spec", "tmdb_oas.json", f"from {SOURCE}")
    queries_path = existing_file(queries, "tools.world.queries", "tmdb.json", f"from {SOURCE}")
    spec_url, endpoints = load_spec(spec_path, max_description_chars)
    url = _base_url(base_url, base_url_env, spec_url)
    recording_path = _check_mode(mode, recording, token_env, url, check_server)
    suite = ToolSuite()
    for endpoint in endpoints:
        call = RestEndpoint(
            endpoint.method,
            endpoint.path,
            endpoint.path_params,
            endpoint.query_params,
            url,
            token_env,
            mode,
            recording_path,
            request_timeout_s,
        )
        suite.add(Tool(endpoint.name, endpoint.description, endpoint.parameters, call, family="tmdb"))
    judge_key = register(judge) if judge is not None else None
    tasks = [
        Task(
            id=f"tmdb-{i}",
            query=query,
            answer="",
            tool_names=list(suite.tools),
            split="test",
            family="tmdb",
            metadata={"solution": solution, "solution_tools": tools, "judge": judge_key},
            scorer=SCORER,
        )
        for i, (query, solution, tools) in enumerate(_queries(queries_path, set(suite.tools)), start=1)
    ]
    suite.origin = {
        "_target_": "toolmaster.worlds.restbench.build_restbench_world",
        "queries": str(queries_path),
        "spec": str(spec_path),
        "mode": mode,
        "recording": recording_path,
        "base_url": url,
        "base_url_env": None,
        "token_env": token_env,
        "judge": None,  # the tool host runs calls; judging happens in the trainer's process
        "request_timeout_s": request_timeout_s,
        "max_description_chars": max_description_chars,
        "check_server": False,  # checked once, here
    }
    return World(name="restbench", suite=suite, splits={"test": tasks})
