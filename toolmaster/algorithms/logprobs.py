"""Log-probs of the labelled / loss tokens of a batch under a causal LM, computing logits only where needed.

``token_losses`` (SFT): summed next-token cross-entropy over labelled positions (labels ``IGNORE_INDEX``
elsewhere). ``policy_logprobs`` (GRPO): per-token log-probs under ``logits / temperature`` aligned with a
packed batch's loss mask, optionally with each group's shared prompt run once
(``toolmaster.algorithms.prefix_sharing``). Both project only what the loss scores: by default exactly the
scored (row, column) positions, in chunks (``toolmaster.algorithms.fused_head``); where the model does not allow
that, or with ``fused_head=False``, every column some row scores (``logits_to_keep``). Prompts and observations
are most of an episode's tokens.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from toolmaster.algorithms.fused_head import scored_logprobs
from toolmaster.algorithms.losses import entropy_from_logits
from toolmaster.algorithms.packing import PackedBatch
from toolmaster.algorithms.prefix_sharing import (
    plan_prefixes,
    score_columns,
    shared_prefix_logprobs,
    worth_sharing,
)

IGNORE_INDEX = -100  # the label of a position that carries no loss


def right_padded(attention_mask: Tensor) -> bool:
    """Every row is real tokens then padding (``1 .. 1 0 .. 0``). Such a batch needs no attention mask in a
    causal LM: a real position never attends to a later one, so padding is invisible to it, and positions count
    from 0 either way; without the mask SDPA takes its causal path, which skips the masked half of the scores
    (``token_losses``: the same loss, about a third less attention time on CPU)."""
    if attention_mask.dim() != 2:
        return False
    lengths = attention_mask.sum(dim=1, keepdim=True)
    columns = torch.arange(attention_mask.size(1), device=attention_mask.device).unsqueeze(0)
    return bool(torch.equal(attention_mask.bool(), columns < lengths))


def token_losses(
    model: Any, batch: dict[str, torch.Tensor], causal_shortcut: bool = True, fused_head: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of next-token cross-entropies over labelled positions, number of labelled positions).

    Logits are computed only at positions whose next token is labelled in some row (``logits_to_keep``):
    prompts and observations are most of an episode's tokens, and the vocabulary projection over them is
    most of the cost for small models with large vocabularies (and most of the memory for large ones).
    A right-padded batch (what ``stage=sft`` collates) runs without its attention mask (``right_padded``)
    unless ``causal_shortcut=False`` (``toolmaster.bench.sft_step``'s reference). ``fused_head``: project
    only the labelled positions, in chunks (``toolmaster.algorithms.fused_head``), where the model allows it.
    """
    targets = batch["labels"][:, 1:]
    scored = targets != IGNORE_INDEX
    mask = batch["attention_mask"]
    inputs = {
        "input_ids": batch["input_ids"],
        "attention_mask": None if causal_shortcut and right_padded(mask) else mask,
    }
    if fused_head and bool(scored.any()):
        fused = scored_logprobs(model, batch["input_ids"], inputs["attention_mask"], targets, scored)
        if fused is not None:
            return -fused[0].sum(), scored.sum()
    keep = scored.any(dim=0).nonzero().squeeze(-1)
    if keep.numel() == 0:
        keep = torch.zeros(1, dtype=torch.long, device=targets.device)
    try:
        logits = model(**inputs, logits_to_keep=keep).logits
    except TypeError:  # a model without logits_to_keep: project every position, then select
        logits = model(**inputs).logits[:, keep]
    if logits.size(1) != keep.numel():  # logits_to_keep accepted but ignored
        logits = logits[:, keep]
    targets = targets[:, keep]
    total = F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return total, (targets != IGNORE_INDEX).sum()


def policy_logprobs(
    model: Any,
    batch: PackedBatch,
    temperature: float,
    with_entropy: bool = False,
    share_prompts: bool = False,
    fused_head: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """Log-probs ``[N, T - 1]`` of ``batch.input_ids`` under ``logits / temperature``, aligned with
    ``batch.loss_mask`` (the layout of ``token_logprobs``), and optionally the summed entropy over the loss
    tokens (detached).

    Logits are computed only at columns where some row has a loss token (``logits_to_keep``): prompts and
    observations are most of an episode, and the vocabulary projection plus its float32 log-softmax over
    them would dominate compute and memory. Columns without a loss token in any row hold 0.0; masked entries
    of computed columns hold real values that the loss masks out.

    ``share_prompts``: rows that start from the same prompt (a GRPO group) run it once
    (``toolmaster.algorithms.prefix_sharing``); same values, less compute. A right-padded batch (what packing
    builds) runs without its attention mask, on SDPA's causal path (``right_padded``). ``fused_head``: the
    plain pass projects only the loss positions, in chunks (``toolmaster.algorithms.fused_head``), where the
    model allows it; masked entries then hold 0.0.
    """
    mask = batch.loss_mask
    if share_prompts:
        plan = plan_prefixes(batch.input_ids, mask, batch.lengths)
        if worth_sharing(model, plan):
            return shared_prefix_logprobs(
                model,
                batch.input_ids,
                batch.attention_mask,
                mask,
                plan,
                temperature,
                with_entropy,
                fused_head,
            )
    attention = batch.attention_mask
    inputs = {"input_ids": batch.input_ids, "attention_mask": None if right_padded(attention) else attention}
    if fused_head and bool(mask.any()):
        scored = mask.bool()
        targets = batch.input_ids[:, 1:]
        fused = scored_logprobs(
            model, batch.input_ids, inputs["attention_mask"], targets, scored, temperature, with_entropy
        )
        if fused is not None:
            logprobs, entropies, where = fused
            full = logprobs.new_zeros(mask.shape).index_put((where[:, 0], where[:, 1]), logprobs)
            return full, entropies.sum().detach() if with_entropy else None
    columns = mask.any(dim=0).nonzero().squeeze(-1)
    if columns.numel() == 0:
        columns = torch.zeros(1, dtype=torch.long, device=mask.device)
    try:
        logits = model(**inputs, logits_to_keep=columns).logits
    except TypeError:  # a model without logits_to_keep
        logits = model(**inputs).logits
    picked, scaled = score_columns(logits, columns, batch.input_ids[:, columns + 1], temperature)
    full = picked.new_zeros(mask.shape).index_copy(1, columns, picked)
    entropy = None
    if with_entropy:
        with torch.no_grad():
            kept = mask[:, columns]
            entropy = entropy_from_logits(scaled.detach(), kept) * kept.sum()
    return full, entropy
