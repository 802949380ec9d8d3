"""HF engine: a batched decoding loop with a KV cache over a transformers causal LM.

Written as its own loop rather than ``model.generate`` so that it can (1) stop each row at the protocol's
stop strings and end-of-turn token, (2) return the log-prob of every sampled token from the same forward
pass that produced it (no second pass for old log-probs), and (3) drop finished rows from the batch and the
KV cache, so long turns do not keep paying for short ones. Prompts are left-padded; position ids follow
the attention mask so padded rows see the same positions as unpadded ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import DynamicCache

from toolmaster.samplers.base import Generation, SamplingParams


def sample_tokens(
    logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick one token per row; return (tokens, log-probs under logits / T, or raw logits when greedy)."""
    logits = logits.float()
    if params.temperature <= 0:
        logprobs = torch.log_softmax(logits, dim=-1)
        tokens = logprobs.argmax(dim=-1)
        return tokens, logprobs.gather(-1, tokens[:, None]).squeeze(-1)
    logprobs = torch.log_softmax(logits / params.temperature, dim=-1)
    probs = logprobs.exp()
    if params.top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        cumulative = sorted_probs.cumsum(dim=-1)
        drop = cumulative - sorted_probs > params.top_p  # keep the smallest prefix reaching top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    tokens = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return tokens, logprobs.gather(-1, tokens[:, None]).squeeze(-1)


class HFEngine:
    """Generates one assistant turn for a batch of prompts with a transformers model."""

    def __init__(self, model: Any, tokenizer: Any, stop_strings: Sequence[str] = (), eos_token_ids: Sequence[int] = ()):
        self.model = model
        self.tokenizer = tokenizer
        self.eos_ids = set(eos_token_ids) or {tokenizer.eos_token_id}
        self.stop_strings = tuple(stop_strings)
        self.tail_tokens = max((len(s) for s in self.stop_strings), default=0) + 2
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(self.eos_ids))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _hit_stop_string(self, ids: list[int]) -> bool:
        if not self.stop_strings:
            return False
        tail = self.tokenizer.decode(ids[-self.tail_tokens :])
        return any(s in tail for s in self.stop_strings)

    @torch.inference_mode()
    def generate(self, prompts: list[list[int]], params: SamplingParams, max_new_tokens: list[int],
                 messages: list[list[dict[str, str]]] | None = None) -> list[Generation]:
        batch = len(prompts)
        if batch == 0:
            return []
        device = self.device
        width = max(len(p) for p in prompts)
        input_ids = torch.full((batch, width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((batch, width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            input_ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            attention[row, width - len(prompt) :] = 1
        input_ids, attention = input_ids.to(device), attention.to(device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        generator = torch.Generator(device=device).manual_seed(params.seed)
        was_training = self.model.training
        self.model.eval()

        cache = DynamicCache()
        out = self.model(
            input_ids=input_ids, attention_mask=attention, position_ids=positions,
            past_key_values=cache, use_cache=True, logits_to_keep=1,
        )
        logits = out.logits[:, -1, :]
        next_pos = positions[:, -1] + 1
        rows = list(range(batch))  # original row index of each live batch row
        ids: list[list[int]] = [[] for _ in range(batch)]
        lps: list[list[float]] = [[] for _ in range(batch)]
        reasons = ["length"] * batch
        caps = [max(0, min(cap, params.max_new_tokens)) for cap in max_new_tokens]
        live = [r for r in rows if caps[r] > 0]
        if len(live) < batch:
            keep = torch.tensor(live, device=device, dtype=torch.long)
            if live:
                cache.batch_select_indices(keep)
            logits, attention, next_pos, rows = logits[keep], attention[keep], next_pos[keep], live

        while rows:
            tokens, logprobs = sample_tokens(logits, params, generator)
            token_list, logprob_list = tokens.tolist(), logprobs.tolist()
            keep_idx: list[int] = []
            for j, row in enumerate(rows):
                token = token_list[j]
                ids[row].append(token)
                lps[row].append(logprob_list[j])
                if token in self.eos_ids:
                    reasons[row] = "eos"
                elif self._hit_stop_string(ids[row]):
                    reasons[row] = "stop"
                elif len(ids[row]) >= caps[row]:
                    reasons[row] = "length"
                else:
                    keep_idx.append(j)
            if not keep_idx:
                break
            if len(keep_idx) < len(rows):
                keep = torch.tensor(keep_idx, device=device, dtype=torch.long)
                cache.batch_select_indices(keep)
                tokens, attention, next_pos = tokens[keep], attention[keep], next_pos[keep]
                rows = [rows[j] for j in keep_idx]
            attention = torch.cat([attention, attention.new_ones((len(rows), 1))], dim=1)
            out = self.model(
                input_ids=tokens[:, None], attention_mask=attention, position_ids=next_pos[:, None],
                past_key_values=cache, use_cache=True,
            )
            logits = out.logits[:, -1, :]
            next_pos = next_pos + 1

        if was_training:
            self.model.train()
        results = []
        for row in range(batch):
            text_ids = ids[row][:-1] if reasons[row] == "eos" else ids[row]
            text = self.tokenizer.decode(text_ids, skip_special_tokens=False)
            results.append(Generation(ids[row], lps[row], text, reasons[row]))
        return results
