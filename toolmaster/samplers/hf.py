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
longest turn, and (6) append to the KV cache in place (``kv_cache.BufferedLayer``) instead of
concatenating a new cache on every decode step as transformers' ``DynamicCache`` does, and (7) optionally
(``draft_tokens > 0``) decode speculatively with prompt-lookup drafts checked in one forward pass, keeping the
sampling distribution exact (``prompt_lookup``; continuous batching only), and (8) by default
(``slot_cache``) batch continuously over per-row KV slots (``slot_batch``): an episode's next turn is
prefilled into its own slot after the columns it has cached, so turn boundaries copy no cache; the
left-padded layout below stays for ``slot_cache=False`` and for attentions that take no custom 4D mask. On a CPU
with a bf16 model, (9) the slots hold float32 keys and values (``cache_dtype``: the bf16 decode attention
computes in float32, so a bf16 cache was upcast whole at every layer and step; bit-identical), and with a
bf16 or fp32 model (10) the linear layers multiply with oneDNN's pre-packed weights while the engine
samples (``packed_linears``, ``packed_linear``: bit-identical in bf16, equal to float rounding in fp32).

Batch layout with cache reuse, per row i with ``c_i`` cached and ``n_i`` new tokens (C = max c, N = max n):
``[pad (C - c_i)] [cached c_i] [pad (N - n_i)] [new n_i]``. The cached part is the past_key_values tensor;
the attention mask zeroes both pads and position ids continue from ``c_i``, so each row computes what it
would compute alone (tested against full re-prefill and against ``model.generate``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache

from toolmaster.errors import ToolMasterError
from toolmaster.models.attention import NAME as ATTENTION_NAME
from toolmaster.samplers.base import Generation, SamplingParams, TurnRequest
from toolmaster.samplers.kv_cache import KV, merge, new_cache, preload, row_kv, trim_left, trim_right
from toolmaster.samplers.packed_linear import PackedLinears, packable
from toolmaster.samplers.prefix_store import PrefixStore, common_prefix_length
from toolmaster.samplers.prompt_lookup import PromptLookup, accepted_lengths, nucleus, pad_drafts
from toolmaster.samplers.slot_batch import SlotBatch
from toolmaster.samplers.slot_cache import SLOT_ATTENTION, attention_implementation


@dataclass
class _LiveRow:
    request: TurnRequest
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    reason: str = "length"
    lookup: PromptLookup | None = None  # n-gram index of prompt + ids, built when drafting first applies
    draft_len: int = 2  # how many tokens to draft next: +2 after a fully accepted draft, -1 otherwise


def sample_tokens(
    logits: torch.Tensor,
    params: SamplingParams,
    generator: torch.Generator | None,
    exclude: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick one token per row; return (tokens, log-probs under logits / T, or raw logits when greedy).

    ``exclude`` (one token id per row, -1 for none) removes that token from the row's sampling distribution
    (renormalised): the residual draw after a rejected prompt-lookup draft (``prompt_lookup``). The
    returned log-probs stay those of the full distribution."""
    logits = logits.float()
    if params.temperature <= 0:
        logprobs = torch.log_softmax(logits, dim=-1)
        ranked = logprobs if exclude is None else _without(logprobs, exclude, float("-inf"))
        tokens = ranked.argmax(dim=-1)
        return tokens, logprobs.gather(-1, tokens[:, None]).squeeze(-1)
    logprobs = torch.log_softmax(logits / params.temperature, dim=-1)
    probs = nucleus(logprobs.exp(), params.top_p)
    if exclude is not None:
        residual = _without(probs, exclude, 0.0)
        # a draft rejected although it held all the mass (rounding at the nucleus edge): keep it possible
        empty = residual.sum(dim=-1, keepdim=True) <= 0
        probs = torch.where(empty, probs, residual)
    tokens = draw(probs, generator)
    return tokens, logprobs.gather(-1, tokens[:, None]).squeeze(-1)


def _without(values: torch.Tensor, exclude: torch.Tensor, fill: float) -> torch.Tensor:
    """``values`` with ``values[row, exclude[row]] = fill`` wherever ``exclude[row] >= 0``."""
    rows = (exclude >= 0).nonzero().squeeze(-1)
    if len(rows) == 0:
        return values
    values = values.clone()
    values[rows, exclude[rows]] = fill
    return values


def draw(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One token per row of (unnormalised) ``probs`` by inverting the cumulative distribution.

    Needs one uniform number per row; ``torch.multinomial`` and the exponential race need one per
    vocabulary entry, which on this CPU takes 16 ms for 8 x 49k entries against 0.4 ms here. The
    uniform lies in (0, total], so a token of probability zero is never drawn.
    """
    cdf = probs.double().cumsum(dim=-1)
    uniform = torch.rand((probs.shape[0], 1), generator=generator, dtype=torch.float64, device=probs.device)
    threshold = (1.0 - uniform) * cdf[:, -1:]
    return torch.searchsorted(cdf, threshold).squeeze(-1).clamp_max(probs.shape[-1] - 1)


CACHE_DTYPES = ("auto", "model", "float32")  # sampler.engine.cache_dtype


class HFEngine:
    """Generates one assistant turn for a batch of prompts with a transformers model."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        stop_strings: Sequence[str] = (),
        eos_token_ids: Sequence[int] = (),
        reuse_cache: bool = True,
        share_prefixes: bool = True,
        prefix_entries: int = 16,
        min_shared_tokens: int = 64,
        draft_tokens: int = 0,
        draft_budget: int = 16,
        draft_ngram: int = 3,
        draft_min_ngram: int = 1,
        slot_cache: bool = True,
        cache_dtype: str = "auto",
        packed_linears: bool = True,
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
        self.share_prefixes = share_prefixes and reuse_cache
        self.min_shared_tokens = min_shared_tokens  # shorter shared prefixes are cheaper to recompute
        self._prefixes = PrefixStore(prefix_entries)
        self._cached_version: int | None = None  # weights version the saved caches were computed with
        self.shared_tokens = 0  # prompt tokens taken from another episode's cache, for benchmarks and tests
        self.prefill_tokens = 0  # tokens run through prefill, for benchmarks and tests
        self.decode_steps = 0  # batched one-token forward passes, for benchmarks and tests
        # prompt-lookup speculative decoding in generate_continuous (prompt_lookup): up to draft_tokens
        # drafted tokens per row and step (0 turns it off), and at most draft_budget tokens fed per check
        # (rows x (1 + longest draft)): a check of few tokens per row costs about one decode step, wide
        # checks of many rows are compute-bound and cost more than the drafts save
        self.draft_tokens = draft_tokens
        self.draft_budget = draft_budget
        self.draft_ngram = draft_ngram
        self.draft_min_ngram = draft_min_ngram
        self.verify_steps = 0  # forward passes that checked drafts, for benchmarks and tests
        self.drafted_tokens = 0  # draft tokens proposed
        self.accepted_tokens = 0  # draft tokens accepted (each saved one decode step of its row)
        # continuous batching over per-row slots (slot_batch): turns continue in place; off, or with an
        # attention that takes no custom 4D mask (flash-attention), the left-padded layout below
        self.slot_cache = slot_cache
        # the slots' KV dtype: "auto" = float32 for a half-precision model on CPU with toolmaster_sdpa (whose
        # decode attention computes in float32: no per-step upcast of the cache), else the model's; "model";
        # "float32" (toolmaster_sdpa only)
        if cache_dtype not in CACHE_DTYPES:
            raise ToolMasterError(
                f"sampler.engine.cache_dtype: {cache_dtype!r} is not one of {', '.join(CACHE_DTYPES)}"
            )
        self.cache_dtype = cache_dtype
        # linear layers on oneDNN's pre-packed weights while sampling on CPU (packed_linear; bit-identical)
        self.packed_linears = packed_linears
        self._packs: PackedLinears | None = None
        self._slot_batch: SlotBatch | None = None  # the running slot batch, for release()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def for_model(self, model: Any) -> HFEngine:
        """A fresh engine with this one's settings over another model (no saved caches carried over)."""
        return HFEngine(
            model,
            self.tokenizer,
            self.stop_strings,
            tuple(self.eos_ids),
            reuse_cache=self.reuse_cache,
            share_prefixes=self.share_prefixes,
            prefix_entries=self._prefixes.capacity,
            min_shared_tokens=self.min_shared_tokens,
            draft_tokens=self.draft_tokens,
            draft_budget=self.draft_budget,
            draft_ngram=self.draft_ngram,
            draft_min_ngram=self.draft_min_ngram,
            slot_cache=self.slot_cache,
            cache_dtype=self.cache_dtype,
            packed_linears=self.packed_linears,
        )

    def slot_kv_dtype(self) -> torch.dtype | None:
        """The dtype of the slot cache's keys and values (None: the model's), per ``cache_dtype``."""
        if self.cache_dtype == "model":
            return None
        attention = attention_implementation(self.model)
        if self.cache_dtype == "float32":
            if attention != ATTENTION_NAME:
                raise ToolMasterError(
                    f"sampler.engine.cache_dtype=float32 needs the {ATTENTION_NAME} attention, the model runs {attention}"
                )
            return torch.float32
        model_dtype = next(self.model.parameters()).dtype
        half = model_dtype in (torch.bfloat16, torch.float16)
        return torch.float32 if half and self.device.type == "cpu" and attention == ATTENTION_NAME else None

    def release(self, keys: Sequence[Hashable]) -> None:
        """Finished episodes: their saved caches move to the prefix store (when sharing) for later episodes."""
        for key in keys:
            entry = self._saved.pop(key, None)
            if entry is None and self.share_prefixes and self._slot_batch is not None:
                entry = self._slot_batch.saved(key)
            if entry is not None and self.share_prefixes:
                self._prefixes.add(*entry)

    def clear(self) -> None:
        """Drop every saved cache and stored prefix (the rollout loop calls this around each rollout)."""
        self._saved.clear()
        self._prefixes.clear()
        if self._packs is not None:  # the weights may have changed too (writes through .data)
            self._packs.forget()

    def _packed(self) -> contextlib.AbstractContextManager:
        """Where the engine's forward passes run: over packed linear weights when on and possible."""
        if not self.packed_linears or not packable(self.model):
            return contextlib.nullcontext()
        if self._packs is None:
            self._packs = PackedLinears(self.model)
        return self._packs.active()

    def _weights_version(self) -> int | None:
        """Sum of the parameters' version counters: every in-place update (optimizer steps, no-grad
        writes, ``load_state_dict``) bumps it. None when unknowable (inference tensors have no counter)."""
        try:
            return sum(p._version for p in self.model.parameters())
        except RuntimeError:
            return None

    def _forget_if_weights_changed(self) -> None:
        """Cached keys and values are only valid for the weights that computed them: drop them when the
        weights changed since the last call (writes through ``.data`` are invisible here; the rollout
        loop's ``clear`` around every rollout covers those)."""
        version = self._weights_version()
        if version is None or version != self._cached_version:
            self.clear()
        self._cached_version = version

    def _hit_stop_string(self, ids: list[int]) -> bool:
        if not self.stop_strings:
            return False
        tail = self.tokenizer.decode(ids[-self.tail_tokens :])
        return any(s in tail for s in self.stop_strings)

    def _reusable(self, prompt: list[int], key: Hashable | None) -> tuple[list[int], KV | None]:
        """The longest cached prefix of ``prompt``: this episode's own cache from its last turn, else
        (when sharing) the longest prefix another episode of this rollout has computed."""
        saved = self._saved.get(key) if key is not None else None
        if saved is not None:
            ids, kv = saved
            if len(ids) < len(prompt) and prompt[: len(ids)] == ids:
                return ids, kv
        if not self.share_prefixes:
            return [], None
        length, kv = self._prefixes.longest(prompt, self._saved.values(), self.min_shared_tokens)
        if length < self.min_shared_tokens:
            return [], None
        return prompt[:length], kv

    def _share_within(self, prompts: list[list[int]], cached: list[int]) -> list[int]:
        """Rows whose prompt opens with at least ``min_shared_tokens`` more tokens of an earlier row's
        prompt than they have cached; return those earlier rows (the leaders to prefill first)."""
        leaders: set[int] = set()
        heads = [prompt[: self.min_shared_tokens] for prompt in prompts]
        for row, prompt in enumerate(prompts):
            for earlier in range(row):
                if heads[earlier] != heads[row]:
                    continue
                shared = min(common_prefix_length(prompt, prompts[earlier]), len(prompt) - 1)
                if shared >= cached[row] + self.min_shared_tokens:
                    leaders.add(earlier)
                    break
        return sorted(leaders)

    def _prefill(
        self, prompts: list[list[int]], keys: Sequence[Hashable | None], spare: int
    ) -> tuple[Any, DynamicCache, torch.Tensor, torch.Tensor]:
        """Prefill ``prompts`` from the longest cached prefix each has. When rows of this call share
        long prefixes (a GRPO group's identical prompts), the leaders run first into the prefix store
        and the others then prefill only their own suffixes."""
        reused = [self._reusable(p, k) for p, k in zip(prompts, keys)]
        if self.share_prefixes:
            leaders = self._share_within(prompts, [len(ids) for ids, _ in reused])
            if leaders:
                lead_prompts = [prompts[row] for row in leaders]
                _, cache, attention, _ = self._run_prefill(lead_prompts, [reused[row] for row in leaders], 0)
                for row, prompt in enumerate(lead_prompts):
                    self._prefixes.add(prompt, row_kv(cache, row, attention[row]))
                reused = [self._reusable(p, k) for p, k in zip(prompts, keys)]
        self.shared_tokens += sum(len(ids) for (ids, _), k in zip(reused, keys) if k not in self._saved)
        return self._run_prefill(prompts, reused, spare)

    def _run_prefill(
        self, prompts: list[list[int]], reused: list[tuple[list[int], KV | None]], spare: int
    ) -> tuple[Any, DynamicCache, torch.Tensor, torch.Tensor]:
        """Run the prompts' uncached suffixes through the model into a fresh buffered cache with
        ``spare`` free positions per row; return last logits, cache, attention mask, next positions."""
        device = self.device
        batch = len(prompts)
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
        cache = new_cache(spare)
        if width_c:
            preload(cache, [kv for _, kv in reused], cached_len, width_c, width_n)
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

    @torch.inference_mode()
    def generate(
        self,
        prompts: list[list[int]],
        params: SamplingParams,
        max_new_tokens: list[int],
        messages: list[list[dict[str, str]]] | None = None,
        keys: Sequence[Hashable] | None = None,
    ) -> list[Generation]:
        with self._packed():
            return self._generate(prompts, params, max_new_tokens, keys)

    def _generate(
        self,
        prompts: list[list[int]],
        params: SamplingParams,
        max_new_tokens: list[int],
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
        self._forget_if_weights_changed()

        caps = [max(0, min(cap, params.max_new_tokens)) for cap in max_new_tokens]
        logits, cache, attention, next_pos = self._prefill(prompts, keys_list, max(caps))
        rows = list(range(batch))  # original row index of each live batch row
        ids: list[list[int]] = [[] for _ in range(batch)]
        lps: list[list[float]] = [[] for _ in range(batch)]
        reasons = ["length"] * batch
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
                        row_kv(cache, j, attention[j]),
                    )
            if not keep_idx:
                break
            if len(keep_idx) < len(rows):
                keep = torch.tensor(keep_idx, device=device, dtype=torch.long)
                cache.batch_select_indices(keep)
                tokens, attention, next_pos = tokens[keep], attention[keep], next_pos[keep]
                rows = [rows[j] for j in keep_idx]
            logits, attention, next_pos = self._decode_step(tokens, cache, attention, next_pos)

        if was_training:
            self.model.train()
        results = []
        for row in range(batch):
            text_ids = ids[row][:-1] if reasons[row] == "eos" else ids[row]
            text = self.tokenizer.decode(text_ids, skip_special_tokens=False)
            results.append(Generation(ids[row], lps[row], text, reasons[row]))
        return results

    def _decode_step(
        self, tokens: torch.Tensor, cache: DynamicCache, attention: torch.Tensor, next_pos: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Feed each live row its sampled token (``tokens``, one per row) through the KV cache: returns the
        next-token logits, the attention mask grown by one column and the next positions."""
        attention = torch.cat([attention, attention.new_ones((len(tokens), 1))], dim=1)
        out = self.model(
            input_ids=tokens[:, None],
            attention_mask=attention,
            position_ids=next_pos[:, None],
            past_key_values=cache,
            use_cache=True,
        )
        self.decode_steps += 1
        return out.logits[:, -1, :], attention, next_pos + 1

    def _finish_row(self, row: _LiveRow) -> Generation:
        text_ids = row.ids[:-1] if row.reason == "eos" else row.ids
        text = self.tokenizer.decode(text_ids, skip_special_tokens=False)
        return Generation(row.ids, row.logprobs, text, row.reason)

    def _append(self, row: _LiveRow, token: int, logprob: float) -> bool:
        """Add a sampled token to ``row``; True when it ends the turn (``row.reason`` says why)."""
        row.ids.append(token)
        row.logprobs.append(logprob)
        if token in self.eos_ids:
            row.reason = "eos"
        elif self._hit_stop_string(row.ids):
            row.reason = "stop"
        elif len(row.ids) >= row.request.cap:
            row.reason = "length"
        else:
            return False
        return True

    def _drafts(self, rows: list[_LiveRow]) -> list[list[int]]:
        """Each row's prompt-lookup draft (at most ``draft_tokens``, within the check's budget, never past
        the row's cap); all empty when the budget leaves no room for a draft."""
        width = min(1 + self.draft_tokens, self.draft_budget // len(rows))
        if width < 2:
            return [[] for _ in rows]
        drafts = []
        for row in rows:
            if row.lookup is None:
                row.lookup = PromptLookup(
                    row.request.prompt + row.ids, self.draft_ngram, self.draft_min_ngram
                )
            else:
                seen = len(row.lookup.tokens) - len(row.request.prompt)
                row.lookup.extend(row.ids[seen:])
            limit = min(row.draft_len, width - 1, row.request.cap - len(row.ids))
            drafts.append(row.lookup.draft(limit))
        return drafts

    def _verify_step(
        self,
        rows: list[_LiveRow],
        tokens: torch.Tensor,
        drafts: list[list[int]],
        cache: DynamicCache,
        attention: torch.Tensor,
        next_pos: torch.Tensor,
        params: SamplingParams,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
        """Feed each row its sampled token and its draft in one forward pass, accept each draft's longest
        acceptable prefix (``prompt_lookup.accepted_lengths``) into the row, and mask the cache positions of
        rejected draft tokens. Returns the next-token logits after each row's last accepted token, the
        attention mask, the next positions, the token each row's next draw must exclude (its rejected draft
        token, -1 for none) and the batch indices of rows whose turn ended on an accepted token."""
        device = attention.device
        draft_ids, present = pad_drafts(drafts, self.pad_id)
        batch, width = len(rows), 1 + draft_ids.shape[1]
        block = torch.cat([tokens.cpu()[:, None], draft_ids], dim=1).to(device)
        fed = torch.cat([torch.ones((batch, 1), dtype=torch.bool), present], dim=1).long()
        start = attention.shape[1]
        attention = torch.cat([attention, fed.to(device)], dim=1)
        out = self.model(
            input_ids=block,
            attention_mask=attention,
            position_ids=next_pos[:, None] + torch.arange(width, device=device),
            past_key_values=cache,
            use_cache=True,
        )
        self.verify_steps += 1
        logits = out.logits.float()
        counts, draft_logprobs = self._judge_drafts(logits, block, draft_ids, present, params, generator)
        kept, after, exclude, ended = [], [], [], []
        for j, (row, draft) in enumerate(zip(rows, drafts)):
            accepted, ends = self._take_draft(row, draft, counts[j], draft_logprobs[j])
            if ends:
                ended.append(j)
            # positions holding tokens the row has fed: its sampled token and the accepted drafts, but not
            # the token that ended the turn (a saved cache holds the prompt and all but the last token)
            kept.append(accepted if ends else 1 + accepted)
            after.append(accepted)
            exclude.append(draft[accepted] if not ends and accepted < len(draft) else -1)
        kept_t = torch.tensor(kept, device=device)
        attention[:, start:] *= (torch.arange(width, device=device)[None, :] < kept_t[:, None]).long()
        next_logits = logits[torch.arange(batch, device=device), torch.tensor(after, device=device)]
        return next_logits, attention, next_pos + kept_t, torch.tensor(exclude, device=device), ended

    def _judge_drafts(
        self,
        logits: torch.Tensor,
        block: torch.Tensor,
        draft_ids: torch.Tensor,
        present: torch.Tensor,
        params: SamplingParams,
        generator: torch.Generator,
    ) -> tuple[list[int], list[list[float]]]:
        """From the logits of a check of ``block`` (each row's sampled token and its padded draft): how many
        draft tokens each row accepts, and each draft token's log-prob (one log-softmax feeds both)."""
        scale = params.temperature if params.temperature > 0 else 1.0
        logprobs = torch.log_softmax(logits[:, :-1] / scale, dim=-1)  # before each draft token
        counts = accepted_lengths(logprobs, draft_ids, present, params.temperature, params.top_p, generator)
        return counts, logprobs.gather(-1, block[:, 1:, None]).squeeze(-1).tolist()

    def _take_draft(
        self, row: _LiveRow, draft: list[int], count: int, logprobs: list[float]
    ) -> tuple[int, bool]:
        """Append the ``count`` accepted tokens of ``row``'s draft (stopping at one that ends the turn),
        count them and adapt the row's draft length; return (tokens taken, whether the turn ended)."""
        accepted, ends = count, False
        for i in range(count):
            if self._append(row, draft[i], logprobs[i]):
                accepted, ends = i + 1, True
                break
        self.drafted_tokens += len(draft)
        self.accepted_tokens += accepted
        if draft:
            full = accepted == len(draft)
            row.draft_len = min(self.draft_tokens, row.draft_len + 2) if full else max(1, row.draft_len - 1)
        return accepted, ends

    @torch.inference_mode()
    def generate_continuous(
        self,
        requests: list[TurnRequest],
        params: SamplingParams,
        on_finish: Callable[[list[tuple[Hashable, Generation]]], list[TurnRequest]],
    ) -> None:
        """Decode turns with token-level continuous batching (``_generate_continuous``), over packed
        linear weights where the engine uses them."""
        with self._packed():
            self._generate_continuous(requests, params, on_finish)

    def _generate_continuous(
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
        random stream differs, since rows share one generator seeded by ``params.seed``. With
        ``draft_tokens > 0``, steps feed prompt-lookup drafts (at most ``draft_budget`` tokens in all) and
        keep what the exact acceptance rule accepts (``prompt_lookup``).
        """
        device = self.device
        generator = torch.Generator(device=device).manual_seed(params.seed)
        was_training = self.model.training
        self.model.eval()
        self._forget_if_weights_changed()
        if self.slot_cache and attention_implementation(self.model) in SLOT_ATTENTION:
            self._slot_batch = SlotBatch(self, params, generator)
            try:
                self._slot_batch.run(requests, on_finish)
            finally:
                self._slot_batch = None
                if was_training:
                    self.model.train()
            return
        rows: list[_LiveRow] = []
        cache: DynamicCache | None = None
        attention = next_pos = logits = exclude = None  # exclude: token each row's next draw skips, -1 none
        pending = [r for r in requests]
        while pending or rows:
            if pending:
                added = [
                    _LiveRow(TurnRequest(r.key, r.prompt, max(1, min(r.cap, params.max_new_tokens))))
                    for r in pending
                ]
                keys = [r.request.key if self.reuse_cache else None for r in added]
                new_logits, new_cache, new_att, new_pos = self._prefill(
                    [r.request.prompt for r in added], keys, params.max_new_tokens
                )
                new_exclude = torch.full((len(added),), -1, dtype=torch.long, device=device)
                if rows:
                    cache, attention = merge((cache, attention), (new_cache, new_att), params.max_new_tokens)
                    logits = torch.cat([logits, new_logits])
                    next_pos = torch.cat([next_pos, new_pos])
                    exclude = torch.cat([exclude, new_exclude])
                else:
                    cache, attention, logits, next_pos = new_cache, new_att, new_logits, new_pos
                    exclude = new_exclude
                rows += added
                pending = []
            skip = exclude if bool((exclude >= 0).any()) else None
            tokens, logprobs = sample_tokens(logits, params, generator, skip)
            token_list, logprob_list = tokens.tolist(), logprobs.tolist()
            ended = [j for j, row in enumerate(rows) if self._append(row, token_list[j], logprob_list[j])]
            if ended:
                rows, attention, (tokens, next_pos, exclude), finished = self._retire(
                    rows, ended, cache, attention, (tokens, next_pos, exclude)
                )
                pending = on_finish(finished)
            if not rows:
                continue
            drafts = self._drafts(rows) if self.draft_tokens else []
            if any(drafts):
                logits, attention, next_pos, exclude, ended = self._verify_step(
                    rows, tokens, drafts, cache, attention, next_pos, params, generator
                )
                if ended:
                    rows, attention, (logits, next_pos, exclude), finished = self._retire(
                        rows, ended, cache, attention, (logits, next_pos, exclude)
                    )
                    pending += on_finish(finished)
                if rows:
                    attention = trim_right(cache, attention)
            else:
                logits, attention, next_pos = self._decode_step(tokens, cache, attention, next_pos)
                exclude = torch.full((len(rows),), -1, dtype=torch.long, device=device)
        if was_training:
            self.model.train()

    def _retire(
        self,
        rows: list[_LiveRow],
        ended: list[int],
        cache: DynamicCache,
        attention: torch.Tensor,
        per_row: tuple[torch.Tensor, ...],
    ) -> tuple[list[_LiveRow], torch.Tensor, tuple[torch.Tensor, ...], list[tuple[Hashable, Generation]]]:
        """Take the rows at batch indices ``ended`` (their turn is over) out of the batch: save each one's
        cache for its next turn (what it has fed: its prompt and all but its last token) and drop them
        from the cache (in place), from the attention mask (returned trimmed of leading and trailing
        columns no remaining row uses) and from the other per-row tensors; return the remaining rows,
        the mask, those tensors and the retired rows' generations."""
        finished = []
        for j in ended:
            row = rows[j]
            if self.reuse_cache:
                self._saved[row.request.key] = (
                    row.request.prompt + row.ids[:-1],
                    row_kv(cache, j, attention[j]),
                )
            finished.append((row.request.key, self._finish_row(row)))
        gone = set(ended)
        keep_idx = [j for j in range(len(rows)) if j not in gone]
        rows = [rows[j] for j in keep_idx]
        if rows:
            keep = torch.tensor(keep_idx, device=attention.device, dtype=torch.long)
            cache.batch_select_indices(keep)
            attention = trim_right(cache, trim_left(cache, attention[keep]))
            per_row = tuple(t[keep] for t in per_row)
        return rows, attention, per_row, finished
