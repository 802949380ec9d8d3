"""Builders that turn config groups into objects, and one explicit entry per stage.

Each stage reads top to bottom: build the parts it needs, run it, return the metric a sweeper optimises.
"""

from __future__ import annotations

import logging
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from toolmaster.errors import ConfigError
from toolmaster.models.loading import LoadedModel
from toolmaster.protocol.chat_format import ChatFormat, get_chat_format
from toolmaster.rewards import RewardGroup, build_reward_group
from toolmaster.samplers.base import GenerationEngine
from toolmaster.samplers.loop import RolloutConfig
from toolmaster.settings import EnvSettings, SamplerSettings
from toolmaster.worlds.base import World

log = logging.getLogger(__name__)


def plain(node: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]


def settings(node: DictConfig) -> Any:
    """Instantiate a settings record (nested ``_target_`` dicts are kept as plain dicts)."""
    data = plain(node)
    target = data.pop("_target_")
    from toolmaster.config import import_target

    return import_target(target, "settings")(**data)


def build_model(cfg: DictConfig) -> LoadedModel:
    return instantiate(cfg.model, _convert_="all")


def build_world(cfg: DictConfig) -> tuple[World, EnvSettings]:
    env: EnvSettings = settings(cfg.tools)
    world = instantiate(cfg.tools.world, _convert_="all")
    return world, env


def build_rewards(cfg: DictConfig) -> RewardGroup:
    return build_reward_group(plain(cfg.reward.components))


def chat_format_of(model: LoadedModel) -> ChatFormat:
    try:
        return get_chat_format(model.chat_format)
    except ValueError as exc:
        raise ConfigError(f"model.chat_format: {exc}") from None


def build_engine(sampler: SamplerSettings, model: LoadedModel, fmt: ChatFormat) -> GenerationEngine:
    if sampler.engine == "hf":
        from toolmaster.samplers.hf import HFEngine

        return HFEngine(model.model, model.tokenizer, stop_strings=fmt.tags.closing_tags())
    if sampler.engine == "vllm":
        from toolmaster.samplers.vllm_engine import VLLMEngine

        options = dict(sampler.vllm)
        options.setdefault("seed", sampler.seed)
        return VLLMEngine(model.model, model.tokenizer, stop_strings=fmt.tags.closing_tags(), **options)
    raise ConfigError(f"sampler.engine={sampler.engine!r} is not one of hf, vllm")


def rollout_config(sampler: SamplerSettings, env: EnvSettings, **overrides: Any) -> RolloutConfig:
    config = RolloutConfig(
        max_turns=sampler.max_turns,
        max_new_tokens=sampler.max_new_tokens,
        max_total_tokens=sampler.max_total_tokens,
        trial_budget=env.trial_budget,
        tool_timeout_s=env.timeout_s,
        max_observation_chars=env.max_observation_chars,
        temperature=sampler.temperature,
        top_p=sampler.top_p,
        n_samples=sampler.n_samples,
        seed=sampler.seed,
        batch_size=sampler.batch_size,
        max_steps_per_user_turn=sampler.max_steps_per_user_turn,
        strict_types=env.strict_types,
    )
    for key, value in overrides.items():
        if value is not None:
            setattr(config, key, value)
    return config


def run(cfg: DictConfig) -> float | None:
    """Dispatch to the configured stage; returns the stage's headline metric."""
    stage = cfg.stage.name
    if stage == "eval":
        from toolmaster.stages.evaluate import run_eval

        return run_eval(cfg)
    if stage == "synthesize":
        from toolmaster.stages.synthesize import run_synthesize

        return run_synthesize(cfg)
    if stage == "sft":
        from toolmaster.stages.sft import run_sft

        return run_sft(cfg)
    if stage == "grpo":
        from toolmaster.stages.grpo_runner import run_grpo

        return run_grpo(cfg)
    if stage == "pipeline":
        from toolmaster.stages.pipeline import run_pipeline_stage

        return run_pipeline_stage(cfg)
    raise ConfigError(f"stage.name={stage!r} has no runner; available: eval, synthesize, sft, grpo, pipeline")
