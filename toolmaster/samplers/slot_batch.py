"""The HF engine's token-level continuous batching over slots (``slot_cache``): turns continue in place.

Each batch row is a slot of the KV cache with its own length. When rows end their turn the rollout loop
gets their generations at once (``on_finish``) and hands back the episodes' next turns and any new
episodes. A next turn goes back into its episode's own slot: only the tokens appended since (tool
observation, generation prompt) are prefilled, written after the slot's cached columns, with no copy of
any cache. A new episode takes a free slot (or a new one), starting from the longest cached prefix of its
prompt (the prefix store, or a live slot's columns, copied into the slot). Slots nobody takes are dropped
before the next sampling step (the kept ones move forward in place, ``SlotKV.keep_slots``): between
episodes' ends, not per turn.

Steps: join (prefill the new requests into their slots, one forward pass over those slots only) -> sample
every slot's next token -> rows whose turn ended are parked and ``on_finish`` runs -> one decode step over
all slots (parked and freed slots are fed a padding token that their length does not count), or with
prompt-lookup drafts (``draft_tokens > 0``) one check of each row's sampled token and draft, its length
advancing by the accepted tokens only. Every row computes what it would compute alone: the same tokens
as the left-padded path under greedy decoding, and the same log-probs as a teacher-forced forward pass
(tests/unit/samplers/test_slot_batch.py). Rows share one random stream seeded by ``params.seed``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

import torch

from toolmaster.samplers.base import Generation, SamplingParams, TurnRequest
from toolmaster.samplers.kv_cache import KV
from toolmaster.samplers.prompt_lookup import pad_drafts
from toolmaster.samplers.slot_cache import SlotKV, as_model_mask, visible

if TYPE_CHECKING:
    from toolmaster.samplers.hf import HFEngine, _LiveRow

OnFinish = Callable[[list[tuple[Hashable, Generation]]], list[TurnRequest]]


class SlotBatch:
    """The live rows of one ``generate_continuous`` call, slot by slot, and the forward passes over them."""

    def __init__(self, engine: HFEngine, params: SamplingParams, generator: torch.Generator) -> None:
        self.engine = engine
        self.params = params
        self.generator = generator
        self.device = engine.device
        self.dtype = next(engine.model.parameters()).dtype
        self.kv = SlotKV(0, 2 * params.max_new_tokens + 2, params.max_new_tokens, engine.slot_kv_dtype())
        self.rows: list[_LiveRow | None] = []  # slot -> its row; None: a free slot
        self.lengths: list[int] = []  # slot -> columns written (the tokens it has fed)
        self.parked: dict[Hashable, int] = {}  # episodes whose turn ended, still in their slot
        self.logits: torch.Tensor | None = None  # [slots, vocab]: each slot's next-token logits
        self.exclude = torch.empty(0, dtype=torch.long, device=self.device)  # token each next draw skips
        self.tokens = torch.empty(0, dtype=torch.long, device=self.device)  # each slot's last sampled token

    # ---- the loop
    def run(self, requests: list[TurnRequest], on_finish: OnFinish) -> None:
        from toolmaster.samplers.hf import sample_tokens

        engine, pending = self.engine, list(requests)
        while True:
            if pending:
                self.join(pending)
                pending = []
            self.drop_free()
            if not self.rows:
                return
            assert self.logits is not None
            skip = self.exclude if bool((self.exclude >= 0).any()) else None
            self.tokens, logprobs = sample_tokens(self.logits, self.params, self.generator, skip)
            token_list, logprob_list = self.tokens.tolist(), logprobs.tolist()
            ended = [
                slot
                for slot, row in enumerate(self.rows)
                if row is not None and engine._append(row, token_list[slot], logprob_list[slot])
            ]
            if ended:
                pending = self.park(ended, on_finish)
            live = [slot for slot, row in enumerate(self.rows) if self._live(slot, row)]
            if not live:
                continue
            drafts = self._drafts(live) if engine.draft_tokens else []
            if any(drafts):
                ended = self.verify(live, drafts)
                if ended:
                    pending += self.park(ended, on_finish)
            else:
                self.decode(live)

    def _live(self, slot: int, row: _LiveRow | None) -> bool:
        return row is not None and self.parked.get(row.request.key) != slot

    # ---- rows joining, leaving
    def join(self, requests: list[TurnRequest]) -> None:
        """Place each request in a slot (its episode's own when parked there) and prefill what is new."""
        from toolmaster.samplers.hf import _LiveRow

        engine, cap = self.engine, self.params.max_new_tokens
        placed: list[tuple[int, list[int]]] = []  # (slot, prompt) of episodes new to a slot
        joined: list[int] = []
        for request in requests:
            row = _LiveRow(TurnRequest(request.key, request.prompt, max(1, min(request.cap, cap))))
            slot = self.parked.pop(request.key, None)
            if slot is not None and not self._continues(slot, request.prompt):
                self.rows[slot] = None  # its prompt does not extend what the slot holds: start over
                slot = None
            if slot is None:
                slot = self._free_slot()
                self.lengths[slot] = 0
                placed.append((slot, request.prompt))
            self.rows[slot] = row
            joined.append(slot)
        if placed and engine.share_prefixes:
            for slot, prompt in placed:
                self._reuse_prefix(slot, prompt)
            prompts = [prompt for _, prompt in placed]
            leaders = engine._share_within(prompts, [self.lengths[slot] for slot, _ in placed])
            if leaders:  # the leaders run first; their slots then hold the prefix the others share
                first = [placed[i][0] for i in leaders]
                self.prefill(first)
                joined = [slot for slot in joined if slot not in first]
                for slot, prompt in placed:
                    if slot not in first:
                        self._reuse_prefix(slot, prompt)
        if joined:
            self.prefill(joined)

    def _continues(self, slot: int, prompt: list[int]) -> bool:
        row = self.rows[slot]
        if row is None:
            return False
        fed = (row.request.prompt + row.ids)[: self.lengths[slot]]
        return len(fed) < len(prompt) and prompt[: len(fed)] == fed

    def _free_slot(self) -> int:
        for slot, row in enumerate(self.rows):
            if row is None:
                return slot
        self.kv.add_slots(1)
        self.rows.append(None)
        self.lengths.append(0)
        vocab = 0 if self.logits is None else self.logits.shape[1]
        filler = torch.zeros((1, vocab), device=self.device)
        self.logits = (
            filler if self.logits is None else torch.cat([self.logits, filler.to(self.logits.dtype)])
        )
        minus = torch.full((1,), -1, dtype=torch.long, device=self.device)
        self.exclude = torch.cat([self.exclude, minus])
        self.tokens = torch.cat([self.tokens, minus.clamp(min=0)])
        return len(self.rows) - 1

    def _reuse_prefix(self, slot: int, prompt: list[int]) -> None:
        """Copy the longest cached prefix of ``prompt`` (prefix store, saved caches, live slots) in."""
        engine = self.engine
        if not engine.share_prefixes:
            return
        head = prompt[: engine.min_shared_tokens]
        others: list[tuple[list[int], KV]] = list(engine._saved.values())
        for other, row in enumerate(self.rows):
            if row is None or other == slot or self.lengths[other] < engine.min_shared_tokens:
                continue
            fed = (row.request.prompt + row.ids)[: self.lengths[other]]
            if fed[: len(head)] == head:
                others.append((fed, self.kv.view(other, self.lengths[other])))
        length, kv = engine._prefixes.longest(prompt, others, engine.min_shared_tokens)
        if kv is None or length < max(engine.min_shared_tokens, self.lengths[slot] + 1):
            return
        self.kv.load(slot, kv)
        engine.shared_tokens += length - self.lengths[slot]
        self.lengths[slot] = length

    def park(self, ended: list[int], on_finish: OnFinish) -> list[TurnRequest]:
        """Rows whose turn ended: hand their generations to ``on_finish``; episodes that do not come back
        with a next turn free their slots."""
        finished = []
        for slot in ended:
            row = self.rows[slot]
            assert row is not None
            self.parked[row.request.key] = slot
            finished.append((row.request.key, self.engine._finish_row(row)))
        requests = on_finish(finished)
        back = {request.key for request in requests}
        for key, _ in finished:  # (rows parked by an earlier call of this step wait for their join)
            if key not in back:
                self.rows[self.parked.pop(key)] = None
        return requests

    def saved(self, key: Hashable) -> tuple[list[int], KV] | None:
        """A parked episode's fed tokens and a copy of its cache (for the prefix store), or None."""
        slot = self.parked.get(key)
        row = self.rows[slot] if slot is not None else None
        if slot is None or row is None:
            return None
        fed = (row.request.prompt + row.ids)[: self.lengths[slot]]
        return fed, self.kv.copy(slot, self.lengths[slot], self.dtype)  # the store keeps the model's dtype

    def drop_free(self) -> None:
        """Drop free slots (kept ones moved forward in place) so that no step computes a row nobody needs."""
        keep = [slot for slot, row in enumerate(self.rows) if row is not None]
        if len(keep) == len(self.rows):
            return
        assert not self.parked, "parked rows are resolved before slots are dropped"
        self.kv.keep_slots(keep)
        self.rows = [self.rows[slot] for slot in keep]
        self.lengths = [self.lengths[slot] for slot in keep]
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        assert self.logits is not None
        self.logits, self.exclude, self.tokens = self.logits[index], self.exclude[index], self.tokens[index]

    # ---- forward passes
    def _forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        query_columns: torch.Tensor,
        width: int,
        rows: list[int] | None,
        write_columns: torch.Tensor,
        keep_last: bool,
    ) -> Any:
        model = self.engine.model
        self.kv.set_plan(rows, write_columns, width)
        mask = as_model_mask(visible(query_columns, width), model, self.dtype)
        return model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=self.kv.cache,
            use_cache=True,
            **({"logits_to_keep": 1} if keep_last else {}),
        )

    def prefill(self, slots: list[int]) -> None:
        """One forward pass over ``slots``: each feeds its prompt's tokens after its cached columns
        (left-padded; padding writes the scratch column and sees column 0)."""
        rows = [self.rows[slot] for slot in slots]
        new = [row.request.prompt[self.lengths[slot] :] for slot, row in zip(slots, rows)]  # type: ignore[union-attr]
        width_n = max(len(tokens) for tokens in new)
        width = max(self.lengths[slot] + len(tokens) for slot, tokens in zip(slots, new))
        self.kv.reserve(width)
        input_ids = torch.full((len(slots), width_n), self.engine.pad_id, dtype=torch.long)
        query = torch.zeros((len(slots), width_n), dtype=torch.long)
        write = torch.full((len(slots), width_n), self.kv.scratch, dtype=torch.long)
        for b, (slot, tokens) in enumerate(zip(slots, new)):
            n, start = len(tokens), self.lengths[slot]
            input_ids[b, width_n - n :] = torch.tensor(tokens, dtype=torch.long)
            query[b, width_n - n :] = write[b, width_n - n :] = torch.arange(start, start + n)
        device = self.device
        out = self._forward(
            input_ids.to(device), query.to(device), query.to(device), width, slots, write.to(device), True
        )
        self.engine.prefill_tokens += sum(len(tokens) for tokens in new)
        index = torch.tensor(slots, dtype=torch.long, device=device)
        assert self.logits is not None
        logits = out.logits[:, -1, :]
        if self.logits.shape[1] != logits.shape[1]:  # the first prefill fixes the vocabulary width
            self.logits = self.logits.new_zeros((len(self.rows), logits.shape[1]))
        self.logits[index] = logits.to(self.logits.dtype)
        self.exclude[index] = -1
        for slot, tokens in zip(slots, new):
            self.lengths[slot] += len(tokens)

    def _fed_tokens(self, live: list[int]) -> torch.Tensor:
        """Each slot's token to feed: live rows their sampled token, the others padding."""
        tokens = torch.full((len(self.rows),), self.engine.pad_id, dtype=torch.long, device=self.device)
        index = torch.tensor(live, dtype=torch.long, device=self.device)
        tokens[index] = self.tokens[index]
        return tokens

    def decode(self, live: list[int]) -> None:
        """One token per slot; only live slots' lengths count it."""
        width = max(self.lengths) + 1
        self.kv.reserve(width)
        columns = torch.tensor(self.lengths, dtype=torch.long, device=self.device)[:, None]
        out = self._forward(self._fed_tokens(live)[:, None], columns, columns, width, None, columns, False)
        self.engine.decode_steps += 1
        self.logits = out.logits[:, -1, :]
        self.exclude = torch.full((len(self.rows),), -1, dtype=torch.long, device=self.device)
        for slot in live:
            self.lengths[slot] += 1

    def _drafts(self, live: list[int]) -> list[list[int]]:
        """Each slot's prompt-lookup draft (empty for slots that are not live)."""
        found = self.engine._drafts([self.rows[slot] for slot in live])  # type: ignore[misc]
        drafts: list[list[int]] = [[] for _ in self.rows]
        for slot, draft in zip(live, found):
            drafts[slot] = draft
        return drafts

    def verify(self, live: list[int], drafts: list[list[int]]) -> list[int]:
        """Feed each live slot its sampled token and its draft in one pass; lengths advance by what the
        acceptance rule keeps (``prompt_lookup``). Returns the slots whose turn ended on a draft token."""
        engine, device = self.engine, self.device
        draft_ids, present = pad_drafts(drafts, engine.pad_id)
        slots, width_q = len(self.rows), 1 + draft_ids.shape[1]
        block = torch.cat([self._fed_tokens(live).cpu()[:, None], draft_ids], dim=1).to(device)
        start = torch.tensor(self.lengths, dtype=torch.long, device=device)[:, None]
        columns = start + torch.arange(width_q, device=device)
        width = max(self.lengths) + width_q
        self.kv.reserve(width)
        out = self._forward(block, columns, columns, width, None, columns, False)
        engine.verify_steps += 1
        logits = out.logits.float()
        counts, draft_logprobs = engine._judge_drafts(
            logits, block, draft_ids, present, self.params, self.generator
        )
        after, exclude, ended = [0] * slots, [-1] * slots, []
        for slot in live:
            row, draft = self.rows[slot], drafts[slot]
            assert row is not None
            accepted, ends = engine._take_draft(row, draft, counts[slot], draft_logprobs[slot])
            if ends:
                ended.append(slot)
            # columns now holding fed tokens: the sampled one and accepted drafts, not a turn-ending one
            self.lengths[slot] += accepted if ends else 1 + accepted
            after[slot] = accepted
            exclude[slot] = draft[accepted] if not ends and accepted < len(draft) else -1
        self.logits = logits[torch.arange(slots, device=device), torch.tensor(after, device=device)]
        self.exclude = torch.tensor(exclude, dtype=torch.long, device=device)
        return ended
