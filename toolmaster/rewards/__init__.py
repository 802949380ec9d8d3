"""Rewards: pure functions of a finished trajectory and its task, combined with weights."""

from toolmaster.rewards.compose import RewardGroup, build_reward_group

__all__ = ["RewardGroup", "build_reward_group"]
