"""Samplers: one engine-agnostic multi-turn rollout loop plus engines that generate one turn for a batch."""

from toolmaster.samplers.base import Generation, GenerationEngine, SamplingParams
from toolmaster.samplers.loop import RolloutConfig, rollout

__all__ = ["Generation", "GenerationEngine", "RolloutConfig", "SamplingParams", "rollout"]
