"""Shared by the vLLM engine tests: protocol prompts from oracle episodes, greedy turns, one real SFT step."""

from __future__ import annotations

from typing import Any

import torch

from helpers.sft_conversations import episode
from toolmaster.protocol import get_chat_format
from toolmaster.protocol.tokenize import tokenize_conversation
from toolmaster.samplers.base import SamplingParams

FMT = get_chat_format("chatml")
STOPS = FMT.tags.closing_tags()
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=40)


def protocol_prompts(tokenizer: Any, episodes: range = range(3)) -> list[list[int]]:
    """Prompts before every assistant turn of a few oracle episodes (trial calls and observations included)."""
    prompts = []
    for i in episodes:
        record = episode(i)
        messages = record["messages"]
        for k, message in enumerate(messages):
            if message["role"] == "assistant":
                ids, _ = tokenize_conversation(
                    tokenizer, FMT, messages[:k], record["tools"], add_generation_prompt=True
                )
                prompts.append(ids)
    return prompts


def greedy(engine: Any, prompts: list[list[int]]) -> list[Any]:
    return engine.generate(prompts, GREEDY, [GREEDY.max_new_tokens] * len(prompts))


def sft_step(model: Any, tokenizer: Any, lr: float = 1e-3) -> None:
    """One real AdamW step on the masked SFT loss of two oracle episodes."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for i in (5, 6):
        record = episode(i)
        ids, mask = tokenize_conversation(tokenizer, FMT, record["messages"], record["tools"])
        input_ids = torch.tensor([ids])
        labels = torch.where(torch.tensor([mask]) == 1, input_ids, -100)
        model(input_ids=input_ids, labels=labels).loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    model.eval()
