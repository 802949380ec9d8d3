"""Policy log-probs of a GRPO micro-batch with each shared prompt run through the model once.

The G episodes of a GRPO group start from the same prompt (system turn with the tool schemas, the user query
and the generation prompt): in toolworld that is 340-360 of an episode's 450-730 tokens. The plain forward
pass (``toolmaster.algorithms.logprobs.policy_logprobs``) runs that prompt G times, with gradients. Here the
rows of a micro-batch are grouped by their prompt (``plan_prefixes``); each distinct prompt is run once, its
KV cache (with autograd history) is gathered to the rows that share it, and only the rows' own suffixes
(completions and observations) are run on top of it. The log-probs are those of the plain pass up to float
rounding, and so are the gradients: autograd sums each row's contribution into the shared prefix (tested
against the plain pass). Compute saved per group: (G - 1) x prompt length tokens of forward and backward.

Layout: prefixes ``[C, P]`` right-padded (C distinct prompts), suffixes ``[N, S]`` right-padded, row r
continuing prompt ``c(r)`` of length ``P_r``. The suffix pass sees the cache ``[prefix c(r) | pad]`` with
the attention mask zero on the pad and position ids ``P_r, P_r + 1, ...``, so every row computes what it
would compute alone (the HF sampler's cache reuse uses the same layout). Suffixes differ in length (one episode
answers at once, another calls three tools), so the rows are cut into suffix passes of similar length
(``suffix_chunks``: sorted by length, cut where the padding saved exceeds a pass's fixed cost); each pass is
padded only to its own longest row. The prefix length of a row is the
column of its first loss token (``loss_mask`` column t scores token t + 1 from the logits at position t), so
every logit the loss needs is computed in the suffix pass.

Not used (the caller falls back to the plain pass): when no two rows share a prompt, and when the model
trains with gradient checkpointing (transformers turns the KV cache off then).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from toolmaster.algorithms.fused_head import fsdp_sharded, fused_head_parts, head_logprobs
from toolmaster.algorithms.losses import entropy_from_logits

MIN_SHARED_TOKENS = 16  # below this many tokens saved, one plain pass is cheaper than two
# a suffix pass's fixed cost (dispatch, weight reads) in tokens of work; padding longer than this is cut off
PASS_OVERHEAD_TOKENS = 16


@dataclass(frozen=True)
class PrefixPlan:
    """Which rows share which prompt: ``prefix_of[r]`` indexes ``prefix_rows`` / ``prefix_lengths``."""

    prefix_rows: list[int]  # for each distinct prompt, a row that holds it
    prefix_lengths: list[int]  # its length in tokens
    prefix_of: list[int]  # row -> distinct prompt

    @property
    def saved_tokens(self) -> int:
        """Prompt tokens the plain pass would run and this one does not."""
        return sum(self.prefix_lengths[c] for c in self.prefix_of) - sum(self.prefix_lengths)


def score_columns(
    logits: Tensor, columns: Tensor, targets: Tensor, temperature: float
) -> tuple[Tensor, Tensor]:
    """Log-probs of ``targets`` ``[N, K]`` under ``logits / temperature`` at the kept ``columns``, and those
    scaled float32 logits. ``logits`` may hold every position (a model that ignored ``logits_to_keep``)."""
    if logits.size(1) != columns.numel():  # full logits (argument missing or ignored)
        logits = logits[:, columns]
    scaled = logits.float()
    if temperature != 1.0:
        scaled = scaled / temperature
    picked = -F.cross_entropy(scaled.flatten(0, 1), targets.flatten(), reduction="none").view_as(targets)
    return picked, scaled


def plan_prefixes(input_ids: Tensor, loss_mask: Tensor, lengths: Tensor) -> PrefixPlan:
    """Group rows by their prompt: the tokens before the first logit the loss needs (``[N, T]`` right-padded)."""
    has_loss = loss_mask.any(dim=1)
    first = torch.where(has_loss, loss_mask.int().argmax(dim=1), lengths - 1).tolist()
    ids = input_ids.tolist()
    index: dict[tuple[int, ...], int] = {}
    prefix_rows: list[int] = []
    prefix_lengths: list[int] = []
    prefix_of: list[int] = []
    for row, length in enumerate(first):
        key = tuple(ids[row][: max(length, 1)])
        if key not in index:
            index[key] = len(prefix_rows)
            prefix_rows.append(row)
            prefix_lengths.append(len(key))
        prefix_of.append(index[key])
    return PrefixPlan(prefix_rows, prefix_lengths, prefix_of)


def worth_sharing(model: Any, plan: PrefixPlan) -> bool:
    """Share prompts only when that saves work and the model keeps a KV cache while training. Not under FSDP
    while training: the prompt's KV cache reaches the suffix pass inside a cache object, past FSDP's
    pre-backward hooks, so the prompt pass's backward would find its layers resharded."""
    if getattr(model, "is_gradient_checkpointing", False) and model.training:
        return False
    if model.training and fsdp_sharded(model):
        return False
    return plan.saved_tokens >= MIN_SHARED_TOKENS


