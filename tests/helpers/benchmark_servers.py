"""Loopback HTTP servers for the benchmark worlds' tests: real sockets and real HTTP, started by the tests.

- ``VirtualApiServer`` speaks StableToolBench's ``POST /virtual``: it checks every field of the request
  (``category``, ``tool_name``, ``api_name``, ``tool_input`` as a JSON string, ``strip``, ``toolbench_key``) and
  the key, and answers ``{"error", "response"}`` from ``responses[(tool_name, api_name)](tool_input)``.
- ``RestServer`` answers ``GET <path>?<query>`` from a table keyed by the canonical request, after checking the
  ``Authorization: Bearer <token>`` header (401 otherwise, 404 for an unknown request), as TMDB does.
- ``JudgeServer`` is an OpenAI-compatible ``POST /v1/chat/completions`` grader: ``solved`` when the episode's
  final answer contains the fact ``facts`` expects for its request, else ``unsolved``.

``faults`` is a queue consumed one per request: ``"500"`` answers HTTP 500, ``"slow"`` sleeps ``slow_s`` first,
``"garbage"`` answers text that is not JSON, ``"error"`` (virtual API) answers a non-empty ``error``, ``"echo"``
(virtual API) answers with the whole request, key included, to test that the client redacts it.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

VIRTUAL_FIELDS = ("category", "tool_name", "api_name", "tool_input", "strip", "toolbench_key")


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 (a free port) that dispatches to ``handle``."""

    def __init__(self, slow_s: float = 3.0) -> None:
        self.slow_s = slow_s
        self.faults: deque[str] = deque()
        self.requests: list[dict[str, Any]] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> LoopbackServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        raise NotImplementedError

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                server.requests.append(
                    {"method": method, "path": self.path, "headers": headers, "body": body}
                )
                fault = server.faults.popleft() if server.faults else "ok"
                if fault == "slow":
                    time.sleep(server.slow_s)
                if fault == "500":
                    status, answer = 500, {"detail": "injected internal error"}
                elif fault == "garbage":
                    status, answer = 200, "<html>not json</html>"
                else:
                    status, answer = server.handle(method, self.path, headers, body)
                    if fault == "error":
                        answer = {"error": "Message error...", "response": ""}
                    elif fault == "echo":
                        answer = {"error": "", "response": json.loads(body or b"{}")}
                data = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
                    pass

            def do_GET(self) -> None:  # noqa: N802 - http.server naming
                self._serve("GET")

            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                self._serve("POST")

        return Handler


class VirtualApiServer(LoopbackServer):
    """StableToolBench's virtual API server protocol, answered from ``responses``."""

    def __init__(
        self, responses: dict[tuple[str, str], Callable[[dict[str, Any]], Any]], key: str = "", **kw: Any
    ) -> None:
        super().__init__(**kw)
        self.responses = responses
        self.key = key

    @property
    def virtual_url(self) -> str:
        return f"{self.url}/virtual"

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        if method != "POST" or path != "/virtual":
            return 404, {"detail": "Not Found"}
        info = json.loads(body or b"{}")
        missing = [f for f in VIRTUAL_FIELDS if f not in info]
        if missing or not isinstance(info["tool_input"], str):  # FastAPI's validation of the Info model
            return 422, {"detail": [{"loc": ["body", f], "msg": "field required"} for f in missing]}
        if self.key and info["toolbench_key"] != self.key:
            return 200, {"error": "Unauthorized error...", "response": ""}
        answer = self.responses.get((info["tool_name"], info["api_name"]))
        if answer is None:
            return 200, {"error": "", "response": "{'message': \"API doesn't exists\"}"}
        try:
            tool_input = json.loads(info["tool_input"]) if info["tool_input"] else {}
        except json.JSONDecodeError:
            return 200, {"error": "Tool input parse error...\n", "response": ""}
        return 200, {"error": "", "response": answer(tool_input)}


def canonical(path: str) -> str:
    """``/search/person?query=Sofia%20Coppola`` -> ``GET /search/person?query=Sofia+Coppola`` (query sorted)."""
    parts = urllib.parse.urlsplit(path)
    query = urllib.parse.urlencode(sorted(urllib.parse.parse_qsl(parts.query, keep_blank_values=True)))
    return f"GET {parts.path}" + (f"?{query}" if query else "")


class RestServer(LoopbackServer):
    """A TMDB-like REST API answering the canonical requests of ``table`` (status, body)."""

    def __init__(self, table: dict[str, tuple[int, Any]], token: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.table = table
        self.token = token

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        if headers.get("authorization") != f"Bearer {self.token}":
            return 401, {
                "status_code": 7,
                "status_message": "Invalid API key: You must be granted a valid key.",
            }
        request = canonical(path)
        if request not in self.table:
            return 404, {
                "status_code": 34,
                "status_message": "The resource you requested could not be found.",
            }
        return self.table[request]


class JudgeServer(LoopbackServer):
    """Grades like a judge model would: solved when the final answer holds the fact its request needs."""

    def __init__(self, facts: dict[str, str], key: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.facts = facts  # a phrase of the request -> a phrase the final answer must contain
        self.key = key

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def verdict(self, text: str) -> str:
        request = re.search(r"^Request: (.*)$", text, re.MULTILINE)
        answer = re.search(r"^Final answer: (.*)$", text, re.MULTILINE)
        for phrase, fact in self.facts.items():
            if request and phrase in request.group(1):
                return "solved" if answer and fact.lower() in answer.group(1).lower() else "unsolved"
        return "unsure"

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        if not path.endswith("/chat/completions"):
            return 404, {"error": {"message": "not found"}}
        if headers.get("authorization") != f"Bearer {self.key}":
            return 401, {"error": {"message": "bad key"}}
        payload = json.loads(body)
        user = next(m["content"] for m in payload["messages"] if m["role"] == "user")
        content = json.dumps({"verdict": self.verdict(user), "reason": "loopback grader"})
        return 200, {
            "id": f"judge-{len(self.requests)}",
            "object": "chat.completion",
            "model": payload.get("model"),
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
            ],
        }
