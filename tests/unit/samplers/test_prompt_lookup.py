"""Prompt-lookup drafts and the acceptance rule that keeps speculative sampling exact."""

from __future__ import annotations

import pytest
import torch

from toolmaster.samplers.base import SamplingParams
from toolmaster.samplers.hf import sample_tokens
from toolmaster.samplers.prompt_lookup import PromptLookup, accepted_lengths, nucleus, pad_drafts


def test_draft_continues_the_latest_occurrence_of_the_longest_matching_suffix():
    context = [5, 6, 7, 1, 2, 5, 6, 9, 4, 5, 6]
    # suffix (5, 6) occurred twice; the latest continuation is 9, 4, 5, 6
    assert PromptLookup(context, max_ngram=2).draft(3) == [9, 4, 5]
    # with 3-grams the suffix (4, 5, 6) never occurred, so the 2-gram decides
    assert PromptLookup(context, max_ngram=3).draft(10) == [9, 4, 5, 6]
    assert PromptLookup([1, 2, 3], max_ngram=3).draft(4) == []  # the last token never occurred before
    assert PromptLookup([1, 2, 1], max_ngram=3).draft(0) == []
    assert PromptLookup([3, 1, 2, 3], max_ngram=3, min_ngram=2).draft(4) == []  # only a 1-gram matches
    assert PromptLookup([3, 1, 2, 3], max_ngram=3, min_ngram=1).draft(4) == [1, 2, 3]


def test_incremental_extension_equals_building_from_the_whole_context():
    gen = torch.Generator().manual_seed(0)
    context = torch.randint(0, 6, (80,), generator=gen).tolist()
    grown = PromptLookup(context[:30])
    for start in range(30, 80, 7):
        grown.extend(context[start : start + 7])
        whole = PromptLookup(context[: start + 7])
        assert grown.draft(5) == whole.draft(5)
        assert grown._next == whole._next


def test_greedy_accepts_exactly_the_argmax_prefix():
    logits = torch.full((2, 4, 10), -5.0)
    logits[0, 0, 3] = logits[0, 1, 4] = logits[0, 2, 7] = 1.0  # argmaxes: 3, 4, 7
    logits[1, 0, 2] = 1.0
    logprobs = torch.log_softmax(logits, -1)
    assert accepted_lengths(logprobs, *pad_drafts([[3, 4, 8], [2]], 0), 0.0, 1.0, None) == [2, 1]
    assert accepted_lengths(logprobs, *pad_drafts([[1, 4, 7], []], 0), 0.0, 1.0, None) == [0, 0]


@pytest.mark.parametrize("top_p", [1.0, 0.8])
def test_accept_or_draw_the_residual_samples_the_model_distribution(top_p):
    """One speculative token: accept the draft with p(draft), else draw from p without the draft. The
    marginal must equal p (after temperature and nucleus) whatever the draft."""
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, 1.5])
    params = SamplingParams(temperature=0.7, top_p=top_p)
    target = nucleus(torch.softmax(logits / 0.7, -1), top_p)
    target = target / target.sum()
    samples = 40_000
    generator = torch.Generator().manual_seed(0)
    for draft in (0, 3, 4):  # likely, unlikely, outside the nucleus at top_p 0.8
        rows = torch.log_softmax(logits / 0.7, -1).expand(samples, 1, -1)
        draft_ids, present = pad_drafts([[draft]] * samples, 0)
        accepted = torch.tensor(accepted_lengths(rows, draft_ids, present, 0.7, top_p, generator))
        exclude = torch.where(accepted == 1, -1, draft)
        residual, _ = sample_tokens(logits.expand(samples, -1), params, generator, exclude)
        tokens = torch.where(accepted == 1, draft, residual)
        observed = torch.bincount(tokens, minlength=len(logits)).double() / samples
        assert (observed - target.double()).abs().max() < 0.012, (draft, observed, target)
        assert not (residual[accepted == 0] == draft).any()


def test_sample_tokens_exclusion_keeps_the_full_log_probs():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    greedy, logprobs = sample_tokens(logits, SamplingParams(temperature=0), None, torch.tensor([0, -1]))
    assert greedy.tolist() == [1, 1]
    assert torch.allclose(logprobs, torch.log_softmax(logits, -1)[[0, 1], [1, 1]])
