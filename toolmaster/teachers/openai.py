"""A teacher behind any OpenAI-compatible chat-completions endpoint, driven by the shared rollout loop.

``OpenAIEngine`` is a ``GenerationEngine`` that ignores token ids and sends the conversation as chat
messages, so the episode loop, protocol, tool execution and trajectories are exactly those of local
rollouts. Observations go out as ``user`` turns prefixed ``Observation:`` (the chat API's ``tool`` role
requires tool-call ids that the text protocol does not have). The protocol's closing tags are sent as
``stop`` sequences; servers strip them, so the engine puts the closing tag back.

Robustness: a thread pool bounded by ``concurrency`` sends one request per live episode; 429, 5xx,
connection errors and timeouts are retried with exponential backoff and jitter (``Retry-After`` honoured);
an unreachable endpoint or exhausted retries raise ``TeacherError`` with one line. The API key is read
from the environment variable named by ``api_key_env`` at call time; it is never stored in configs,
trajectories or logs.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from toolmaster.errors import ConfigError, ToolMasterError
from toolmaster.protocol.actions import ProtocolTags
from toolmaster.samplers.base import Generation, SamplingParams
from toolmaster.samplers.loop import RolloutConfig, rollout
from toolmaster.teachers.base import PlayRequest, Progress
from toolmaster.trajectory import Trajectory

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class TeacherError(ToolMasterError):
    """The teacher endpoint failed in a way retries did not fix."""


def chat_messages(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    out = []
    for message in messages:
        if message["role"] == "tool":
            out.append({"role": "user", "content": f"Observation: {message['content']}"})
        else:
            out.append({"role": message["role"], "content": message["content"]})
    return out


def restore_closing_tag(text: str, tags: ProtocolTags) -> tuple[str, bool]:
    """Re-append the closing tag a server stripped with the stop sequence; True when one was added."""
    openers = [
        (m.start(), m.group(1)) for m in re.finditer(rf"<({tags.trial}|{tags.call}|{tags.answer})>", text)
    ]
    if not openers:
        return text, False
    _, tag = openers[-1]
    if text.rstrip().endswith(f"</{tag}>") or f"</{tag}>" in text[openers[-1][0] :]:
        return text, False
    return text + f"</{tag}>", True


class OpenAIEngine:
    def __init__(
        self,
        tokenizer: Any,
        tags: ProtocolTags,
        base_url: str,
        model: str,
        api_key_env: str | None = "OPENAI_API_KEY",
        concurrency: int = 4,
        max_retries: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 20.0,
        timeout_s: float = 60.0,
    ) -> None:
        self.tokenizer = tokenizer
        self.tags = tags
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.timeout_s = timeout_s
        self.retries = 0  # requests retried, for the synthesis summary
        self._key = self._read_key()

    def _read_key(self) -> str | None:
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ConfigError(
                f"teacher.api_key_env: environment variable {self.api_key_env} is not set "
                "(set it, or teacher.api_key_env=null for a server without authentication)"
            )
        return key

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        last = ""
        for attempt in range(self.max_retries + 1):
            wait = min(self.max_backoff_s, self.backoff_s * 2**attempt) * (0.5 + random.random() / 2)
            try:
                request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code} {exc.reason}"
                if exc.code not in RETRY_STATUS:
                    detail = exc.read()[:200].decode(errors="replace").replace("\n", " ")
                    raise TeacherError(f"teacher endpoint {self.url} answered {last}: {detail}") from None
                retry_after = exc.headers.get("Retry-After") if exc.headers else None
                if retry_after and retry_after.replace(".", "", 1).isdigit():
                    wait = min(self.max_backoff_s, float(retry_after))
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                last = f"{type(reason).__name__}: {reason}"
            except json.JSONDecodeError:
                last = "response was not JSON"
            if attempt < self.max_retries:
                self.retries += 1
                time.sleep(wait)
        raise TeacherError(
            f"teacher endpoint {self.url} failed after {self.max_retries + 1} attempts ({last})"
        )

    def _one(self, messages: list[dict[str, str]], params: SamplingParams, cap: int) -> Generation:
        payload = {
            "model": self.model,
            "messages": chat_messages(messages),
            "max_tokens": cap,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": params.seed,
            "stop": list(self.tags.closing_tags()),
        }
        data = self._post(payload)
        try:
            choice = data["choices"][0]
            text = choice["message"]["content"] or ""
            finish = choice.get("finish_reason") or "stop"
        except (KeyError, IndexError, TypeError):
            raise TeacherError(
                f"teacher endpoint {self.url} returned no choices: {str(data)[:200]}"
            ) from None
        if finish == "length":
            reason = "length"
        else:
            text, restored = restore_closing_tag(text, self.tags)
            reason = "stop" if restored else "eos"
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if reason == "eos":
            ids = ids + [self.tokenizer.eos_token_id]
        return Generation(ids, [0.0] * len(ids), text, reason)

    def generate(
        self,
        prompts: list[list[int]],
        params: SamplingParams,
        max_new_tokens: list[int],
        messages: list[list[dict[str, str]]] | None = None,
        keys: Any = None,
    ) -> list[Generation]:
        if messages is None:
            raise ValueError("OpenAIEngine needs the conversations as messages")
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            return list(pool.map(lambda mc: self._one(mc[0], params, mc[1]), zip(messages, max_new_tokens)))


class OpenAITeacher:
    """Plays episodes with a remote model through the shared rollout loop."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = "OPENAI_API_KEY",
        concurrency: int = 4,
        max_retries: int = 5,
        backoff_s: float = 0.5,
        timeout_s: float = 60.0,
        temperature: float = 0.7,
        max_new_tokens: int = 256,
        max_turns: int = 10,
        seed: int = 0,
    ) -> None:
        self.options = dict(
            base_url=base_url,
            model=model,
            api_key_env=api_key_env,
            concurrency=concurrency,
            max_retries=max_retries,
            backoff_s=backoff_s,
            timeout_s=timeout_s,
        )
        self.temperature = temperature
        self.max_new_tokens = max_new_tokens
        self.max_turns = max_turns
        self.seed = seed
        self.engine: OpenAIEngine | None = None

    @property
    def name(self) -> str:
        return f"openai:{self.options['model']}"

    def play(self, request: PlayRequest, progress: Progress | None = None) -> list[Trajectory]:
        """The request's episodes played by the remote model through the shared rollout loop."""
        tokenizer, fmt = request.tokenizer, request.fmt
        if tokenizer is None:
            raise ValueError("OpenAITeacher.play needs the student's tokenizer")
        if self.engine is None:
            self.engine = OpenAIEngine(tokenizer, fmt.tags, **self.options)
        config = RolloutConfig(
            max_turns=self.max_turns,
            max_new_tokens=self.max_new_tokens,
            max_total_tokens=1_000_000,
            trial_budget=request.trial_budget,
            tool_timeout_s=request.timeout_s,
            max_observation_chars=request.max_observation_chars,
            temperature=self.temperature,
            n_samples=request.samples_per_task,
            seed=self.seed,
            batch_size=max(1, int(self.options["concurrency"])),
        )
        trajectories = rollout(
            self.engine, tokenizer, fmt, request.world.suite, request.tasks, config, progress
        )
        for t in trajectories:
            t.source = self.name
            t.logprobs = []
        return trajectories
