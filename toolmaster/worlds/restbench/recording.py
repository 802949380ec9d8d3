"""Recorded REST responses: a JSONL file that a live session writes and an offline session replays.

One line per response: ``{"request": "GET /search/person?query=Sofia+Coppola", "status": 200, "body": ...}``,
``body`` the parsed JSON (or the text when it is not JSON). ``request`` is the canonical request: the method,
the path with its parameters filled in (URL-quoted), and the query parameters sorted by name (booleans as
``true`` / ``false``, lists and objects as compact JSON). No header is recorded, so the token never is; a body is
redacted of it before it is written. The same request recorded twice keeps its last response. Lines are
appended under an exclusive lock, so concurrent episodes (separate processes) can record into one file.
"""

from __future__ import annotations

import fcntl
import json
import os
import urllib.parse
from pathlib import Path
from typing import Any

_CACHE: dict[str, tuple[float, dict[str, tuple[int, Any]]]] = {}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return str(value)


def fill_path(template: str, arguments: dict[str, Any]) -> str:
    """``/movie/{movie_id}/credits`` with ``movie_id=155`` -> ``/movie/155/credits``."""
    out = template
    for name, value in arguments.items():
        out = out.replace("{" + name + "}", urllib.parse.quote(_text(value), safe=""))
    return out


def query_string(query: dict[str, Any]) -> str:
    return urllib.parse.urlencode(sorted((name, _text(value)) for name, value in query.items()))


def canonical_request(method: str, path: str, query: dict[str, Any]) -> str:
    encoded = query_string(query)
    return f"{method.upper()} {path}" + (f"?{encoded}" if encoded else "")


def append(recording: Path, request: str, status: int, body: Any) -> None:
    line = json.dumps({"request": request, "status": status, "body": body}, ensure_ascii=False) + "\n"
    recording.parent.mkdir(parents=True, exist_ok=True)
    with open(recording, "a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            handle.write(line)
            handle.flush()
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def load(recording: Path) -> dict[str, tuple[int, Any]]:
    """Canonical request -> (status, body); cached until the file changes. Unreadable lines raise ValueError."""
    key = str(recording)
    mtime = os.stat(recording).st_mtime
    cached = _CACHE.get(key)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    responses: dict[str, tuple[int, Any]] = {}
    with open(recording, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                responses[str(entry["request"])] = (int(entry["status"]), entry.get("body"))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                raise ValueError(
                    f"{recording}:{number}: not a recorded response {{request, status, body}}"
                ) from None
    _CACHE[key] = (mtime, responses)
    return responses
