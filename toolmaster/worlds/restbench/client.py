"""A REST endpoint as a tool: live (optionally recording what it gets) or replayed from a recording.

A call fills the endpoint's path template with its path arguments, sends the rest as query parameters and
returns the JSON body. ``mode``:

- ``live``: ``GET <base_url><path>?<query>`` with ``Authorization: Bearer $<token_env>`` (TMDB's v4 read access
  token, as RestGPT sends it), the token read in the call's process and redacted from what comes back;
- ``record``: live, and every response is appended to ``recording`` (``recording.py``: no header, so no token);
- ``replay``: no network and no token: the response recorded for the canonical request is returned, and a
  request that was never recorded is an error observation saying so.

An HTTP status of 400 or more (live or recorded) raises with the status and the start of the body, a refused
connection or a timeout raises ``RemoteError``: all become error observations.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from toolmaster.worlds.remote import http_request, read_secret, redact
from toolmaster.worlds.restbench import recording as recordings

MODES = ("live", "record", "replay")


class RestError(RuntimeError):
    """The REST API answered with an error status, or a replay has no response for the request."""


@dataclass(frozen=True)
class RestEndpoint:
    """One endpoint of the spec (a picklable callable: no token inside)."""

    method: str
    path: str
    path_params: tuple[str, ...]
    query_params: tuple[str, ...]
    base_url: str
    token_env: str | None
    mode: Literal["live", "record", "replay"] = "live"
    recording: str | None = None
    request_timeout_s: float = 20.0

    def request(self, arguments: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
        """(canonical request, filled path, query parameters) of a call."""
        path = recordings.fill_path(self.path, {k: v for k, v in arguments.items() if k in self.path_params})
        query = {k: v for k, v in arguments.items() if k in self.query_params}
        return recordings.canonical_request(self.method, path, query), path, query

    def _replay(self, canonical: str) -> tuple[int, Any]:
        responses = recordings.load(Path(str(self.recording)))
        if canonical not in responses:
            raise RestError(
                f"no recorded response for {canonical} (replay mode answers recorded requests only)"
            )
        return responses[canonical]

    def _live(self, canonical: str, path: str, query: dict[str, Any]) -> tuple[int, Any]:
        token = read_secret(self.token_env, "tools.world.token_env", "API token") if self.token_env else ""
        url = self.base_url.rstrip("/") + path
        encoded = recordings.query_string(query)
        headers = {"accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        status, text = http_request(
            self.method,
            url + (f"?{encoded}" if encoded else ""),
            headers=headers,
            timeout_s=self.request_timeout_s,
        )
        text = redact(text, [token])
        try:
            body: Any = json.loads(text)
        except json.JSONDecodeError:
            body = text
        if self.mode == "record" and self.recording:
            recordings.append(Path(self.recording), canonical, status, body)
        return status, body

    def __call__(self, **arguments: Any) -> Any:
        canonical, path, query = self.request(arguments)
        status, body = (
            self._replay(canonical) if self.mode == "replay" else self._live(canonical, path, query)
        )
        if status >= 400:
            shown = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
            raise RestError(f"HTTP {status} for {canonical}: {' '.join(shown.split())[:300]}")
        return body