def shared_prefix_logprobs(
    model: Any,
    input_ids: Tensor,
    attention_mask: Tensor,
    loss_mask: Tensor,
    plan: PrefixPlan,
    temperature: float,
    with_entropy: bool = False,
    fused_head: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """Log-probs ``[N, T - 1]`` aligned with ``loss_mask`` (0.0 wherever it is 0), and optionally the
    summed entropy over the loss tokens (detached), computed with each distinct prompt run once; the suffix
    pass projects only the loss tokens, in chunks (``toolmaster.algorithms.fused_head``), where the model
    allows it and ``fused_head``."""
    device = input_ids.device
    rows, width = input_ids.shape
    lengths = attention_mask.sum(dim=1).tolist()
    pad_id = 0  # any id: padding is masked out

    # 1. the distinct prompts, right-padded, once each (only their KV cache is needed: one logit column)
    p_max = max(plan.prefix_lengths)
    prefix_ids = torch.full((len(plan.prefix_rows), p_max), pad_id, dtype=torch.long, device=device)
    prefix_att = torch.zeros_like(prefix_ids)
    for c, (row, length) in enumerate(zip(plan.prefix_rows, plan.prefix_lengths)):
        prefix_ids[c, :length] = input_ids[row, :length]
        prefix_att[c, :length] = 1
    # right-padded: no mask needed, SDPA's causal path (see logprobs.right_padded)
    prefix_out = model(input_ids=prefix_ids, use_cache=True, logits_to_keep=1)
    prefix_cache = prefix_out.past_key_values

    # 2. every row's suffix on top of its prompt's cache, in passes of rows of similar suffix length
    starts = [plan.prefix_lengths[c] for c in plan.prefix_of]
    suffix_lengths = [length - start for length, start in zip(lengths, starts)]
    parts = fused_head_parts(model) if fused_head else None
    fused = parts is not None and bool(loss_mask.any())  # project only the loss tokens' hidden states
    prefix_state = (prefix_cache, prefix_att, plan.prefix_of)
    hidden_at: list[Tensor] = []
    where_at: list[tuple[Tensor, Tensor]] = []  # (row, original column) of each scored hidden state
    full = None
    entropy = None
    for chunk in suffix_chunks(suffix_lengths):
        rows_t = torch.tensor(chunk, dtype=torch.long, device=device)
        inputs, suffix_cols, needed = _suffix_inputs(
            input_ids, loss_mask, rows_t, [starts[r] for r in chunk], suffix_lengths, prefix_state
        )
        if fused:  # the decoder's states at the loss tokens
            assert parts is not None
            decoder = parts[0]
            if not bool(needed.any()):
                continue
            hidden = decoder(**inputs).last_hidden_state
            local = needed.nonzero()
            hidden_at.append(hidden[local[:, 0], local[:, 1]])
            where_at.append((rows_t[local[:, 0]], suffix_cols[local[:, 0], local[:, 1]]))
            continue
        columns = needed.any(dim=0).nonzero().squeeze(-1)
        if columns.numel() == 0:
            columns = torch.zeros(1, dtype=torch.long, device=device)
        logits = model(**inputs, logits_to_keep=columns).logits
        original = suffix_cols[:, columns]  # [n, K] loss column of each computed logit
        kept = needed[:, columns]  # the row's own loss tokens (in range by construction)
        targets = input_ids[rows_t].gather(1, (original + 1).clamp(max=width - 1))
        picked, scaled = score_columns(logits, columns, targets, temperature)
        picked = torch.where(kept, picked, torch.zeros_like(picked))
        chunk_full = picked.new_zeros((len(chunk), width - 1)).scatter_add(
            1, original.clamp(max=width - 2), picked
        )
        full = (picked.new_zeros((rows, width - 1)) if full is None else full).index_add(
            0, rows_t, chunk_full
        )
        if with_entropy:
            with torch.no_grad():
                part = entropy_from_logits(scaled.detach(), kept) * kept.sum()
                entropy = part if entropy is None else entropy + part
    if fused:
        assert parts is not None
        weight = parts[1]
        rows_at = torch.cat([w[0] for w in where_at])
        original_at = torch.cat([w[1] for w in where_at])
        logprobs, entropies = head_logprobs(
            weight, torch.cat(hidden_at), input_ids[rows_at, original_at + 1], temperature, with_entropy
        )
        full = logprobs.new_zeros((rows, width - 1)).index_put((rows_at, original_at), logprobs)
        return full, entropies.sum().detach() if with_entropy else None
    assert full is not None  # every chunk took the logits path, and there is at least one row
    return full, entropy


def suffix_chunks(lengths: list[int], overhead: int = PASS_OVERHEAD_TOKENS) -> list[list[int]]:
    """Rows (indices into ``lengths``) grouped into suffix passes, longest first: each pass is padded to its
    longest row, so one pass over rows of very different lengths computes mostly padding. The cut minimises
    ``sum(rows x longest) + overhead x passes`` over the rows sorted by length (exact, by dynamic programming:
    a best cut only ever splits the sorted order)."""
    order = sorted(range(len(lengths)), key=lambda r: -lengths[r])
    sorted_lengths = [lengths[r] for r in order]
    n = len(order)
    best = [0.0] + [float("inf")] * n  # best[j]: cost of the first j sorted rows
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):
            cost = best[i] + (j - i) * sorted_lengths[i] + overhead
            if cost < best[j]:
                best[j], cut[j] = cost, i
    chunks: list[list[int]] = []
    j = n
    while j > 0:
        chunks.append(order[cut[j] : j])
        j = cut[j]
    return chunks[::-1]


