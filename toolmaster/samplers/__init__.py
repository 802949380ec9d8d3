"""Samplers: a sampler = the multi-turn loop (samplers/loop.py) + an engine (one turn for a batch).

The loop (``rollout``, ``RolloutConfig``) is engine-agnostic: it renders prompts, parses each turn, runs the
calls in the environment and tokenizes the trajectory. An engine (a ``GenerationEngine``: ``hf.HFEngine``,
``vllm_engine.VLLMEngine``, ``scripted.ScriptedEngine``, the teachers' ``OpenAIEngine``) only generates one
assistant turn for a batch of prompts; ``engines.make_engine`` builds the one the ``sampler.engine`` node
names. The config group ``sampler`` holds both: the loop's limits and the ``engine`` node.
"""

from toolmaster.samplers.base import Generation, GenerationEngine, SamplingParams
from toolmaster.samplers.loop import RolloutConfig, rollout

__all__ = ["Generation", "GenerationEngine", "RolloutConfig", "SamplingParams", "rollout"]
