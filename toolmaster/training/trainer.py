"""The Lightning Trainer of a training stage, and fit followed by the final validation.

``build_trainer`` takes the ``trainer`` group's arguments and adds what the stages need: the periodic and
final ``last.ckpt`` checkpoints, a learning-rate monitor when there is a logger, the validation cadence, and
no distributed sampler (the stages' batch samplers shard themselves across ranks).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.plugins.environments import SLURMEnvironment

from toolmaster.training.checkpoints import CHECKPOINT_DIR, LAST, FinalCheckpoint
from toolmaster.training.metrics_history import keep_metrics_history
from toolmaster.training.slurm_requeue import RequeueOnSignal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cadence:
    """When a run checkpoints and validates, in Lightning steps (optimizer updates) and training batches."""

    checkpoint_every_n_steps: int
    val_every_n_steps: int | None = None  # None: once per epoch


def build_trainer(
    trainer_cfg: dict[str, Any],
    output_dir: Path,
    cadence: Cadence,
    logger: Any,
    has_val: bool,
    extra_callbacks: list[Callback] | None = None,
) -> pl.Trainer:
    """The Lightning Trainer from the ``trainer`` group plus checkpointing, validation cadence and logging."""
    kwargs = dict(trainer_cfg)
    kwargs.pop("_target_", None)
    kwargs["strategy"] = build_strategy(kwargs.get("strategy", "auto"))
    callbacks: list[Callback] = list(kwargs.pop("callbacks", None) or []) + list(extra_callbacks or [])
    if kwargs.get("enable_checkpointing", True):
        callbacks.append(
            FinalCheckpoint(output_dir / CHECKPOINT_DIR / LAST, cadence.checkpoint_every_n_steps)
        )
        callbacks.append(
            ModelCheckpoint(
                dirpath=str(output_dir / CHECKPOINT_DIR),
                save_top_k=0,
                save_last=True,
                every_n_train_steps=cadence.checkpoint_every_n_steps,
                enable_version_counter=False,  # always last.ckpt, never last-v1.ckpt
            )
        )
    if logger:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    if SLURMEnvironment.detect() and not kwargs.get("plugins"):
        # preemption: our handler saves at a step boundary (training.slurm_requeue), Lightning's is turned off
        kwargs["plugins"] = [SLURMEnvironment(auto_requeue=False)]
        callbacks.append(RequeueOnSignal())
    kwargs.update(
        logger=logger,
        callbacks=callbacks,
        default_root_dir=str(output_dir),
        use_distributed_sampler=False,  # the batch samplers shard themselves across ranks
    )
    if not has_val:
        kwargs["limit_val_batches"] = 0
    elif cadence.val_every_n_steps is not None:
        kwargs["val_check_interval"] = cadence.val_every_n_steps * int(
            kwargs.get("accumulate_grad_batches") or 1
        )
        kwargs["check_val_every_n_epoch"] = None
    return pl.Trainer(**kwargs)


def build_strategy(strategy: Any) -> Any:
    """``trainer.strategy``: a name Lightning knows (``ddp``) as is, a ``_target_`` node (``fsdp_*``) built."""
    if isinstance(strategy, dict) and "_target_" in strategy:
        from hydra.utils import instantiate

        return instantiate(strategy, _convert_="all")
    return strategy


def as_float(value: Any) -> float | None:
    return None if value is None else float(value)


def fit(trainer: pl.Trainer, module: pl.LightningModule, datamodule: Any, ckpt_path: Path | None) -> None:
    if ckpt_path is not None:
        log.info("resuming from %s", ckpt_path)
        for path in keep_metrics_history(trainer.loggers):
            log.info("appending to the metrics history in %s", path)
    trainer.fit(
        module, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None, weights_only=False
    )


def final_validation(trainer: pl.Trainer, module: Any, datamodule: Any, metric: str) -> float | None:
    """``metric`` at the final step: the fit-time validation if it ran at that step, else one more run."""
    last: tuple[int, float] | None = module.last_validation
    if last is not None and last[0] == trainer.global_step:
        return last[1]
    results = trainer.validate(module, datamodule=datamodule, verbose=False)
    return as_float(results[0].get(metric)) if results else None
