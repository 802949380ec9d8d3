"""RestBench-shaped fixtures: a TMDB-like OpenAPI spec, ``tmdb.json`` queries, the API's answers, a recording.

``write_restbench(root)`` writes ``root/tmdb_oas.json`` (OpenAPI 3: ``servers``, ``paths`` of GET operations
with path and query parameters, a shared ``$ref`` parameter and a path-level parameter, as TMDB's spec has) and
``root/tmdb.json`` (``[{"query", "solution": ["GET /search/person", ...]}]``, one solution with RestBench's stray
spaces). ``TABLE`` is what the loopback REST server answers per canonical request; ``GOLD`` the calls that
answer each query; ``write_recording(path)`` writes the recording of exactly those responses (the format
``toolmaster.worlds.restbench.recording`` reads).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PAGE = {"$ref": "#/components/parameters/page"}


def _get(summary: str, *parameters: dict[str, Any]) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "parameters": list(parameters),
            "responses": {"200": {"description": "ok"}},
        }
    }


def _query(name: str, description: str, required: bool = False, kind: str = "string") -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": {"type": kind},
    }


def _path(name: str, kind: str = "integer") -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": kind}}


SPEC = {
    "openapi": "3.0.0",
    "info": {"title": "TMDB", "description": "The Movie Database API (fixture)", "version": "3"},
    "servers": [{"url": "https://api.themoviedb.org/3"}],
    "components": {
        "parameters": {"page": _query("page", "Page of results (1-1000).", kind="integer")},
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    },
    "paths": {
        "/search/person": _get("Search for people.", _query("query", "Text to search for.", True), PAGE),
        "/person/{person_id}/movie_credits": {
            "parameters": [_path("person_id")],
            **_get("The movie credits of a person."),
        },
        "/search/movie": _get("Search for movies.", _query("query", "Text to search for.", True), PAGE),
        "/movie/{movie_id}/credits": _get("The cast and crew of a movie.", _path("movie_id")),
        "/movie/top_rated": _get("The top rated movies.", PAGE),
        "/trending/{media_type}/{time_window}": _get(
            "Trending items.", _path("media_type", "string"), _path("time_window", "string")
        ),
    },
}
QUERIES = [
    {
        "query": "give me the number of movies directed by Sofia Coppola",
        "solution": ["GET /search/person", "GET /person/{person_id}/movie_credits"],
    },
    {
        "query": "Who was the lead actor in the movie The Dark Knight?",
        "solution": ["GET /search/movie", "GET /movie/{movie_id}/credits"],
    },
    {
        "query": "Who directed the top-1 rated movie?",
        "solution": [" GET /movie/top_rated", "GET /movie/{movie_id}/credits "],
    },
]
TABLE: dict[str, tuple[int, Any]] = {
    "GET /search/person?query=Sofia+Coppola": (
        200,
        {"page": 1, "results": [{"id": 1769, "name": "Sofia Coppola", "known_for_department": "Directing"}]},
    ),
    "GET /person/1769/movie_credits": (
        200,
        {
            "id": 1769,
            "cast": [],
            "crew": [
                {"id": 1443, "title": "The Virgin Suicides", "job": "Director"},
                {"id": 153, "title": "Lost in Translation", "job": "Director"},
                {"id": 1887, "title": "Marie Antoinette", "job": "Director"},
            ],
        },
    ),
    "GET /search/movie?query=The+Dark+Knight": (
        200,
        {"page": 1, "results": [{"id": 155, "title": "The Dark Knight"}]},
    ),
    "GET /movie/155/credits": (
        200,
        {
            "id": 155,
            "cast": [{"name": "Christian Bale", "order": 0}],
            "crew": [{"name": "Christopher Nolan", "job": "Director"}],
        },
    ),
    "GET /movie/top_rated?page=1": (
        200,
        {"page": 1, "results": [{"id": 278, "title": "The Shawshank Redemption"}]},
    ),
    "GET /movie/278/credits": (
        200,
        {"id": 278, "cast": [], "crew": [{"name": "Frank Darabont", "job": "Director"}]},
    ),
}
GOLD = {
    "tmdb-1": [
        ("get_search_person", {"query": "Sofia Coppola"}),
        ("get_person_person_id_movie_credits", {"person_id": 1769}),
    ],
    "tmdb-2": [
        ("get_search_movie", {"query": "The Dark Knight"}),
        ("get_movie_movie_id_credits", {"movie_id": 155}),
    ],
    "tmdb-3": [("get_movie_top_rated", {"page": 1}), ("get_movie_movie_id_credits", {"movie_id": 278})],
}
ANSWERS = {"tmdb-1": "3", "tmdb-2": "Christian Bale", "tmdb-3": "Frank Darabont"}
FACTS = {"Sofia Coppola": "3", "Dark Knight": "Christian Bale", "top-1 rated": "Frank Darabont"}


def write_restbench(root: Path) -> tuple[Path, Path]:
    """Write the spec and the query file under ``root``; returns (queries, spec)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "tmdb_oas.json").write_text(json.dumps(SPEC, indent=1), encoding="utf-8")
    (root / "tmdb.json").write_text(json.dumps(QUERIES, indent=1), encoding="utf-8")
    return root / "tmdb.json", root / "tmdb_oas.json"


def write_recording(path: Path) -> Path:
    lines = [json.dumps({"request": r, "status": s, "body": b}) for r, (s, b) in TABLE.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
