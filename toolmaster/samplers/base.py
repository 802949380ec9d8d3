"""The engine interface: generate one assistant turn for a batch of token-id prompts.

Only this step differs between engines (HF, vLLM, scripted); the multi-turn loop, parsing, tool execution
and tokenization live in ``loop.py`` and are shared.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class SamplingParams:
    """How an engine samples one turn: temperature, nucleus (top-p), the longest turn and the seed."""

    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    max_new_tokens: int = 128
    seed: int = 0


@dataclass
class Generation:
    """One sampled turn of one prompt: its token ids, their log-probs and the decoded text."""

    token_ids: list[int]  # sampled ids, including a stop token / stop string if one ended the turn
    logprobs: list[float]  # log-prob of each sampled id under the sampling distribution (logits / T)
    text: str  # decoded token_ids (without the end-of-turn token)
    finish_reason: str  # "eos" | "stop" (a stop string) | "length"


@dataclass
class TurnRequest:
    """One row of a continuous batch: an episode's prompt for its next turn and that turn's token cap."""

    key: Hashable
    prompt: list[int]
    cap: int


class GenerationEngine(Protocol):
    """What generates one turn for a batch of prompts (the HF, vLLM, scripted and chat-API engines)."""

    def generate(
        self,
        prompts: list[list[int]],
        params: SamplingParams,
        max_new_tokens: list[int],
        messages: list[list[dict[str, str]]] | None = None,
        keys: Sequence[Hashable] | None = None,
    ) -> list[Generation]:
        """One turn for each prompt; ``max_new_tokens[i]`` caps row i (<= params.max_new_tokens).

        ``messages`` carries the same conversations as text, for engines that speak a chat API (the
        OpenAI-compatible teacher). ``keys`` identify episodes across turns, so an engine may keep an
        episode's KV cache and prefill only what was appended since its last turn; engines that keep such
        state also offer ``release(keys)``, called when episodes end.
        """
        ...
