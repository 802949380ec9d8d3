"""Inverse-CDF token draws: the right distribution, never a zero-probability token, seeded."""

from __future__ import annotations

import torch

from toolmaster.samplers.hf import draw


def test_draws_follow_the_distribution_and_skip_zero_probability_tokens():
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.3, 0.15, 0.05, 0.0]]).repeat(100_000, 1)
    tokens = draw(probs * 3.0, torch.Generator().manual_seed(0))  # unnormalised input is fine
    counts = torch.bincount(tokens, minlength=7).double() / len(tokens)
    assert counts[[0, 2, 6]].sum() == 0
    assert torch.allclose(counts, probs[0].double(), atol=0.005)


def test_draws_are_reproducible_per_seed_and_row_independent():
    probs = torch.softmax(torch.randn(4, 1000, generator=torch.Generator().manual_seed(1)), -1)
    a = draw(probs, torch.Generator().manual_seed(5))
    b = draw(probs, torch.Generator().manual_seed(5))
    c = draw(probs, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    one_hot = torch.zeros(3, 1000)
    one_hot[torch.arange(3), torch.tensor([0, 500, 999])] = 1.0
    assert draw(one_hot, None).tolist() == [0, 500, 999]
