"""Prompt-lookup drafts for the HF engine's speculative decoding, and their exact acceptance.

When only a few rows are live (the tail of a rollout, where episodes ended at different turns), a decode
step is bound by reading the weights, not by arithmetic: feeding a row several tokens costs about what one
costs. Tool calls copy a lot from their context (tool and argument names from the schemas, values from the
query and from observations), so the tokens that followed the last occurrence of the row's latest n-gram
are a cheap guess at what comes next (prompt lookup decoding; no draft model). The engine feeds the sampled
token and the draft in one forward pass and keeps the longest accepted prefix.

Acceptance keeps the sampling distribution exact. A draft token ``d`` is a point-mass proposal, so the
speculative-sampling rule reduces to: accept ``d`` with probability ``p(d)`` under the sampling distribution
(temperature, nucleus); on rejection draw the next token from ``p`` with ``d`` removed and renormalised.
Then ``P(x) = p(d) [x = d] + (1 - p(d)) p(x) / (1 - p(d)) [x != d] = p(x)``. Greedy decoding accepts ``d``
iff it is the argmax, so greedy tokens equal those of one-token decoding. Only the random stream differs
from one-token decoding (fewer uniforms are drawn per token), and a multi-token forward pass may round
differently from a one-token one (the log-probs agree to the dtype's precision).
"""

from __future__ import annotations

import torch


class PromptLookup:
    """Latest continuation of every n-gram (n = 1..``max_ngram``) of one row's context, kept incrementally.

    ``draft(k)`` returns up to ``k`` tokens that followed the most recent earlier occurrence of the
    context's longest matching suffix n-gram (longest n first), or ``[]`` when no suffix of length
    >= ``min_ngram`` occurred before.
    """

    def __init__(self, context: list[int], max_ngram: int = 3, min_ngram: int = 1) -> None:
        self.max_ngram = max_ngram
        self.min_ngram = min_ngram
        self.tokens: list[int] = []
        self._next: dict[tuple[int, ...], int] = {}  # n-gram -> index of the token that followed it
        self.extend(context)

    def extend(self, tokens: list[int]) -> None:
        for token in tokens:
            # the n-grams ending at the current last token now have a continuation: this token
            end = len(self.tokens)
            for n in range(1, min(self.max_ngram, end) + 1):
                self._next[tuple(self.tokens[end - n : end])] = end
            self.tokens.append(token)

    def draft(self, k: int) -> list[int]:
        if k <= 0:
            return []
        end = len(self.tokens)
        for n in range(min(self.max_ngram, end), self.min_ngram - 1, -1):
            start = self._next.get(tuple(self.tokens[end - n :]))
            if start is not None:
                return self.tokens[start : start + k]
        return []


def nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """``probs`` cut to the smallest set of most likely tokens reaching ``top_p`` (unnormalised), over the
    last dimension; unchanged when ``top_p >= 1``."""
    if top_p >= 1.0:
        return probs
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    cumulative = sorted_probs.cumsum(dim=-1)
    drop = cumulative - sorted_probs > top_p  # keep the smallest prefix reaching top_p
    sorted_probs = sorted_probs.masked_fill(drop, 0.0)
    return torch.zeros_like(probs).scatter(-1, order, sorted_probs)


def pad_drafts(drafts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Drafts as a [rows, longest] tensor of ids (``pad_id`` after a short draft) and a boolean mask of the
    positions that hold draft tokens."""
    width = max((len(d) for d in drafts), default=0)
    ids = torch.full((len(drafts), width), pad_id, dtype=torch.long)
    present = torch.zeros((len(drafts), width), dtype=torch.bool)
    for j, draft in enumerate(drafts):
        ids[j, : len(draft)] = torch.tensor(draft, dtype=torch.long)
        present[j, : len(draft)] = True
    return ids, present


def accepted_lengths(
    logprobs: torch.Tensor,
    draft_ids: torch.Tensor,
    present: torch.Tensor,
    temperature: float,
    top_p: float,
    generator: torch.Generator | None,
) -> list[int]:
    """How many leading draft tokens each row accepts (``draft_ids`` / ``present`` from ``pad_drafts``).

    ``logprobs[j, i]`` is row j's next-token log-distribution before draft token i (under logits / T, the
    plain log-softmax when greedy, as ``sample_tokens`` computes it; position 0 follows the token sampled
    last, position i follows draft token i - 1). Greedy: a token is accepted iff it is the argmax;
    sampling: with its probability after the nucleus cut (one uniform per draft position).
    """
    rows, width = draft_ids.shape
    if width == 0:
        return [0] * rows
    draft_ids, present = draft_ids.to(logprobs.device), present.to(logprobs.device)
    head = logprobs[:, :width]
    if temperature <= 0:
        ok = head.argmax(dim=-1) == draft_ids
    else:
        probs = nucleus(head.exp(), top_p)
        chance = probs.gather(-1, draft_ids[..., None]).squeeze(-1) / probs.sum(dim=-1)
        uniform = torch.rand((rows, width), generator=generator, device=logprobs.device)
        ok = uniform < chance
    ok = ok & present
    return ok.long().cumprod(dim=1).sum(dim=1).tolist()
