"""Token log-probabilities, entropy and the clipped GRPO policy loss, as plain tensor functions.

Notation: B sequences (episodes), T token positions, ``mask[b, t] = 1`` on tokens the policy sampled (the
trajectory's ``loss_mask``: tool observations, prompts and padding are 0), ``A_b`` the episode advantage.
Per token, with ``ratio = exp(logprob - old_logprob)``::

    loss_t = -min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A)  [+ kl_coef * k3_t]

``eps_high`` defaults to ``eps_low``; a larger one is DAPO's "clip-higher". When ``old_logprobs`` equal the
current ones (one optimiser step per batch, fully on-policy) the ratio is 1, nothing is clipped and the
gradient is the plain policy gradient ``-A * grad logprob``.

The KL penalty towards a frozen reference policy uses Schulman's k3 estimator, as in the GRPO paper:
``k3 = exp(ref - logprob) - (ref - logprob) - 1``, which is >= 0 per token, 0 where the policies agree, and an
unbiased estimate of KL(policy || ref) for tokens sampled from the policy. It is added per token before
aggregation, and only when ``kl_coef > 0`` and ``ref_logprobs`` is given (it is reported whenever
``ref_logprobs`` is given).

Aggregations of the per-token loss ``L[b, t]`` (N_b = tokens of sequence b, N = sum N_b):

- ``token_mean``:  ``sum L / N``. Every token weighs the same (DAPO); long episodes weigh more in total.
- ``sequence_mean``: ``mean_b (sum_t L[b] / N_b)``, the original GRPO objective. Each episode weighs the
  same, so a token of a short episode weighs more: the length bias Dr. GRPO points out (a wrong answer's
  penalty is diluted by rambling). Sequences with no loss token are left out of the mean.
- ``dr_grpo_constant``: ``sum L / (B * max_tokens)``, Dr. GRPO's constant normaliser (``max_tokens`` is
  the generation budget, fixed for the run), which removes the length bias and keeps the loss scale the
  same from batch to batch.

Departures from the papers: the multi-turn episode is one sequence, and the loss covers only the model's
own tokens (observations are masked out), as in agentic RL work after the paper; masked positions are
replaced *before* ``exp`` so garbage log-probabilities there (prompt positions hold 0.0) can neither
overflow nor leak NaN into the gradient, which is exactly 0 on every masked token.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Aggregation = Literal["token_mean", "sequence_mean", "dr_grpo_constant"]
AGGREGATIONS: tuple[str, ...] = ("token_mean", "sequence_mean", "dr_grpo_constant")


def masked_sum(values: Tensor, mask: Tensor, dim: int | tuple[int, ...] | None = None) -> Tensor:
    """Sum of ``values`` where ``mask`` is non-zero (masked entries may hold inf / NaN)."""
    keep = mask.bool()
    picked = torch.where(keep, values, torch.zeros((), dtype=values.dtype, device=values.device))
    return picked.sum() if dim is None else picked.sum(dim=dim)


def masked_mean(values: Tensor, mask: Tensor, dim: int | tuple[int, ...] | None = None) -> Tensor:
    """Mean of ``values`` over the non-zero entries of ``mask``; 0.0 where nothing is selected."""
    count = mask.bool().sum() if dim is None else mask.bool().sum(dim=dim)
    return masked_sum(values, mask, dim) / count.clamp_min(1).to(values.dtype)


def token_logprobs(
    logits: Tensor, input_ids: Tensor, temperature: float = 1.0, chunk_size: int = 1024
) -> Tensor:
    """Log-probability of each next token: ``out[b, t] = log p(input_ids[b, t + 1] | input_ids[b, :t + 1])``.

    ``logits`` is ``[B, T, V]`` (the model's output for ``input_ids`` ``[B, T]``); the result is ``[B, T - 1]``
    in float32, position t scoring token t + 1, i.e. aligned with ``input_ids[:, 1:]`` (and with
    ``loss_mask[:, 1:]`` of a trajectory). Logits are divided by ``temperature`` first, so log-probs match
    those of a sampler that used the same temperature.

    Memory: the full ``[B, T, V]`` log-softmax is never built. Rows of at most ``chunk_size`` positions are
    cast to float32 and scored as ``logit[token] - logsumexp(logits)``, so the extra peak memory is one
    ``chunk_size x V`` float32 block when no gradient is needed (old / reference log-probs). With gradients
    autograd keeps each chunk's float32 copy for the backward pass.
    """
    if logits.dim() != 3 or input_ids.dim() != 2 or logits.shape[:2] != input_ids.shape:
        raise ValueError(
            f"logits [B, T, V] and input_ids [B, T] disagree: {tuple(logits.shape)} vs {tuple(input_ids.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    batch, length, vocab = logits.shape
    if length < 2:
        return logits.new_zeros((batch, 0), dtype=torch.float32)
    flat_logits = logits[:, :-1, :].reshape(-1, vocab)
    flat_targets = input_ids[:, 1:].reshape(-1, 1)
    pieces = []
    for start in range(0, flat_logits.shape[0], chunk_size):
        chunk = flat_logits[start : start + chunk_size].float()
        if temperature != 1.0:
            chunk = chunk / temperature
        picked = chunk.gather(1, flat_targets[start : start + chunk_size]).squeeze(1)
        pieces.append(picked - torch.logsumexp(chunk, dim=-1))
    return torch.cat(pieces).view(batch, length - 1)


def entropy_from_logits(logits: Tensor, mask: Tensor) -> Tensor:
    """Mean entropy (nats) of the next-token distributions at the positions where ``mask`` is non-zero.

    ``logits`` ``[B, T, V]``, ``mask`` ``[B, T]``; computed in float32 as ``logsumexp(z) - sum softmax(z) z``.
    """
    if logits.shape[:-1] != mask.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and mask {tuple(mask.shape)} disagree")
    z = logits.float()
    entropy = torch.logsumexp(z, dim=-1) - (F.softmax(z, dim=-1) * z).sum(dim=-1)
    return masked_mean(entropy, mask)


def k3_kl(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """Per-token k3 estimate of KL(policy || ref): ``exp(ref - lp) - (ref - lp) - 1`` (>= 0)."""
    delta = ref_logprobs - logprobs
    return torch.exp(delta) - delta - 1.0


def aggregate(
    per_token: Tensor, mask: Tensor, aggregation: Aggregation, max_tokens: int | None = None
) -> Tensor:
    """Reduce a ``[B, T]`` per-token loss to a scalar (see the module docstring)."""
    if aggregation == "token_mean":
        return masked_mean(per_token, mask)
    if aggregation == "sequence_mean":
        per_sequence = masked_mean(per_token, mask, dim=-1)
        has_tokens = mask.bool().any(dim=-1)
        return masked_mean(per_sequence, has_tokens)
    if aggregation == "dr_grpo_constant":
        if max_tokens is None or max_tokens <= 0:
            raise ValueError(
                "aggregation='dr_grpo_constant' needs max_tokens > 0 (the generation token budget)"
            )
        return masked_sum(per_token, mask) / float(per_token.shape[0] * max_tokens)
    raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")


def grpo_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_eps: float = 0.2,
    clip_eps_high: float | None = None,
    aggregation: Aggregation = "token_mean",
    max_tokens: int | None = None,
    ref_logprobs: Tensor | None = None,
    kl_coef: float = 0.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped GRPO policy loss and detached statistics.

    ``logprobs`` (with grad), ``old_logprobs``, ``mask`` and optional ``ref_logprobs`` are ``[B, T]`` and
    aligned with each other; ``advantages`` is ``[B]`` (one per episode, broadcast over its tokens).
    ``mask`` is 0/1 (bool or numeric). Returns ``(loss, stats)``; stats are detached 0-dim float tensors:
    ``policy_loss`` (the aggregated surrogate without KL), ``kl`` (masked mean k3, 0 without
    ``ref_logprobs``), ``clip_fraction`` (share of loss tokens whose gradient the clip removes),
    ``clip_fraction_low`` / ``clip_fraction_high`` (ratio below 1 - eps with A < 0 / above 1 + eps_high with
    A > 0), ``ratio_mean`` / ``ratio_min`` / ``ratio_max`` and ``tokens``.
    """
    if logprobs.shape != old_logprobs.shape or logprobs.shape != mask.shape:
        raise ValueError(
            f"logprobs {tuple(logprobs.shape)}, old_logprobs {tuple(old_logprobs.shape)} and mask "
            f"{tuple(mask.shape)} must have the same [B, T] shape"
        )
    if advantages.shape != logprobs.shape[:1]:
        raise ValueError(f"advantages must be [B]={logprobs.shape[0]}, got {tuple(advantages.shape)}")
    if ref_logprobs is not None and ref_logprobs.shape != logprobs.shape:
        raise ValueError(
            f"ref_logprobs {tuple(ref_logprobs.shape)} must match logprobs {tuple(logprobs.shape)}"
        )
    if clip_eps < 0 or (clip_eps_high is not None and clip_eps_high < 0):
        raise ValueError(f"clip ranges must be >= 0, got clip_eps={clip_eps}, clip_eps_high={clip_eps_high}")
    if kl_coef < 0:
        raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    eps_high = clip_eps if clip_eps_high is None else clip_eps_high
    keep = mask.bool()
    zero = torch.zeros((), dtype=logprobs.dtype, device=logprobs.device)

    # Masked positions get log-ratio 0 before exp: no overflow there, and an exactly-zero gradient.
    log_ratio = torch.where(keep, logprobs - old_logprobs.detach(), zero)
    ratio = torch.exp(log_ratio)
    adv = advantages.detach().to(logprobs.dtype).unsqueeze(-1)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + eps_high) * adv
    per_token = -torch.minimum(unclipped, clipped)
    policy_loss = aggregate(per_token, keep, aggregation, max_tokens)

    loss = policy_loss
    kl = zero.detach()
    if ref_logprobs is not None:
        # log(ref / policy) per token, 0 on masked positions (k3(0) = 0 with zero gradient).
        delta = torch.where(keep, ref_logprobs.detach() - logprobs, zero)
        kl_per_token = torch.exp(delta) - delta - 1.0
        kl = masked_mean(kl_per_token.detach(), keep)
        if kl_coef > 0:
            loss = policy_loss + kl_coef * aggregate(kl_per_token, keep, aggregation, max_tokens)

    with torch.no_grad():
        low = keep & (ratio < 1.0 - clip_eps) & (adv < 0)
        high = keep & (ratio > 1.0 + eps_high) & (adv > 0)
        tokens = keep.sum()
        denom = tokens.clamp_min(1).float()
        inf = torch.full((), float("inf"), dtype=ratio.dtype, device=ratio.device)
        one = torch.ones((), dtype=ratio.dtype, device=ratio.device)
        ratio_min, ratio_max = torch.where(keep, ratio, inf).min(), torch.where(keep, ratio, -inf).max()
        stats = {
            "policy_loss": policy_loss.detach().float(),
            "kl": kl.float(),
            "clip_fraction": (low | high).sum().float() / denom,
            "clip_fraction_low": low.sum().float() / denom,
            "clip_fraction_high": high.sum().float() / denom,
            "ratio_mean": masked_mean(ratio, keep).float(),
            "ratio_min": torch.where(tokens > 0, ratio_min, one).float(),
            "ratio_max": torch.where(tokens > 0, ratio_max, one).float(),
            "tokens": tokens.float(),
        }
    return loss, stats
