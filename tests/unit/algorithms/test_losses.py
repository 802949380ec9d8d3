"""GRPO loss, token log-probs and entropy against hand-computed values and naive implementations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from toolmaster.algorithms.losses import (
    entropy_from_logits,
    grpo_loss,
    k3_kl,
    masked_mean,
    masked_sum,
    token_logprobs,
)

AGGREGATIONS = ["token_mean", "sequence_mean", "dr_grpo_constant"]


def _leaf(values: list[list[float]]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


# ---------------------------------------------------------------- masked reductions
def test_masked_sum_and_mean_ignore_masked_entries_even_inf() -> None:
    values = torch.tensor([[1.0, 2.0, float("inf")], [4.0, float("nan"), 6.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 1]])
    assert masked_sum(values, mask).item() == 13.0
    assert masked_mean(values, mask).item() == 13.0 / 4
    assert masked_mean(values, mask, dim=-1).tolist() == [1.5, 5.0]
    assert masked_sum(values, mask.bool(), dim=0).tolist() == [5.0, 2.0, 6.0]


def test_masked_mean_of_nothing_is_zero() -> None:
    assert masked_mean(torch.ones(2, 3), torch.zeros(2, 3)).item() == 0.0


# ---------------------------------------------------------------- ratio = 1 (on-policy)
# Two sequences of different lengths, ratio 1 everywhere, A = [1, -2]:
#   seq 0: 3 loss tokens, per-token loss -A = -1 each  -> sum -3
#   seq 1: 1 loss token,  per-token loss -A = +2       -> sum +2
#   token_mean       = (-3 + 2) / 4            = -0.25
#   sequence_mean    = mean(-3 / 3, 2 / 1)     =  0.5
#   dr_grpo_constant = (-3 + 2) / (2 * 4)      = -0.125   (max_tokens = 4)
# d loss / d logprob = -A * ratio / normaliser on loss tokens.
RATIO_ONE_MASK = [[1, 1, 1], [1, 0, 0]]


@pytest.mark.parametrize(
    ("aggregation", "expected_loss", "expected_grad"),
    [
        ("token_mean", -0.25, [[-0.25, -0.25, -0.25], [0.5, 0.0, 0.0]]),
        ("sequence_mean", 0.5, [[-1 / 6, -1 / 6, -1 / 6], [1.0, 0.0, 0.0]]),
        ("dr_grpo_constant", -0.125, [[-0.125, -0.125, -0.125], [0.25, 0.0, 0.0]]),
    ],
)
def test_ratio_one_is_minus_weighted_mean_advantage(
    aggregation: str, expected_loss: float, expected_grad: list[list[float]]
) -> None:
    logprobs = _leaf([[-1.0, -2.0, -0.5], [-0.3, -9.0, -9.0]])
    loss, stats = grpo_loss(
        logprobs,
        logprobs.detach().clone(),
        torch.tensor([1.0, -2.0], dtype=torch.float64),
        torch.tensor(RATIO_ONE_MASK),
        aggregation=aggregation,
        max_tokens=4,
    )
    assert loss.item() == pytest.approx(expected_loss)
    loss.backward()
    torch.testing.assert_close(logprobs.grad, torch.tensor(expected_grad, dtype=torch.float64))
    assert stats["clip_fraction"].item() == 0.0
    assert stats["ratio_mean"].item() == pytest.approx(1.0)
    assert stats["tokens"].item() == 4
    assert stats["kl"].item() == 0.0


# ---------------------------------------------------------------- aggregation with uneven per-token losses
# eps = 0.2. seq 0: mask [1, 1, 0], A = 1,    ratios [1.0, 1.1, (masked; log-ratio 100 would overflow)]
#                   per-token loss -min(r A, clip(r) A) = [-1.0, -1.1]                 sum -2.1, n 2
#            seq 1: mask [1, 1, 1], A = -0.5, ratios [1.0, 1.0, 0.9]  (0.9 inside [0.8, 1.2])
#                   per-token loss [0.5, 0.5, 0.45]                                    sum 1.45, n 3
#   token_mean       = (-2.1 + 1.45) / 5          = -0.13
#   sequence_mean    = (-2.1 / 2 + 1.45 / 3) / 2  = -0.283333...
#   dr_grpo_constant = (-2.1 + 1.45) / (2 * 10)   = -0.0325   (max_tokens = 10)
@pytest.mark.parametrize(
    ("aggregation", "expected"),
    [("token_mean", -0.13), ("sequence_mean", (-2.1 / 2 + 1.45 / 3) / 2), ("dr_grpo_constant", -0.0325)],
)
def test_aggregations_on_two_sequences_of_different_lengths(aggregation: str, expected: float) -> None:
    old = torch.tensor([[-1.0, -1.0, -101.0], [-2.0, -2.0, -2.0]], dtype=torch.float32)
    logprobs = old + torch.tensor([[0.0, math.log(1.1), 100.0], [0.0, 0.0, math.log(0.9)]])
    loss, stats = grpo_loss(
        logprobs.requires_grad_(),
        old,
        torch.tensor([1.0, -0.5]),
        torch.tensor([[1, 1, 0], [1, 1, 1]]),
        aggregation=aggregation,
        max_tokens=10,
    )
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert stats["policy_loss"].item() == pytest.approx(expected, abs=1e-6)
    assert stats["clip_fraction"].item() == 0.0
    assert stats["ratio_max"].item() == pytest.approx(1.1)
    assert stats["ratio_min"].item() == pytest.approx(0.9)
    assert stats["ratio_mean"].item() == pytest.approx((1.0 + 1.1 + 1.0 + 1.0 + 0.9) / 5)


def test_dr_grpo_constant_needs_max_tokens() -> None:
    lp = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="max_tokens"):
        grpo_loss(lp, lp, torch.ones(1), torch.ones(1, 2), aggregation="dr_grpo_constant")


def test_unknown_aggregation() -> None:
    lp = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="aggregation"):
        grpo_loss(lp, lp, torch.ones(1), torch.ones(1, 2), aggregation="mean")  # type: ignore[arg-type]


# ---------------------------------------------------------------- clipping
# eps = 0.2, one token per sequence, token_mean over 4 tokens:
#   A = +1, r = 1.5 -> min(1.5, 1.2)   = 1.2  -> loss -1.2  clipped (high), no gradient
#   A = +1, r = 0.5 -> min(0.5, 0.8)   = 0.5  -> loss -0.5  not clipped, grad -r A / 4 = -0.125
#   A = -1, r = 0.5 -> min(-0.5, -0.8) = -0.8 -> loss  0.8  clipped (low), no gradient
#   A = -1, r = 1.5 -> min(-1.5, -1.2) = -1.5 -> loss  1.5  not clipped, grad -r A / 4 = 0.375
#   token_mean = (-1.2 - 0.5 + 0.8 + 1.5) / 4 = 0.15; clip fraction 2 / 4 (low 1 / 4, high 1 / 4)
def test_clipping_on_both_sides() -> None:
    ratios = torch.tensor([[1.5], [0.5], [0.5], [1.5]], dtype=torch.float64)
    old = torch.full((4, 1), -1.0, dtype=torch.float64)
    logprobs = (old + ratios.log()).requires_grad_()
    loss, stats = grpo_loss(
        logprobs, old, torch.tensor([1.0, 1.0, -1.0, -1.0]), torch.ones(4, 1), clip_eps=0.2
    )
    assert loss.item() == pytest.approx(0.15)
    loss.backward()
    torch.testing.assert_close(
        logprobs.grad, torch.tensor([[0.0], [-0.125], [0.0], [0.375]], dtype=torch.float64)
    )
    assert stats["clip_fraction"].item() == pytest.approx(0.5)
    assert stats["clip_fraction_low"].item() == pytest.approx(0.25)
    assert stats["clip_fraction_high"].item() == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("clip_eps_high", "expected_loss", "clipped"),
    [
        (None, -1.2, True),  # symmetric: upper bound 1.2
        (0.28, -1.28, True),  # DAPO clip-higher: upper bound 1.28
        (0.5, -1.4, False),  # upper bound 1.5: ratio 1.4 passes
    ],
)
def test_asymmetric_clip_high(clip_eps_high: float | None, expected_loss: float, clipped: bool) -> None:
    old = torch.tensor([[-1.0]], dtype=torch.float64)
    loss, stats = grpo_loss(
        old + math.log(1.4),
        old,
        torch.tensor([1.0]),
        torch.ones(1, 1),
        clip_eps=0.2,
        clip_eps_high=clip_eps_high,
    )
    assert loss.item() == pytest.approx(expected_loss)
    assert stats["clip_fraction_high"].item() == (1.0 if clipped else 0.0)
    # the low side keeps clip_eps: ratio 0.7 < 0.8 with A < 0 is clipped whatever clip_eps_high is
    _, low = grpo_loss(
        old + math.log(0.7),
        old,
        torch.tensor([-1.0]),
        torch.ones(1, 1),
        clip_eps=0.2,
        clip_eps_high=clip_eps_high,
    )
    assert low["clip_fraction_low"].item() == 1.0


# ---------------------------------------------------------------- masking
@pytest.mark.parametrize("aggregation", AGGREGATIONS)
@pytest.mark.parametrize("kl_coef", [0.0, 0.1])
def test_mask_gives_exactly_zero_gradient(aggregation: str, kl_coef: float) -> None:
    generator = torch.Generator().manual_seed(0)
    shape = (3, 7)
    mask = torch.rand(shape, generator=generator) > 0.4
    mask[:, 0] = True
    logprobs = (-torch.rand(shape, generator=generator) * 3).requires_grad_()
    old = (
        logprobs.detach() + (torch.rand(shape, generator=generator) - 0.5) * 0.2
    )  # ratios within the clip range
    ref = -torch.rand(shape, generator=generator) * 3
    # garbage on masked positions (what prompt / observation slots may hold) must not leak
    old = torch.where(mask, old, torch.full(shape, -1e4))
    ref = torch.where(mask, ref, torch.full(shape, float("-inf")))
    loss, stats = grpo_loss(
        logprobs,
        old,
        torch.tensor([1.5, -0.7, 0.3]),
        mask.long(),
        aggregation=aggregation,
        max_tokens=16,
        ref_logprobs=ref,
        kl_coef=kl_coef,
    )
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(v) for v in stats.values())
    assert torch.equal(logprobs.grad[~mask], torch.zeros(int((~mask).sum())))
    assert (logprobs.grad[mask] != 0).all()


def test_fully_masked_sequence_is_left_out_of_sequence_mean() -> None:
    lp = torch.zeros(2, 2)
    loss, stats = grpo_loss(
        lp, lp, torch.tensor([1.0, 5.0]), torch.tensor([[1, 1], [0, 0]]), aggregation="sequence_mean"
    )
    assert loss.item() == pytest.approx(-1.0)
    assert stats["tokens"].item() == 2


# ---------------------------------------------------------------- KL
def test_k3_kl_is_zero_when_policies_agree_and_positive_otherwise() -> None:
    lp = torch.tensor([[-1.0, -2.0, -0.1]])
    assert torch.equal(k3_kl(lp, lp), torch.zeros_like(lp))
    other = lp + torch.tensor([[0.5, -0.5, 2.0]])
    assert (k3_kl(lp, other) > 0).all()
    # delta = ref - lp = 0.5: exp(0.5) - 0.5 - 1 = 0.148721...
    assert k3_kl(torch.tensor([0.0]), torch.tensor([0.5])).item() == pytest.approx(math.exp(0.5) - 1.5)


def test_kl_penalty_only_with_coef_and_reference() -> None:
    lp = torch.tensor([[-1.0, -1.0]], dtype=torch.float64)
    adv, mask = torch.tensor([1.0]), torch.tensor([[1, 1]])
    base, _ = grpo_loss(lp, lp, adv, mask)
    assert base.item() == pytest.approx(-1.0)

    same, stats = grpo_loss(lp, lp, adv, mask, ref_logprobs=lp.clone(), kl_coef=0.5)
    assert same.item() == pytest.approx(-1.0)
    assert stats["kl"].item() == 0.0

    ref = lp + torch.tensor([[0.5, 0.0]], dtype=torch.float64)  # k3 per token [0.148721, 0]
    kl_mean = (math.exp(0.5) - 1.5) / 2
    reported, stats = grpo_loss(lp, lp, adv, mask, ref_logprobs=ref, kl_coef=0.0)
    assert reported.item() == pytest.approx(-1.0)  # kl_coef 0: reported, not added
    assert stats["kl"].item() == pytest.approx(kl_mean)
    penalised, stats = grpo_loss(lp, lp, adv, mask, ref_logprobs=ref, kl_coef=0.5)
    assert penalised.item() == pytest.approx(-1.0 + 0.5 * kl_mean)
    assert stats["policy_loss"].item() == pytest.approx(-1.0)
    ignored, _ = grpo_loss(lp, lp, adv, mask, ref_logprobs=None, kl_coef=0.5)
    assert ignored.item() == pytest.approx(-1.0)


def test_kl_gradient_pulls_towards_reference() -> None:
    lp = torch.tensor([[-2.0]], requires_grad=True)
    ref = torch.tensor([[-1.0]])
    loss, _ = grpo_loss(lp, lp.detach(), torch.zeros(1), torch.ones(1, 1), ref_logprobs=ref, kl_coef=1.0)
    loss.backward()
    # d/dlp [exp(ref - lp) - (ref - lp) - 1] = 1 - exp(ref - lp) = 1 - e < 0: gradient descent raises lp
    assert lp.grad.item() == pytest.approx(1 - math.e)


# ---------------------------------------------------------------- token log-probs and entropy
def _naive_token_logprobs(logits: torch.Tensor, ids: torch.Tensor, temperature: float) -> torch.Tensor:
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return logp[:, :-1].gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("chunk_size", [1, 3, 1024])
def test_token_logprobs_matches_naive_gather(temperature: float, chunk_size: int) -> None:
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, 11, generator=generator) * 3
    ids = torch.randint(0, 11, (2, 5), generator=generator)
    got = token_logprobs(logits, ids, temperature=temperature, chunk_size=chunk_size)
    assert got.shape == (2, 4)
    torch.testing.assert_close(got, _naive_token_logprobs(logits, ids, temperature))


def test_token_logprobs_gradient_matches_naive() -> None:
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 4, 6, generator=generator, dtype=torch.float64)
    ids = torch.randint(0, 6, (2, 4), generator=generator)
    weights = torch.randn(2, 3, generator=generator, dtype=torch.float64)
    a = logits.clone().requires_grad_()
    b = logits.clone().requires_grad_()
    (token_logprobs(a, ids, chunk_size=2).double() * weights).sum().backward()
    (_naive_token_logprobs(b.double(), ids, 1.0).double() * weights).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6)


def test_token_logprobs_bf16_input_returns_float32() -> None:
    logits = torch.randn(1, 3, 8).to(torch.bfloat16)
    ids = torch.tensor([[1, 2, 3]])
    got = token_logprobs(logits, ids)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, _naive_token_logprobs(logits, ids, 1.0))


def test_token_logprobs_shape_errors() -> None:
    with pytest.raises(ValueError, match="disagree"):
        token_logprobs(torch.zeros(1, 3, 4), torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs(torch.zeros(1, 3, 4), torch.zeros(1, 3, dtype=torch.long), temperature=0.0)
    assert token_logprobs(torch.zeros(2, 1, 4), torch.zeros(2, 1, dtype=torch.long)).shape == (2, 0)


def test_entropy_uniform_peaked_and_masked() -> None:
    vocab = 8
    logits = torch.zeros(1, 3, vocab)  # uniform: entropy log 8
    logits[0, 1, 0] = 1e4  # one-hot: entropy 0
    logits[0, 2] = float("nan")  # masked position: ignored
    mask = torch.tensor([[1, 1, 0]])
    assert entropy_from_logits(logits, mask).item() == pytest.approx(math.log(vocab) / 2, abs=1e-5)
    only_uniform = torch.tensor([[1, 0, 0]])
    assert entropy_from_logits(logits, only_uniform).item() == pytest.approx(math.log(vocab), abs=1e-5)


def test_entropy_matches_naive() -> None:
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 4, 10, generator=generator)
    mask = torch.tensor([[1, 1, 0, 1], [0, 1, 1, 1]])
    p = F.softmax(logits, dim=-1)
    naive = -(p * F.log_softmax(logits, dim=-1)).sum(-1)
    expected = (naive * mask).sum() / mask.sum()
    torch.testing.assert_close(entropy_from_logits(logits, mask), expected)
