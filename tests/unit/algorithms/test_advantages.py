"""Group advantages on small hand-computed examples."""

from __future__ import annotations

import math

import pytest
import torch

from toolmaster.algorithms.advantages import group_advantages

EPS = 1e-6


def test_grpo_one_group_hand_computed() -> None:
    # rewards [1, 0, 0, 1]: mean 0.5, population std 0.5 -> (+-0.5) / (0.5 + eps)
    adv = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 1.0]]), "grpo", eps=EPS)
    expected = torch.tensor([[1.0, -1.0, -1.0, 1.0]]) * (0.5 / (0.5 + EPS))
    torch.testing.assert_close(adv, expected)


def test_grpo_uses_population_std_not_sample_std() -> None:
    # the sample std of [1, 0, 0, 1] is sqrt(1/3) = 0.577, which would give 0.866 instead of 1.0
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), "grpo", eps=0.0, group_size=4)
    assert adv.tolist() == pytest.approx([1.0, -1.0, -1.0, 1.0])
    assert adv[0].item() != pytest.approx(0.5 / math.sqrt(1 / 3))


def test_dr_grpo_is_centred_reward_without_std() -> None:
    adv = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 1.0]]), "dr_grpo")
    assert adv.tolist() == [[0.5, -0.5, -0.5, 0.5]]
    # rewards [3, 1, 2]: mean 2 -> [1, -1, 0]; grpo would divide by std sqrt(2/3)
    assert group_advantages(torch.tensor([[3.0, 1.0, 2.0]]), "dr_grpo").tolist() == [[1.0, -1.0, 0.0]]
    grpo = group_advantages(torch.tensor([[3.0, 1.0, 2.0]]), "grpo", eps=0.0)
    assert grpo[0].tolist() == pytest.approx([1 / math.sqrt(2 / 3), -1 / math.sqrt(2 / 3), 0.0])


def test_flat_rewards_are_grouped_contiguously() -> None:
    # [1, 0 | 0, 0 | 2, 4]: group 1 -> [0.5, -0.5], group 2 flat -> 0, group 3 -> [-1, 1]
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 4.0])
    assert group_advantages(rewards, "dr_grpo", group_size=2).tolist() == [0.5, -0.5, 0.0, 0.0, -1.0, 1.0]
    grpo = group_advantages(rewards, "grpo", eps=0.0, group_size=2)
    assert grpo.tolist() == [1.0, -1.0, 0.0, 0.0, -1.0, 1.0]
    assert grpo.shape == rewards.shape


@pytest.mark.parametrize("estimator", ["grpo", "dr_grpo"])
@pytest.mark.parametrize(
    "rewards",
    [
        [[0.1, 0.1, 0.1]],  # (0.1 + 0.1 + 0.1) / 3 != 0.1 in floating point
        [[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]],
        [[-3.7, -3.7]],
        [[5.0], [0.0], [1.0]],  # groups of one
    ],
)
def test_zero_variance_groups_give_exactly_zero(estimator: str, rewards: list[list[float]]) -> None:
    adv = group_advantages(torch.tensor(rewards), estimator, eps=EPS)
    assert torch.equal(adv, torch.zeros_like(adv))


@pytest.mark.parametrize("estimator", ["grpo", "dr_grpo"])
def test_mixed_groups_are_nan_free_and_zero_mean(estimator: str) -> None:
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.3, 0.3, 0.3, 0.3], [1.0, 1.0, 1.0, 1.0 + 1e-9]])
    adv = group_advantages(rewards, estimator, eps=EPS)
    assert torch.isfinite(adv).all()
    torch.testing.assert_close(adv.sum(dim=1), torch.zeros(3), atol=1e-5, rtol=0)
    assert torch.equal(adv[1], torch.zeros(4))


def test_single_element_groups_from_flat_rewards() -> None:
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.5]), "grpo", group_size=1)
    assert adv.tolist() == [0.0, 0.0, 0.0]


def test_integer_and_half_rewards_become_float() -> None:
    assert group_advantages(torch.tensor([[1, 0]]), "dr_grpo").tolist() == [[0.5, -0.5]]
    assert group_advantages(torch.tensor([[1, 0]], dtype=torch.bfloat16), "dr_grpo").dtype == torch.float32


def test_result_is_detached() -> None:
    rewards = torch.tensor([[1.0, 0.0]], requires_grad=True)
    assert not group_advantages(rewards, "grpo").requires_grad


@pytest.mark.parametrize(
    ("rewards", "kwargs", "message"),
    [
        (torch.zeros(4), {}, "group_size"),
        (torch.zeros(5), {"group_size": 2}, "cannot be split"),
        (torch.zeros(2, 3), {"group_size": 2}, "disagrees"),
        (torch.zeros(2, 2, 2), {}, r"\[B, G\]"),
        (torch.zeros(2, 2), {"estimator": "ppo"}, "estimator"),
    ],
)
def test_bad_arguments(rewards: torch.Tensor, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        group_advantages(rewards, **kwargs)