def _suffix_inputs(
    input_ids: Tensor,
    loss_mask: Tensor,
    rows_t: Tensor,
    starts: list[int],
    suffix_lengths: list[int],
    prefix_state: tuple[Any, Tensor, list[int]],
) -> tuple[dict[str, Any], Tensor, Tensor]:
    """The model inputs of one suffix pass over rows ``rows_t``: their suffixes right-padded, on top of the
    KV cache of each row's prompt, with position ids continuing the prompt; and per suffix column its original
    loss column and whether some loss token needs its logit."""
    prefix_cache, prefix_att, prefix_of = prefix_state
    device = input_ids.device
    width = input_ids.shape[1]
    rows = rows_t.tolist()
    s_max = max(suffix_lengths[r] for r in rows)
    suffix_ids = torch.zeros((len(rows), s_max), dtype=torch.long, device=device)  # 0: padding, masked out
    suffix_att = torch.zeros((len(rows), s_max), dtype=torch.long, device=device)
    for i, (r, start) in enumerate(zip(rows, starts)):
        suffix_ids[i, : suffix_lengths[r]] = input_ids[r, start : start + suffix_lengths[r]]
        suffix_att[i, : suffix_lengths[r]] = 1
    start_t = torch.tensor(starts, dtype=torch.long, device=device)
    positions = start_t[:, None] + torch.arange(s_max, device=device)[None, :]
    gather = torch.tensor([prefix_of[r] for r in rows], dtype=torch.long, device=device)
    cache = type(prefix_cache)()  # a fresh cache of the model's kind (transformers' DynamicCache)
    for layer_index, layer in enumerate(prefix_cache.layers):
        cache.update(layer.keys.index_select(0, gather), layer.values.index_select(0, gather), layer_index)
    attention = torch.cat([prefix_att.index_select(0, gather), suffix_att], dim=1)
    # loss column t of row r is suffix column t - P_r
    suffix_cols = positions  # original column of each suffix column
    in_range = suffix_cols <= width - 2
    needed = torch.zeros((len(rows), s_max), dtype=torch.bool, device=device)
    needed[in_range] = loss_mask[rows_t].gather(1, suffix_cols.clamp(max=width - 2))[in_range]
    inputs = {
        "input_ids": suffix_ids,
        "attention_mask": attention,
        "position_ids": positions,
        "past_key_values": cache,
        "use_cache": True,
    }
    return inputs, suffix_cols, needed
