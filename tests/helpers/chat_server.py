"""A small OpenAI-compatible chat-completions server for tests, serving a real HF model on loopback.

It renders the request's messages with the model's own chat template, generates with the project's
HFEngine (the protocol stop strings come from the request's ``stop``, stripped from the output as OpenAI
servers do) and answers in the chat-completions JSON shape. ``faults`` is a queue of injected behaviours
consumed one per request: ``"429"`` / ``"500"`` / ``"400"`` answer with that status, ``"slow"`` sleeps
``slow_s`` and then answers 504 without generating (the client has timed out by then, and a generation
would only hold the model lock against its retry), ``"ok"`` (or an empty queue) answers normally. Used only by tests;
``vllm serve`` is the production server.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from toolmaster.samplers.base import SamplingParams
from toolmaster.samplers.hf import HFEngine


class ChatServer:
    def __init__(self, model: Any, tokenizer: Any, api_key: str | None = None, slow_s: float = 3.0) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.api_key = api_key
        self.slow_s = slow_s
        self.faults: deque[str] = deque()
        self.requests = 0
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> ChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def complete(self, payload: dict[str, Any]) -> dict[str, Any]:
        messages = [{"role": m["role"], "content": m["content"]} for m in payload["messages"]]
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
        stops = tuple(payload.get("stop") or ())
        params = SamplingParams(
            float(payload.get("temperature", 1.0)),
            float(payload.get("top_p", 1.0)),
            int(payload.get("max_tokens", 64)),
            int(payload.get("seed") or 0),
        )
        with self.lock:  # one generation at a time: the model is shared
            gen = HFEngine(self.model, self.tokenizer, stop_strings=stops).generate(
                [ids], params, [params.max_new_tokens]
            )[0]
        text, finish = gen.text, "length" if gen.finish_reason == "length" else "stop"
        for stop in stops:
            if gen.finish_reason == "stop" and stop in text:
                text = text[: text.index(stop)]
        return {
            "id": f"chatcmpl-{self.requests}",
            "object": "chat.completion",
            "model": payload.get("model"),
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
            ],
            "usage": {"prompt_tokens": len(ids), "completion_tokens": len(gen.token_ids)},
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                length = int(self.headers.get("Content-Length", 0))
                payload = json.loads(self.rfile.read(length) or b"{}")
                server.requests += 1
                if not self.path.endswith("/chat/completions"):
                    return self._send(404, {"error": {"message": "not found"}})
                if server.api_key and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    return self._send(401, {"error": {"message": "bad key"}})
                fault = server.faults.popleft() if server.faults else "ok"
                if fault in ("429", "500", "400", "503"):
                    headers = {"Retry-After": "0.1"} if fault == "429" else None
                    return self._send(int(fault), {"error": {"message": f"injected {fault}"}}, headers)
                if fault == "slow":
                    time.sleep(server.slow_s)
                    return self._send(504, {"error": {"message": "injected slow answer"}})
                self._send(200, server.complete(payload))

        return Handler
