"""The job: dispatch ``stage.name`` to its stage's ``run(cfg)`` and return the stage's headline metric.

Only this module imports ``toolmaster.stages`` (``tests/test_architecture.py``); nothing imports it but the
Hydra entry point (``toolmaster.__main__``), which imports it lazily.
"""

from __future__ import annotations

import importlib

from omegaconf import DictConfig

from toolmaster.errors import ConfigError

STAGES = {
    "eval": "toolmaster.stages.evaluate",
    "synthesize": "toolmaster.stages.synthesize",
    "sft": "toolmaster.stages.sft",
    "grpo": "toolmaster.stages.grpo",
    "pipeline": "toolmaster.stages.pipeline",
}


def run(cfg: DictConfig) -> float | None:
    """Run the configured stage; returns its headline metric (what a sweeper optimises)."""
    name = cfg.stage.name
    if name not in STAGES:
        raise ConfigError(f"stage.name={name!r} has no runner; available: {', '.join(STAGES)}")
    return importlib.import_module(STAGES[name]).run(cfg)
