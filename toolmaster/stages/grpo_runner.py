"""``run_grpo(cfg)``: build the parts of ``stage=grpo`` from the config, train, validate, export.

``python -m toolmaster stage=grpo model=hf model.path=<sft run>/hf trainer.max_steps=200`` trains the
configured model (full fine-tuning, or LoRA with ``model.lora.enabled=true``) on ``data.train_split`` with the
configured ``trainer`` (``cpu``, ``ddp_cpu``: 2 gloo processes, ``ddp_gpu``) and ``logger``, and writes to the
run directory:

- ``logs/metrics.csv`` (the CSV logger): ``train/reward/total``, ``train/reward/<component>``,
  ``train/success``, ``train/trial_calls``, ``train/execution_calls``, ``train/tool_error_rate``,
  ``train/response_tokens``, ``train/kl``, ``train/clip_fraction``, ``train/entropy``, ``train/loss``,
  ``train/time/{rollout,score,update}`` every step, and ``val/<split>/<metric>`` plus ``val/success`` at
  each validation (greedy episodes on ``data.eval_splits``, at most ``data.eval_limit`` tasks each, every
  ``stage.val_every_n_steps`` GRPO steps and at the end; off when that is null);
- ``trajectories/train.jsonl``: every ``stage.log_trajectories_every`` steps, one group of full episodes
  (trajectory records plus ``grpo_step``, ``rank`` and ``advantage``), from rank 0;
- ``checkpoints/last.ckpt`` (every ``stage.checkpoint_every_n_steps`` GRPO steps and at the end), from which
  ``stage.resume=auto`` continues (model, optimizer, schedule, step and position in the task order);
- ``hf/``: the final model in Hugging Face format (the SFT stage's export; LoRA merged by default), and
  ``grpo_summary.json``;
- ``metrics.json`` when validation ran: the final validation as split -> metrics (``stage=eval``'s layout), which
  ``python -m toolmaster.sweep`` aggregates over a multirun (``+experiment=ablation``).

Trainer arguments are the ``trainer`` group's, with three GRPO-specific readings: ``trainer.max_steps``
counts GRPO steps (Lightning counts ``stage.mu`` optimizer updates per step, so it is given ``max_steps *
mu``); ``trainer.gradient_clip_val`` is applied by the module (Lightning's automatic clipping does not exist
under manual optimization); ``trainer.accumulate_grad_batches`` must be 1 (use ``stage.tasks_per_step`` for
bigger batches and ``stage.micro_batch_size`` to bound memory).

Returns the mean success over the validation splits when validation ran, else the final step's mean train
reward.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig

from toolmaster.errors import ConfigError
from toolmaster.io import write_json_atomic
from toolmaster.settings import DataSettings, GRPOSettings, SamplerSettings
from toolmaster.stages.grpo import GRPODataModule, GRPOModule
from toolmaster.stages.precision import resolve_training_precision
from toolmaster.stages.sft import CHECKPOINT_DIR, EXPORT_DIR, build_trainer, resolve_resume
from toolmaster.sweep import nest_metrics

log = logging.getLogger(__name__)

SUMMARY = "grpo_summary.json"
METRICS = "metrics.json"


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def grpo_trainer_kwargs(trainer_cfg: dict[str, Any], mu: int) -> tuple[dict[str, Any], float | None]:
    """The Lightning Trainer kwargs for GRPO and the gradient-clipping norm the module applies itself."""
    kwargs = dict(trainer_cfg)
    max_steps = kwargs.get("max_steps")
    if not isinstance(max_steps, int) or max_steps < 1:
        raise ConfigError(
            f"stage=grpo needs trainer.max_steps >= 1 (the number of GRPO steps), got {max_steps}"
        )
    accumulate = kwargs.pop("accumulate_grad_batches", 1) or 1
    if accumulate != 1:
        raise ConfigError(
            "stage=grpo does not use trainer.accumulate_grad_batches (set it to 1); "
            "raise stage.tasks_per_step for bigger batches, stage.micro_batch_size bounds memory"
        )
    clip = kwargs.pop("gradient_clip_val", None)
    algorithm = kwargs.pop("gradient_clip_algorithm", None)
    if algorithm not in (None, "norm"):
        raise ConfigError(
            f"stage=grpo clips gradients by norm only, got trainer.gradient_clip_algorithm={algorithm}"
        )
    kwargs["max_steps"] = max_steps * mu
    return kwargs, (float(clip) if clip else None)


def run_grpo(cfg: DictConfig) -> float | None:
    from hydra.utils import instantiate

    from toolmaster.run import (
        build_engine,
        build_model,
        build_rewards,
        build_world,
        chat_format_of,
        plain,
        rollout_config,
        settings,
    )

    stage: GRPOSettings = settings(cfg.stage)
    data: DataSettings = settings(cfg.data)
    sampler: SamplerSettings = settings(cfg.sampler)
    if sampler.temperature <= 0:
        raise ConfigError("stage=grpo samples groups of episodes: sampler.temperature must be > 0")
    trainer_kwargs, max_grad_norm = grpo_trainer_kwargs(plain(cfg.trainer), stage.mu)
    world, env = build_world(cfg)
    train_tasks = world.tasks(data.train_split, data.train_limit)
    validate = stage.val_every_n_steps is not None
    val_tasks = {split: world.tasks(split, data.eval_limit) for split in data.eval_splits} if validate else {}
    rewards = build_rewards(cfg)
    output_dir = Path(cfg.output_dir)
    ckpt_path = resolve_resume(stage.resume, output_dir / CHECKPOINT_DIR, hpc_dir=output_dir)
    pl.seed_everything(stage.seed, workers=True, verbose=False)

    resolve_training_precision(trainer_kwargs, cfg.model)  # precision=auto; fp32 master weights
    loaded = build_model(cfg)
    fmt = chat_format_of(loaded)
    module = GRPOModule(
        loaded.model,
        loaded.tokenizer,
        fmt,
        world.suite,
        rewards,
        rollout_config(sampler, env, n_samples=stage.group_size),
        stage,
        engine=build_engine(sampler, loaded, fmt),
        val_config=rollout_config(sampler, env, temperature=0.0, n_samples=1),
        val_splits=list(val_tasks),
        max_grad_norm=max_grad_norm,
        output_dir=output_dir,
    )
    datamodule = GRPODataModule(train_tasks, stage.tasks_per_step, stage.seed, val_tasks)
    logger = instantiate(cfg.logger, _convert_="all") if cfg.get("logger") else False
    # build_trainer counts Lightning steps: mu optimizer updates per GRPO step.
    schedule = SimpleNamespace(
        checkpoint_every_n_steps=stage.checkpoint_every_n_steps * stage.mu,
        val_every_n_steps=stage.val_every_n_steps,
    )
    trainer = build_trainer(trainer_kwargs, output_dir, schedule, logger, has_val=validate)  # type: ignore[arg-type]
    if ckpt_path is not None:
        log.info("resuming from %s", ckpt_path)
    trainer.fit(
        module, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None, weights_only=False
    )
    train_reward = _float(trainer.callback_metrics.get("train/reward/total"))

    val_success = None
    if validate:
        if module.last_validation is not None and module.last_validation[0] == trainer.global_step:
            val_success = module.last_validation[1]  # validated at the final step already
        else:
            results = trainer.validate(module, datamodule=datamodule, verbose=False)
            val_success = _float(results[0].get("val/success")) if results else None
    result = val_success if val_success is not None else train_reward
    if not trainer.is_global_zero:
        return result

    summary: dict[str, Any] = {
        "grpo_steps": trainer.global_step // stage.mu,
        "optimizer_steps": trainer.global_step,
        "train_reward": train_reward,
        "train_success": _float(trainer.callback_metrics.get("train/success")),
        "val_success": val_success,
        "resumed_from": str(ckpt_path) if ckpt_path else None,
        "model": loaded.name,
        "world_size": trainer.world_size,
    }
    if validate:
        summary["val"] = {
            key: float(value) for key, value in trainer.callback_metrics.items() if key.startswith("val/")
        }
        # the final validation as split -> metrics, the layout of stage=eval that toolmaster.sweep aggregates
        write_json_atomic(output_dir / METRICS, nest_metrics(summary["val"]))
    if stage.export:
        from toolmaster.stages.export import export_hf

        info = {
            "base_model": loaded.name,
            "chat_format": loaded.chat_format,
            "global_step": trainer.global_step,
            "grpo_steps": summary["grpo_steps"],
            "stage": "grpo",
        }
        module.model.eval()
        export_dir = export_hf(
            module.model,
            loaded.tokenizer,
            output_dir / EXPORT_DIR,
            merge=stage.merge,
            inplace=True,
            info=info,
        )
        summary["export_dir"] = str(export_dir)
        print(f"exported the model to {export_dir} (load it with model=hf model.path={export_dir})")
    write_json_atomic(output_dir / SUMMARY, summary)
    print(json.dumps({k: summary[k] for k in ("grpo_steps", "train_reward", "val_success")}))
    return result
