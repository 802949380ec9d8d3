"""A pluggable LLM judge for benchmarks whose success needs one (StableToolBench's pass rate, RestBench's success).

A judge is any callable ``judge(query, answer, steps) -> float`` returning a score in [0, 1] (1 solved, 0.5
unsure, 0 unsolved); a world's scorer counts an episode as passed when the score is at least 0.5. ``steps``
are the episode's execution calls (name, arguments, observation). ``OpenAIJudge`` asks any OpenAI-compatible
chat-completions endpoint, through the same client as ``teacher=openai`` (retries with backoff on 429 / 5xx /
timeouts, ``Retry-After`` honoured, the key read from the environment variable ``api_key_env`` names and never
stored): it asks ``votes`` times and averages.

Departures from StableToolEval (ToolBench's evaluator, which StableToolBench's SoPR uses): the prompt is this
project's own (one request asking for a JSON verdict), not ToolEval's function-calling templates; the task's
solvability is not judged again (StableToolBench's query files are already filtered to solvable queries); ToolEval
breaks an "unsure" or a tied vote with a random coin, here the mean vote score (solved 1, unsure 0.5, unsolved 0)
decides, so an evaluation is reproducible. With ``votes=3`` and an evaluator model such as gpt-4-turbo this is
the closest this framework comes to SoPR; without a judge the worlds report only what rules can decide.

Worlds hand judges to their scorers through ``register``: the scorer is a module-level function named in each task
(``Task.scorer``), and a task keeps only the judge's key, so nothing but plain data lives in a task.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

from toolmaster.errors import ConfigError, ToolMasterError
from toolmaster.protocol.phases import Phase

Judge = Callable[[str, str, Sequence[dict[str, Any]]], float]
VERDICT_SCORES = {"solved": 1.0, "unsure": 0.5, "unsolved": 0.0}
_VERDICT = re.compile(r"\b(unsolved|unsure|solved)\b", re.IGNORECASE)
_JUDGES: dict[str, Judge] = {}


class JudgeError(ToolMasterError):
    """The judge's endpoint failed in a way its retries did not fix (the run stops: no silent zero scores)."""


SYSTEM = (
    "You grade whether an assistant solved a user's request with tools. Read the request, the tool calls the "
    "assistant made with what they returned, and its final answer. The request is solved when the final answer "
    "gives the user what they asked for, is supported by the tool results, and invents nothing. It is unsolved "
    "when the answer is missing, refuses, gives up, contradicts the tool results or leaves a part of the request "
    'out. Say unsure only when you cannot tell. Reply with JSON only: {"verdict": "solved" | "unsolved" | '
    '"unsure", "reason": "one sentence"}.'
)


def register(judge: Judge) -> str:
    """File ``judge`` under a key of its own (returned) for the scorers of this process."""
    key = f"{type(judge).__name__}:{id(judge)}"
    _JUDGES[key] = judge
    return key


def lookup(key: str) -> Judge:
    if key not in _JUDGES:
        raise KeyError(f"no judge {key!r} in this process: build the world here first")
    return _JUDGES[key]


def parse_verdict(text: str) -> float:
    """The score of a judge's reply: its JSON ``verdict`` or, failing that, the first verdict word; 0.5 if none."""
    match = re.search(r"\{.*\}", text, re.DOTALL)
    if match:
        try:
            verdict = str(json.loads(match.group(0)).get("verdict", "")).strip().lower()
            if verdict in VERDICT_SCORES:
                return VERDICT_SCORES[verdict]
        except (json.JSONDecodeError, AttributeError):
            pass
    word = _VERDICT.search(text)
    return VERDICT_SCORES[word.group(1).lower()] if word else VERDICT_SCORES["unsure"]


def render_episode(query: str, answer: str, steps: Sequence[dict[str, Any]], max_chars: int = 600) -> str:
    """The user message a judge reads: the request, each call with its (clipped) result, the final answer."""
    lines = [f"Request: {query}", "", "Tool calls:"]
    if not steps:
        lines.append("(none)")
    for i, step in enumerate(steps, start=1):
        arguments = json.dumps(step.get("arguments"), ensure_ascii=False, default=str)
        observation = " ".join(str(step.get("observation", "")).split())
        if len(observation) > max_chars:
            observation = observation[:max_chars] + " ..."
        lines.append(f"{i}. {step.get('name')}({arguments}) -> {observation}")
    lines += ["", f"Final answer: {answer}"]
    return "\n".join(lines)


class OpenAIJudge:
    """Grades an episode with a model behind an OpenAI-compatible endpoint (``teacher=openai``'s client)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = "OPENAI_API_KEY",
        votes: int = 1,
        temperature: float = 0.0,
        max_tokens: int = 128,
        max_retries: int = 5,
        timeout_s: float = 60.0,
        max_observation_chars: int = 600,
    ) -> None:
        if votes < 1:
            raise ConfigError(f"tools.world.judge.votes must be >= 1, got {votes}")
        if api_key_env and not os.environ.get(api_key_env):
            raise ConfigError(
                f"tools.world.judge.api_key_env: environment variable {api_key_env} is not set (set it, or "
                "tools.world.judge.api_key_env=null for an endpoint without authentication)"
            )
        self.options = dict(
            base_url=base_url,
            model=model,
            api_key_env=api_key_env,
            max_retries=max_retries,
            timeout_s=timeout_s,
        )
        self.votes = votes
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.max_observation_chars = max_observation_chars
        self._client: Any = None

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        if self._client is None:  # imported here: a tool host that rebuilds the world never loads the client
            from toolmaster.protocol.actions import ProtocolTags
            from toolmaster.teachers.openai import OpenAIEngine

            self._client = OpenAIEngine(None, ProtocolTags(), **self.options)
        try:
            return self._client._post(
                payload
            )  # the teacher's request path: retries, backoff, one-line errors
        except ToolMasterError as exc:
            raise JudgeError(f"judge: {exc}") from None

    def __call__(self, query: str, answer: str, steps: Sequence[dict[str, Any]]) -> float:
        messages = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": render_episode(query, answer, steps, self.max_observation_chars)},
        ]
        scores = []
        for vote in range(self.votes):
            payload = {
                "model": self.options["model"],
                "messages": messages,
                "max_tokens": self.max_tokens,
                "temperature": self.temperature,
                "seed": vote,
            }
            data = self._post(payload)
            try:
                text = data["choices"][0]["message"]["content"] or ""
            except (KeyError, IndexError, TypeError):
                text = ""
            scores.append(parse_verdict(text))
        return sum(scores) / len(scores)


def execution_steps(trajectory: Any) -> list[dict[str, Any]]:
    """The episode's execution calls as a judge reads them (trial calls acted on the sandbox only)."""
    return [
        {"name": c["name"], "arguments": c["arguments"], "observation": c["observation"]}
        for c in trajectory.calls
        if c["phase"] == Phase.EXECUTION
    ]


def judged(task: Any, trajectory: Any) -> bool | None:
    """The verdict of the task's judge (None when the task has none): passed when the score is >= 0.5."""
    key = task.metadata.get("judge")
    if not key:
        return None
    judge = lookup(str(key))
    return judge(task.query, trajectory.answer or "", execution_steps(trajectory)) >= 0.5
