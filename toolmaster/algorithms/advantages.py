"""Group-relative advantages for GRPO-style training: every task is rolled out G times, and each episode's
reward is compared with the rewards of its own group only (no learned value function).

For a group of rewards ``r_1 .. r_G`` with mean ``m``:

- ``grpo`` (DeepSeekMath): ``A_i = (r_i - m) / (s + eps)``, with ``s`` the group's standard deviation;
- ``dr_grpo`` (Dr. GRPO, Liu et al. 2025): ``A_i = r_i - m``. Dividing by ``s`` up-weights groups whose
  rewards barely differ (nearly all right or all wrong), a question-difficulty bias; Dr. GRPO drops it.

Which standard deviation: the *population* one (divide by G, ``unbiased=False``). It is defined for a
group of one (a sample std divides by G - 1 = 0), and for a fixed G the two differ only by the constant
factor ``sqrt((G - 1) / G)``, which rescales every advantage equally and so acts like a learning-rate
change. Departure: TRL and the DeepSeekMath code use ``torch.std`` (the sample std); advantages here are
therefore ``sqrt((G - 1) / G)`` times theirs.

Groups with zero variance (all rewards equal, including groups of one) carry no learning signal and get an
advantage of exactly 0.0: they are detected with ``max == min`` rather than left to the floating-point
residue of ``r - mean`` (``(0.1 + 0.1 + 0.1) / 3 != 0.1``), which ``eps`` would otherwise blow up.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Estimator = Literal["grpo", "dr_grpo"]
ESTIMATORS: tuple[str, ...] = ("grpo", "dr_grpo")


def group_advantages(
    rewards: Tensor,
    estimator: Estimator = "grpo",
    eps: float = 1e-6,
    group_size: int | None = None,
) -> Tensor:
    """Per-episode advantages, the same shape as ``rewards``.

    ``rewards`` is ``[B, G]`` (B tasks, G samples each) or flat ``[B * G]`` with the samples of one task
    contiguous (the order rollouts come back in); a flat tensor needs ``group_size``. The result is float32
    or wider, detached from any graph, and never NaN for finite rewards.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    rewards = rewards.detach()
    if not rewards.is_floating_point() or rewards.dtype in (torch.float16, torch.bfloat16):
        rewards = rewards.float()
    if rewards.dim() == 1:
        if group_size is None:
            raise ValueError("flat rewards need group_size (the number of samples per task)")
        if group_size < 1 or rewards.numel() % group_size:
            raise ValueError(f"{rewards.numel()} rewards cannot be split into groups of {group_size}")
        grouped = rewards.view(-1, group_size)
    elif rewards.dim() == 2:
        if group_size is not None and group_size != rewards.shape[1]:
            raise ValueError(
                f"group_size={group_size} disagrees with rewards of shape {tuple(rewards.shape)}"
            )
        grouped = rewards
    else:
        raise ValueError(f"rewards must be [B, G] or [B * G], got shape {tuple(rewards.shape)}")
    if grouped.numel() == 0:
        return torch.zeros_like(rewards)

    mean = grouped.mean(dim=1, keepdim=True)
    centered = grouped - mean
    if estimator == "grpo":
        std = grouped.std(dim=1, keepdim=True, unbiased=False)
        advantages = centered / (std + eps)
    else:
        advantages = centered
    flat = (grouped.amax(dim=1, keepdim=True) == grouped.amin(dim=1, keepdim=True)).expand_as(grouped)
    advantages = torch.where(flat, torch.zeros_like(advantages), advantages)
    return advantages.reshape(rewards.shape)
