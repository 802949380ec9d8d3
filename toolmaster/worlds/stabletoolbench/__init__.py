"""``tools=stabletoolbench``: StableToolBench's solvable queries against a running virtual API server.

The user brings three things (nothing of StableToolBench is in this repository): the ToolEnv2404 tool folder
(``tools_dir``: ``<category>/<tool>.json``), the solvable-query files (``queries_dir``:
``G1_instruction.json`` ...) and a running virtual API server (``server_url``, StableToolBench's
``server/main.py`` at ``http://<host>:8080/virtual``), plus a ToolBench key in the environment variable
``key_env`` names (null for a server that needs none). Each query file is one split named after it (``groups``
picks some; default: every ``*.json`` in ``queries_dir``); each query is a task offering the APIs of its
``api_list`` (``queries.py``, ``tools.py``). Calls go to the server from the tool host's call processes; a
server error or timeout is an error observation. The server is checked once when the world is built, so a
server that is not running is one line, not an error in every episode.

Scoring (``scorer.py``): without a judge, the share of episodes that end with an answer (StableToolEval's
first stage, an upper bound of the Solvable Pass Rate); with ``judge`` (an ``OpenAIJudge`` node, see
``toolmaster.worlds.judge`` and docs/benchmarks.md) the judge decides answered episodes, as SoPR does.
``rule=relevant_apis`` adds a rule-only condition (every relevant API called successfully).

Departures from StableToolBench's runner (ToolBench's ``rapidapi_wrapper`` with CoT): the system prompt is this
framework's protocol (trial phase; one call per assistant turn; an ``<answer>`` instead of the ``Finish``
function, so there is no ``give_up_and_restart``), and the tool list of ToolBench's system prompt is not repeated
(each function's description names its tool); see ``tools.py`` for the request and the observation.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from toolmaster.envs.task import Task
from toolmaster.envs.tool import Tool, ToolSuite
from toolmaster.errors import ConfigError, DataError
from toolmaster.worlds.base import World
from toolmaster.worlds.files import existing_dir
from toolmaster.worlds.judge import register
from toolmaster.worlds.remote import read_secret, unreachable
from toolmaster.worlds.stabletoolbench.names import function_name, standardize
from toolmaster.worlds.stabletoolbench.queries import Query, ToolFiles, read_queries
from toolmaster.worlds.stabletoolbench.scorer import RULES
from toolmaster.worlds.stabletoolbench.tools import VirtualApi, api_schema

log = logging.getLogger(__name__)
SCORER = "toolmaster.worlds.stabletoolbench.scorer:score"
SOURCE = (
    "the ToolEnv2404 data set (stabletoolbench/ToolEnv2404 on Hugging Face) and StableToolBench's repository"
)
SERVER_HINT = "start StableToolBench's server (cd server && python main.py) or set tools.world.server_url"


def _groups(queries_dir: Path, groups: list[str] | None) -> dict[str, Path]:
    found = {p.stem: p for p in sorted(queries_dir.glob("*.json"))}
    if not found:
        raise ConfigError(
            f"tools.world.queries_dir={queries_dir}: no query files (*.json); point it at StableToolBench's "
            "solvable_queries/test_instruction"
        )
    if groups is None:
        return found
    missing = [g for g in groups if g not in found]
    if missing:
        raise ConfigError(
            f"tools.world.groups: no query file for {missing} in {queries_dir}; found: {', '.join(found)}"
        )
    return {g: found[g] for g in groups}


def _task(query: Query, keys: list[str], rule: str, judge_key: str | None) -> Task:
    relevant = [function_name(api, standardize(tool)) for tool, api in query.relevant]
    return Task(
        id=f"{query.group}-{query.query_id}",
        query=query.text,
        answer="",
        tool_names=keys,
        split=query.group,
        family="stabletoolbench",
        metadata={
            "query_id": query.query_id,
            "group": query.group,
            "relevant_apis": [list(pair) for pair in query.relevant],
            "relevant_functions": relevant,
            "rule": rule,
            "judge": judge_key,
        },
        scorer=SCORER,
    )


def build_stabletoolbench_world(
    tools_dir: str,
    queries_dir: str,
    server_url: str = "http://127.0.0.1:8080/virtual",
    key_env: str | None = "TOOLBENCH_KEY",
    groups: list[str] | None = None,
    rule: Literal["answered", "relevant_apis"] = "answered",
    judge: Any = None,
    strip: str = "truncate",
    request_timeout_s: float = 25.0,
    check_server: bool = True,
) -> World:
    """The StableToolBench world: ToolEnv2404 tools, solvable queries, a virtual API server at ``server_url``."""
    tools_path = existing_dir(tools_dir, "tools.world.tools_dir", "toolenv/tools", f"from {SOURCE}")
    queries_path = existing_dir(
        queries_dir, "tools.world.queries_dir", "solvable_queries/test_instruction", f"from {SOURCE}"
    )
    if rule not in RULES:
        raise ConfigError(f"tools.world.rule: unknown {rule!r}; available: {', '.join(RULES)}")
    if key_env:
        read_secret(key_env, "tools.world.key_env", "ToolBench key")  # fail now, not in every call
    if check_server:
        problem = unreachable(server_url)
        if problem is not None:
            raise ConfigError(
                f"tools.world.server_url={server_url}: no virtual API server there ({problem}); {SERVER_HINT}"
            )
    judge_key = register(judge) if judge is not None else None
    files = ToolFiles(tools_path)
    suite = ToolSuite()
    splits: dict[str, list[Task]] = {}
    for group, path in _groups(queries_path, groups).items():
        queries, skipped = read_queries(path, group, files)
        if skipped:
            log.warning("%s: %d queries skipped (a tool not in %s)", path.name, skipped, tools_path)
        tasks = []
        for query in queries:
            for offered in query.apis:
                if offered.key not in suite.tools:
                    schema = api_schema(offered.api, offered.tool, offered.standard_tool)
                    call = VirtualApi(
                        server_url,
                        offered.category,
                        offered.standard_tool,
                        offered.key.rsplit("/", 1)[1],
                        key_env,
                        strip,
                        request_timeout_s,
                    )
                    suite.tools[offered.key] = Tool(**schema, fn=call, family=offered.category)
            tasks.append(_task(query, [a.key for a in query.apis], rule, judge_key))
        splits[group] = tasks
    if not any(splits.values()):
        raise DataError(f"{queries_path}: no query has all its tools in {tools_path}")
    suite.origin = {
        "_target_": "toolmaster.worlds.stabletoolbench.build_stabletoolbench_world",
        "tools_dir": str(tools_path),
        "queries_dir": str(queries_path),
        "server_url": server_url,
        "key_env": key_env,
        "groups": groups,
        "rule": rule,
        "judge": None,  # the tool host runs calls; judging happens in the trainer's process
        "strip": strip,
        "request_timeout_s": request_timeout_s,
        "check_server": False,  # checked once, here
    }
    return World(name="stabletoolbench", suite=suite, splits=splits)
