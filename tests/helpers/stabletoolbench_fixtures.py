"""StableToolBench-shaped fixtures: a ToolEnv2404 tool folder, solvable-query files and the server's answers.

``write_stabletoolbench(root)`` writes ``root/tools/<Category>/<tool>.json`` (``tool_name``,
``tool_description``, ``api_list`` with ``name``, ``url``, ``description``, ``method``,
``required_parameters`` / ``optional_parameters`` of ``{name, type, description, default}``) and
``root/queries/G1_instruction.json`` and ``G1_tool.json`` (``query``, ``query_id``, ``api_list`` entries with
``category_name`` / ``tool_name`` / ``api_name``, ``relevant APIs``) as StableToolBench lays them out; one query
names a tool that is not in the folder (skipped, as ToolBench's runner skips it). ``RESPONSES`` is what the
loopback virtual API server answers, keyed by (standard tool name, pure API name); ``GOLD`` the calls that
answer each query and ``FACTS`` what a correct final answer must mention (for the loopback judge).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _param(name: str, kind: str, default: Any = "", description: str = "") -> dict[str, Any]:
    return {"name": name, "type": kind, "description": description, "default": default}


def _api(name: str, description: str, required: list, optional: list | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "url": f"https://example-api.p.rapidapi.com/{name.lower().replace(' ', '-')}",
        "description": description,
        "method": "GET",
        "required_parameters": required,
        "optional_parameters": optional or [],
        "code": "import requests\n",
        "test_endpoint": "",
    }


MOVIES = {
    "tool_name": "Movie Facts Hub",
    "tool_description": "Facts about films: search, details and what is trending.",
    "title": "Movie Facts Hub",
    "pricing": "FREEMIUM",
    "score": {"avgServiceLevel": 100, "avgLatency": 300},
    "home_url": "https://rapidapi.com/example/api/movie-facts-hub",
    "host": "movie-facts-hub.p.rapidapi.com",
    "api_list": [
        _api(
            "Search Movie",
            "Search films by title.",
            [_param("title", "STRING", "Inception")],
            [_param("year", "NUMBER", 2010)],
        ),
        _api("Get Movie Details", "Details of a film by its id.", [_param("id", "STRING", "tt1375666")]),
        _api("Trending Now", "What is trending this week.", [], [_param("region", "STRING", "US")]),
    ],
}
SCORES = {
    "tool_name": "Score Keeper",
    "tool_description": "Live scores and team facts.",
    "title": "Score Keeper",
    "api_list": [
        _api("Live Scores", "Scores of a league's games now.", [_param("league", "STRING", "NBA")]),
        _api("Team Info", "Facts about a team.", [_param("team", "STRING", "Lakers")]),
    ],
}
TOOLS = {"Data": {"movie_facts_hub": MOVIES}, "Sports": {"score_keeper": SCORES}}


def _entry(category: str, tool: dict[str, Any], api: dict[str, Any]) -> dict[str, Any]:
    return {
        "category_name": category,
        "tool_name": tool["tool_name"],
        "api_name": api["name"],
        "api_description": api["description"],
        "required_parameters": api["required_parameters"],
        "optional_parameters": api["optional_parameters"],
        "method": api["method"],
    }


def _api_list(category: str, tool: dict[str, Any]) -> list[dict[str, Any]]:
    return [_entry(category, tool, api) for api in tool["api_list"]]


QUERIES = {
    "G1_instruction": [
        {
            "api_list": _api_list("Data", MOVIES),
            "query": "I loved the film Moon Harbor. Who directed it, and how long does it run?",
            "relevant APIs": [["Movie Facts Hub", "Search Movie"], ["Movie Facts Hub", "Get Movie Details"]],
            "query_id": 588,
        },
        {
            "api_list": _api_list("Data", MOVIES),
            "query": "What films are trending this week in the UK?",
            "relevant APIs": [["Movie Facts Hub", "Trending Now"]],
            "query_id": 608,
        },
        {
            "api_list": [
                {
                    "category_name": "Data",
                    "tool_name": "Ghost Tool",
                    "api_name": "Haunt",
                    "api_description": "",
                }
            ],
            "query": "This query's tool is not in ToolEnv2404.",
            "relevant APIs": [["Ghost Tool", "Haunt"]],
            "query_id": 999,
        },
    ],
    "G1_tool": [
        {
            "api_list": _api_list("Sports", SCORES),
            "query": "How are the Harbor Hawks doing, and what are tonight's NBA scores?",
            "relevant APIs": [["Score Keeper", "Team Info"], ["Score Keeper", "Live Scores"]],
            "query_id": 1073,
        }
    ],
}


def _search(args: dict[str, Any]) -> Any:
    if "moon harbor" in str(args.get("title", "")).lower():
        return {"results": [{"id": "tt4242", "title": "Moon Harbor", "year": 2019}]}
    return {"results": []}


def _details(args: dict[str, Any]) -> Any:
    if args.get("is_id") == "tt4242":
        return {"title": "Moon Harbor", "director": "Lena Park", "runtime_minutes": 112}
    return {"message": "movie not found"}


RESPONSES = {
    ("movie_facts_hub", "search_movie"): _search,
    ("movie_facts_hub", "get_movie_details"): _details,
    ("movie_facts_hub", "trending_now"): lambda a: {
        "region": a.get("region", "US"),
        "titles": ["Salt Roads"],
    },
    ("score_keeper", "live_scores"): lambda a: {
        "league": a.get("league"),
        "games": [{"home": "Hawks", "score": "101-99"}],
    },
    ("score_keeper", "team_info"): lambda a: {"team": a.get("team"), "record": "40-12"},
}
GOLD = {
    "G1_instruction-588": [
        ("search_movie_for_movie_facts_hub", {"title": "Moon Harbor"}),
        ("get_movie_details_for_movie_facts_hub", {"is_id": "tt4242"}),
    ],
    "G1_instruction-608": [("trending_now_for_movie_facts_hub", {"region": "UK"})],
    "G1_tool-1073": [
        ("team_info_for_score_keeper", {"team": "Harbor Hawks"}),
        ("live_scores_for_score_keeper", {"league": "NBA"}),
    ],
}
ANSWERS = {
    "G1_instruction-588": "Moon Harbor was directed by Lena Park and runs 112 minutes.",
    "G1_instruction-608": "Salt Roads is trending in the UK this week.",
    "G1_tool-1073": "The Harbor Hawks are 40-12; tonight the Hawks lead 101-99.",
}
FACTS = {"Moon Harbor": "Lena Park", "trending this week": "Salt Roads", "Harbor Hawks": "40-12"}


def write_stabletoolbench(root: Path) -> tuple[Path, Path]:
    """Write the tool folder and the query folder under ``root``; returns (tools_dir, queries_dir)."""
    tools_dir, queries_dir = root / "tools", root / "queries"
    for category, tools in TOOLS.items():
        (tools_dir / category).mkdir(parents=True, exist_ok=True)
        for stem, tool in tools.items():
            (tools_dir / category / f"{stem}.json").write_text(json.dumps(tool, indent=1), encoding="utf-8")
    queries_dir.mkdir(parents=True, exist_ok=True)
    for group, queries in QUERIES.items():
        (queries_dir / f"{group}.json").write_text(json.dumps(queries, indent=1), encoding="utf-8")
    return tools_dir, queries_dir
