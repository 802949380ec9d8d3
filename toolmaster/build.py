"""Builders that turn config groups into objects; every stage builds its parts through these.

Nothing here imports a stage (``tests/test_architecture.py``): stages import the builders, ``toolmaster.run``
dispatches to the stages.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from toolmaster.config import instantiate_node
from toolmaster.errors import ConfigError
from toolmaster.models.loading import LoadedModel
from toolmaster.protocol.chat_format import ChatFormat, get_chat_format
from toolmaster.rewards import RewardGroup, build_reward_group
from toolmaster.samplers.base import GenerationEngine
from toolmaster.samplers.engines import make_engine
from toolmaster.samplers.loop import RolloutConfig
from toolmaster.settings import DataSettings, EnvSettings, SamplerSettings
from toolmaster.training.precision import resolve_training_precision
from toolmaster.worlds.base import World


def plain(node: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]


def build_settings(node: DictConfig) -> Any:
    """Instantiate a group's settings record (``toolmaster.settings``); nested ``_target_`` nodes stay plain
    dicts, for the stage to build when it needs them."""
    return instantiate_node(node, "settings", recursive=False)


def build_model(cfg: DictConfig, **overrides: Any) -> LoadedModel:
    """The ``model`` node's model, with ``overrides`` in place of its keys (the config is not changed)."""
    return instantiate(cfg.model, _convert_="all", **overrides)


def build_policy(cfg: DictConfig, trainer_kwargs: dict[str, Any]) -> tuple[LoadedModel, ChatFormat]:
    """The model a training stage trains and its chat format. ``trainer.precision=auto`` is resolved first (in
    ``trainer_kwargs``), since it decides the weights' dtype (``toolmaster.training.precision``); ``cfg.model``
    keeps its own ``dtype``."""
    _, dtype = resolve_training_precision(trainer_kwargs, str(cfg.model.get("dtype", "auto")))
    loaded = build_model(cfg, dtype=dtype)
    return loaded, chat_format_of(loaded)


def build_world(cfg: DictConfig) -> tuple[World, EnvSettings]:
    env: EnvSettings = build_settings(cfg.tools)
    world = instantiate(cfg.tools.world, _convert_="all")
    if world.suite.origin is None:  # how the tool host rebuilds this world in its own process
        world.suite.origin = plain(cfg.tools.world)
    world.suite.isolation = env.isolation_settings()
    return world, env


def eval_splits_of(world: World, data: DataSettings) -> list[str]:
    """``data.eval_splits``, or where it is null the world's own splits but ``data.train_split`` (all of them
    when that leaves none): a user's world evaluates on the splits it has unless told otherwise."""
    if data.eval_splits is not None:
        return list(data.eval_splits)
    return [split for split in world.splits if split != data.train_split] or list(world.splits)


def resolve_eval_splits(cfg: DictConfig) -> None:
    """Fill a null ``data.eval_splits`` with the world's own splits (``eval_splits_of``), before a stage reads it."""
    if cfg.get("data") is None or cfg.data.get("eval_splits", None) is not None:
        return
    world = instantiate(cfg.tools.world, _convert_="all")
    splits = eval_splits_of(world, build_settings(cfg.data))
    with read_write(cfg), open_dict(cfg):
        cfg.data.eval_splits = splits


def build_rewards(cfg: DictConfig) -> RewardGroup:
    return build_reward_group(plain(cfg.reward.components))


def build_logger(cfg: DictConfig) -> Any:
    """The ``logger`` group's Lightning logger, or False without one."""
    return instantiate(cfg.logger, _convert_="all") if cfg.get("logger") else False


def chat_format_of(model: LoadedModel) -> ChatFormat:
    try:
        return get_chat_format(model.chat_format)
    except ValueError as exc:
        raise ConfigError(f"model.chat_format: {exc}") from None


def build_engine(sampler: SamplerSettings, model: LoadedModel, fmt: ChatFormat) -> GenerationEngine:
    """The ``sampler.engine`` node around the loaded model."""
    return make_engine(sampler.engine, model.model, model.tokenizer, fmt)


def rollout_config(sampler: SamplerSettings, env: EnvSettings, **overrides: Any) -> RolloutConfig:
    """Episode limits from ``sampler`` (same field names), the trial budget and tool limits from ``tools``, and
    the non-null ``overrides``."""
    shared = {f.name: getattr(sampler, f.name) for f in fields(RolloutConfig) if hasattr(sampler, f.name)}
    config = RolloutConfig(
        **shared,
        trial_budget=env.trial_budget,
        tool_timeout_s=env.timeout_s,
        max_observation_chars=env.max_observation_chars,
        strict_types=env.strict_types,
    )
    return replace(config, **{key: value for key, value in overrides.items() if value is not None})
