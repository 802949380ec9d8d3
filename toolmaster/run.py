"""The job: dispatch ``stage.name`` to its stage's ``run(cfg)`` and return the stage's headline metric.

A null ``data.eval_splits`` (the default) is filled first with the world's own splits but the training split
(``toolmaster.build.resolve_eval_splits``), so a user's world evaluates on the splits it has.

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

# The stages that read ``data.eval_splits``: a null one becomes the world's own splits before they start.
READS_EVAL_SPLITS = ("eval", "grpo")


def run(cfg: DictConfig) -> float | None:
    """Run the configured stage; returns its headline metric (what a sweeper optimises)."""
    name = cfg.stage.name
    if name not in STAGES:
        raise ConfigError(f"stage.name={name!r} has no runner; available: {', '.join(STAGES)}")
    if name in READS_EVAL_SPLITS:
        from toolmaster.build import resolve_eval_splits

        resolve_eval_splits(cfg)
    return importlib.import_module(STAGES[name]).run(cfg)
