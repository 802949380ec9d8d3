"""Tensor math as plain functions (torch only: no Lightning, no Hugging Face): group advantages, GRPO losses,
log-probs of loss tokens (``logprobs``), packing trajectories into tensors (``packing``) and shared-prompt
forward passes (``prefix_sharing``)."""

from toolmaster.algorithms.advantages import group_advantages
from toolmaster.algorithms.losses import (
    entropy_from_logits,
    grpo_loss,
    k3_kl,
    masked_mean,
    masked_sum,
    token_logprobs,
)

__all__ = [
    "entropy_from_logits",
    "group_advantages",
    "grpo_loss",
    "k3_kl",
    "masked_mean",
    "masked_sum",
    "token_logprobs",
]
