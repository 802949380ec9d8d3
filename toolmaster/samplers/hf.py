"""HF engine: a batched decoding loop with a KV cache over a transformers causal LM.

Written as its own loop rather than ``model.generate`` so that it can (1) stop each row at the protocol's
stop strings and end-of-turn token, (2) return the log-prob of every sampled token from the same forward
pass that produced it (no second pass for old log-probs), (3) drop finished rows from the batch and the
KV cache, so long turns do not keep paying for short ones, and (4) keep each episode's KV cache between
turns: when the rollout loop passes episode ``keys``, the next turn prefills only the tokens appended since
(the observation and the generation prompt) instead of the whole conversation, and (5) batch continuously at
token granularity (``generate_continuous``): when a row ends its turn, the rollout loop executes the call at
once and hands back the episode's next turn (or a new episode), which is prefilled and merged into the
running batch while the other rows keep decoding, so the batch stays full instead of waiting for its
longest turn.

Batch layout with cache reuse, per row i with ``c_i`` cached and ``n_i`` new tokens (C = max c, N = max n):
``[pad (C - c_i)] [cached c_i] [pad (N - n_i)] [new n_i]``. The cached part is the past_key_values tensor;
the attention mask zeroes both pads and position ids continue from ``c_i``, so each row computes what it
would compute alone (tested against full re-prefill and against ``model.generate``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache

from toolmaster.samplers.base import Generation, SamplingParams, TurnRequest

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values of one row, [1, heads, length, dim]


@dataclass
class _LiveRow:
    request: TurnRequest
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    reason: str = "length"


def _left_pad(t: torch.Tensor, width: int) -> torch.Tensor:
    """Left-pad a [batch, heads, length, dim] KV tensor with zeros to ``width`` positions."""
    missing = width - t.shape[2]
    if missing <= 0:
        return t
    return torch.cat([t.new_zeros((t.shape[0], t.shape[1], missing, t.shape[3])), t], dim=2)


def _merge_batches(
    a: tuple[DynamicCache, torch.Tensor], b: tuple[DynamicCache, torch.Tensor]
) -> tuple[DynamicCache, torch.Tensor]:
    """Stack two (cache, attention mask) batches; the narrower one is left-padded (masked) to match."""
    (cache_a, att_a), (cache_b, att_b) = a, b
    width = max(att_a.shape[1], att_b.shape[1])
    merged = DynamicCache()
    for index, (la, lb) in enumerate(zip(cache_a.layers, cache_b.layers)):
        keys = torch.cat([_left_pad(la.keys, width), _left_pad(lb.keys, width)])
        values = torch.cat([_left_pad(la.values, width), _left_pad(lb.values, width)])
        merged.update(keys, values, index)
    attention = torch.cat(
        [
            torch.nn.functional.pad(att_a, (width - att_a.shape[1], 0)),
            torch.nn.functional.pad(att_b, (width - att_b.shape[1], 0)),
        ]
    )
    return merged, attention


def _trim_left(cache: DynamicCache, attention: torch.Tensor) -> tuple[DynamicCache, torch.Tensor]:
    """Drop leading positions that every row masks (left behind by rows that left the batch)."""
    used = attention.any(dim=0).nonzero()
    start = int(used[0]) if len(used) else attention.shape[1]
    if start == 0:
        return cache, attention
    trimmed = DynamicCache()
    for index, layer in enumerate(cache.layers):
        trimmed.update(layer.keys[:, :, start:].contiguous(), layer.values[:, :, start:].contiguous(), index)
    return trimmed, attention[:, start:]


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

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        stop_strings: Sequence[str] = (),
        eos_token_ids: Sequence[int] = (),
        reuse_cache: bool = True,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.eos_ids = set(eos_token_ids) or {tokenizer.eos_token_id}
        self.stop_strings = tuple(stop_strings)
        self.tail_tokens = max((len(s) for s in self.stop_strings), default=0) + 2
        self.pad_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(self.eos_ids))
        )
        self.reuse_cache = reuse_cache
        self._saved: dict[Hashable, tuple[list[int], KV]] = {}  # episode key -> (ids fed, their KV)
        self.prefill_tokens = 0  # tokens run through prefill, for benchmarks and tests
        self.decode_steps = 0  # batched one-token forward passes, for benchmarks and tests

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def release(self, keys: Sequence[Hashable]) -> None:
        """Forget the saved caches of finished episodes."""
        for key in keys:
            self._saved.pop(key, None)

    def _hit_stop_string(self, ids: list[int]) -> bool:
        if not self.stop_strings:
            return False
        tail = self.tokenizer.decode(ids[-self.tail_tokens :])
        return any(s in tail for s in self.stop_strings)

    def _reusable(self, prompt: list[int], key: Hashable | None) -> tuple[list[int], KV | None]:
        saved = self._saved.get(key) if key is not None else None
        if saved is None:
            return [], None
        ids, kv = saved
        if len(ids) < len(prompt) and prompt[: len(ids)] == ids:
            return ids, kv
        return [], None

    def _prefill(
        self, prompts: list[list[int]], keys: Sequence[Hashable | None]
    ) -> tuple[Any, DynamicCache, torch.Tensor, torch.Tensor]:
        """Run the prompts (their uncached suffixes) through the model; return logits, cache, mask, next positions."""
        device = self.device
        batch = len(prompts)
        reused = [self._reusable(p, k) for p, k in zip(prompts, keys)]
        cached_len = [len(ids) for ids, _ in reused]
        new = [p[c:] for p, c in zip(prompts, cached_len)]
        width_c, width_n = max(cached_len), max(len(n) for n in new)
        input_ids = torch.full((batch, width_n), self.pad_id, dtype=torch.long)
        attention = torch.zeros((batch, width_c + width_n), dtype=torch.long)
        positions = torch.zeros((batch, width_n), dtype=torch.long)
        for row, (tokens, c) in enumerate(zip(new, cached_len)):
            n = len(tokens)
            input_ids[row, width_n - n :] = torch.tensor(tokens, dtype=torch.long)
            attention[row, width_c - c : width_c] = 1
            attention[row, width_c + width_n - n :] = 1
            positions[row, width_n - n :] = torch.arange(c, c + n)
        cache = DynamicCache()
        if width_c:
            layers = len(next(kv for _, kv in reused if kv is not None))
            for layer in range(layers):
                sample_k = next(kv for _, kv in reused if kv is not None)[layer][0]
                heads, dim = sample_k.shape[1], sample_k.shape[3]
                keys_t = sample_k.new_zeros((batch, heads, width_c, dim))
                values_t = sample_k.new_zeros((batch, heads, width_c, dim))
                for row, (_, kv) in enumerate(reused):
                    if kv is not None:
                        keys_t[row, :, width_c - cached_len[row] :] = kv[layer][0][0]
                        values_t[row, :, width_c - cached_len[row] :] = kv[layer][1][0]
                cache.update(keys_t, values_t, layer)
        self.prefill_tokens += sum(len(n) for n in new)
        out = self.model(
            input_ids=input_ids.to(device),
            attention_mask=attention.to(device),
            position_ids=positions.to(device),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        next_pos = torch.tensor([c + len(n) for c, n in zip(cached_len, new)], device=device)
        return out.logits[:, -1, :], cache, attention.to(device), next_pos

    @staticmethod
    def _row_kv(cache: DynamicCache, index: int, attention_row: torch.Tensor) -> KV:
        keep = attention_row.nonzero().squeeze(-1)
        return [
            (
                layer.keys[index : index + 1].index_select(2, keep).clone(),
                layer.values[index : index + 1].index_select(2, keep).clone(),
            )
            for layer in cache.layers
        ]

    @torch.inference_mode()
    def generate(
        self,
        prompts: list[list[int]],
        params: SamplingParams,
        max_new_tokens: list[int],
        messages: list[list[dict[str, str]]] | None = None,
        keys: Sequence[Hashable] | None = None,
    ) -> list[Generation]:
        batch = len(prompts)
        if batch == 0:
            return []
        keys_list: list[Hashable | None] = (
            list(keys) if (keys is not None and self.reuse_cache) else [None] * batch
        )
        device = self.device
        generator = torch.Generator(device=device).manual_seed(params.seed)
        was_training = self.model.training
        self.model.eval()

        logits, cache, attention, next_pos = self._prefill(prompts, keys_list)
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
                    continue
                if (
                    keys_list[row] is not None
                ):  # save what this row has fed so far: prompt + all but the last token
                    self._saved[keys_list[row]] = (
                        prompts[row] + ids[row][:-1],
                        self._row_kv(cache, j, attention[j]),
                    )
            if not keep_idx:
                break
            if len(keep_idx) < len(rows):
                keep = torch.tensor(keep_idx, device=device, dtype=torch.long)
                cache.batch_select_indices(keep)
                tokens, attention, next_pos = tokens[keep], attention[keep], next_pos[keep]
                rows = [rows[j] for j in keep_idx]
            attention = torch.cat([attention, attention.new_ones((len(rows), 1))], dim=1)
            out = self.model(
                input_ids=tokens[:, None],
                attention_mask=attention,
                position_ids=next_pos[:, None],
                past_key_values=cache,
                use_cache=True,
            )
            logits = out.logits[:, -1, :]
            next_pos = next_pos + 1
            self.decode_steps += 1

        if was_training:
            self.model.train()
        results = []
        for row in range(batch):
            text_ids = ids[row][:-1] if reasons[row] == "eos" else ids[row]
            text = self.tokenizer.decode(text_ids, skip_special_tokens=False)
            results.append(Generation(ids[row], lps[row], text, reasons[row]))
        return results

    def _finish_row(self, row: _LiveRow) -> Generation:
        text_ids = row.ids[:-1] if row.reason == "eos" else row.ids
        text = self.tokenizer.decode(text_ids, skip_special_tokens=False)
        return Generation(row.ids, row.logprobs, text, row.reason)

    @torch.inference_mode()
    def generate_continuous(
        self,
        requests: list[TurnRequest],
        params: SamplingParams,
        on_finish: Callable[[list[tuple[Hashable, Generation]]], list[TurnRequest]],
    ) -> None:
        """Decode turns with token-level continuous batching until no row is live and nothing is queued.

        ``requests`` start the batch. Whenever rows end their turn, ``on_finish`` receives their
        ``(key, Generation)`` pairs and returns the requests to add (an episode's next turn, new episodes);
        those are prefilled (from their saved KV cache when the key is known) and merged into the running
        batch. Every row computes what it would compute alone (tested against ``generate``); only the
        random stream differs, since rows share one generator seeded by ``params.seed``.
        """
        device = self.device
        generator = torch.Generator(device=device).manual_seed(params.seed)
        was_training = self.model.training
        self.model.eval()
        rows: list[_LiveRow] = []
        cache: DynamicCache | None = None
        attention = next_pos = logits = None
        pending = [r for r in requests]
        while pending or rows:
            if pending:
                added = [
                    _LiveRow(TurnRequest(r.key, r.prompt, max(1, min(r.cap, params.max_new_tokens))))
                    for r in pending
                ]
                keys = [r.request.key if self.reuse_cache else None for r in added]
                new_logits, new_cache, new_att, new_pos = self._prefill(
                    [r.request.prompt for r in added], keys
                )
                if rows:
                    cache, attention = _merge_batches((cache, attention), (new_cache, new_att))
                    logits = torch.cat([logits, new_logits])
                    next_pos = torch.cat([next_pos, new_pos])
                else:
                    cache, attention, logits, next_pos = new_cache, new_att, new_logits, new_pos
                rows += added
                pending = []
            tokens, logprobs = sample_tokens(logits, params, generator)
            token_list, logprob_list = tokens.tolist(), logprobs.tolist()
            keep_idx: list[int] = []
            done: list[_LiveRow] = []
            for j, row in enumerate(rows):
                row.ids.append(token_list[j])
                row.logprobs.append(logprob_list[j])
                if token_list[j] in self.eos_ids:
                    row.reason = "eos"
                elif self._hit_stop_string(row.ids):
                    row.reason = "stop"
                elif len(row.ids) >= row.request.cap:
                    row.reason = "length"
                else:
                    keep_idx.append(j)
                    continue
                done.append(row)
                if self.reuse_cache:  # what this row has fed: its prompt and all but the last token
                    self._saved[row.request.key] = (
                        row.request.prompt + row.ids[:-1],
                        self._row_kv(cache, j, attention[j]),
                    )
            if done:
                keep = torch.tensor(keep_idx, device=device, dtype=torch.long)
                rows = [rows[j] for j in keep_idx]
                if rows:
                    cache.batch_select_indices(keep)
                    tokens, attention, next_pos = tokens[keep], attention[keep], next_pos[keep]
                    cache, attention = _trim_left(cache, attention)
                pending = on_finish([(row.request.key, self._finish_row(row)) for row in done])
            if rows:
                attention = torch.cat([attention, attention.new_ones((len(rows), 1))], dim=1)
                out = self.model(
                    input_ids=tokens[:, None],
                    attention_mask=attention,
                    position_ids=next_pos[:, None],
                    past_key_values=cache,
                    use_cache=True,
                )
                logits = out.logits[:, -1, :]
                next_pos = next_pos + 1
                self.decode_steps += 1
        if was_training:
            self.model.train()
