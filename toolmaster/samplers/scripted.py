"""Scripted engine: answers each turn with text from a Python function instead of a model.

``respond(prompt_text) -> str`` sees the decoded conversation so far and returns the assistant's next turn
(without the end-of-turn token). The text is tokenized with the real tokenizer, so trajectories, masks and
token ids are exactly what a model emitting that text would produce. Used to test the rollout loop
deterministically and to replay fixed policies; log-probs are reported as 0.0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from toolmaster.samplers.base import Generation, SamplingParams


class ScriptedEngine:
    def __init__(self, tokenizer: Any, respond: Callable[[str], str | tuple[str, str]]):
        self.tokenizer = tokenizer
        self.respond = respond
        self.eos_id = tokenizer.eos_token_id
        self.batch_sizes: list[int] = []

    def generate(
        self,
        prompts: list[list[int]],
        params: SamplingParams,
        max_new_tokens: list[int],
        messages: list[list[dict[str, str]]] | None = None,
        keys: Any = None,
    ) -> list[Generation]:
        self.batch_sizes.append(len(prompts))
        out = []
        for prompt, cap in zip(prompts, max_new_tokens):
            reply = self.respond(self.tokenizer.decode(prompt, skip_special_tokens=False))
            text, reason = reply if isinstance(reply, tuple) else (reply, "eos")
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) >= cap:
                ids, reason = ids[:cap], "length"
                text = self.tokenizer.decode(ids)
            elif reason == "eos":
                ids = ids + [self.eos_id]
            out.append(Generation(ids, [0.0] * len(ids), text, reason))
        return out
