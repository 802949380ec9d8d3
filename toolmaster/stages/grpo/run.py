"""``run(cfg)`` of ``stage=grpo``: build the parts from the config, train, validate, export.

``python -m toolmaster stage=grpo model=hf model.path=<sft run>/hf trainer.max_steps=200`` trains the
configured model (full fine-tuning, or LoRA with ``model/lora=enabled``) on ``data.train_split`` with the
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
  ``python -m toolmaster.sweep`` aggregates over a multirun (``+experiment=ablation``), and its episodes in
  ``val_trajectories/<split>.jsonl`` (gathered from every process; each validation replaces the previous one's),
  which ``python -m toolmaster.analyze`` reads as an arm;
- ``.done`` last: a hash of the resolved config and the run's result. Run again in the same directory with the
  same config and ``stage.resume=auto``, the run returns that result at once instead of loading anything, so a
  sweep started again after an interruption (``+experiment=ablation``) repeats none of its finished jobs; with
  another config (e.g. more ``trainer.max_steps``) it resumes from ``checkpoints/last.ckpt`` as before.

Trainer arguments are the ``trainer`` group's, with three GRPO-specific readings: ``trainer.max_steps``
counts GRPO steps (Lightning counts ``stage.mu`` optimizer updates per step, so it is given ``max_steps *
mu``); ``trainer.gradient_clip_val`` is applied by the module (Lightning's automatic clipping does not exist
under manual optimization); ``trainer.accumulate_grad_batches`` must be 1 (use ``stage.tasks_per_step`` for
bigger batches and ``stage.micro_batch_size`` to bound memory).

Returns the mean success over the validation splits when validation ran, else the final step's mean train
reward.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from toolmaster.build import (
    build_engine,
    build_logger,
    build_policy,
    build_rewards,
    build_settings,
    build_world,
    plain,
    rollout_config,
)
from toolmaster.errors import ConfigError
from toolmaster.io import write_json_atomic
from toolmaster.metrics import nest_metrics
from toolmaster.samplers.loop import rollout
from toolmaster.samplers.rollout_copy import CastCopyEngine, resolve_rollout_dtype
from toolmaster.settings import DataSettings, GRPOSettings, SamplerSettings
from toolmaster.stages.grpo.data import GRPODataModule
from toolmaster.stages.grpo.module import GRPOModule
from toolmaster.stages.grpo.pass_rate import filter_tasks
from toolmaster.training.checkpoints import CHECKPOINT_DIR, resolve_resume
from toolmaster.training.export import export_final
from toolmaster.training.gather import full_state_dict
from toolmaster.training.trainer import Cadence, as_float, build_trainer, final_validation, fit

log = logging.getLogger(__name__)

SUMMARY = "grpo_summary.json"
METRICS = "metrics.json"
DONE = ".done"


def config_fingerprint(cfg: DictConfig) -> str:
    """sha256 of the resolved config: equal exactly when a rerun would train and evaluate the same thing."""
    text = json.dumps(OmegaConf.to_container(cfg, resolve=True), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def finished_result(output_dir: Path, fingerprint: str) -> tuple[bool, float | None]:
    """(True, result) when ``output_dir/.done`` records a finished run of this config, else (False, None)."""
    try:
        record = json.loads((output_dir / DONE).read_text())
    except (OSError, ValueError):
        return False, None
    if not isinstance(record, dict) or record.get("config_sha256") != fingerprint:
        return False, None
    return True, record.get("result")


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


def pass_rate_tasks(
    stage: GRPOSettings,
    module: GRPOModule,
    tasks: list[Any],
    trainer: pl.Trainer,
    output_dir: Path,
    resuming: bool = False,
    policy: str = "",
) -> list[Any]:
    """``stage.pass_rate_samples``: the training tasks the starting policy solves sometimes, played with the
    module's engine (a half-precision copy where ``stage.rollout_dtype`` gives one) at the sampling temperature."""
    if trainer.world_size > 1:
        raise ConfigError(
            "stage.pass_rate_samples > 0 runs on one process (every rank would need the same list)"
        )

    engines: list[Any] = []  # built on the first chunk played (not when a record is reused), then kept

    def play(batch: list[Any], config: Any) -> list[Any]:
        if not engines:
            engine = module.engine
            weights = next(module.model.parameters()).dtype
            strategy = type(trainer.strategy).__name__
            dtype = resolve_rollout_dtype(
                stage.rollout_dtype, str(trainer.precision), engine, strategy, weights
            )
            if dtype is not None:
                engine = CastCopyEngine(engine.for_model, dtype)  # type: ignore[attr-defined]
                engine.sync_weights(module.model)
            engines.append(engine)
        return rollout(engines[0], module.tokenizer, module.fmt, module.suite, batch, config)

    kept = filter_tasks(
        tasks,
        play,
        module.rollout_config,
        stage.pass_rate_samples,
        stage.pass_rate_min,
        stage.pass_rate_max,
        stage.seed,
        stage.pass_rate_candidates,
        output_dir,
        resuming=resuming,
        policy=policy,
    )
    considered = min(len(tasks), stage.pass_rate_candidates or len(tasks))
    print(f"grpo: the pass-rate filter kept {len(kept)} of {considered} tasks")
    if len(kept) < stage.tasks_per_step:
        log.warning(
            "the pass-rate filter kept %d task(s), fewer than stage.tasks_per_step=%d: every step plays the same"
            " few tasks",
            len(kept),
            stage.tasks_per_step,
        )
    return kept


def run(cfg: DictConfig) -> float | None:
    stage: GRPOSettings = build_settings(cfg.stage)
    data: DataSettings = build_settings(cfg.data)
    sampler: SamplerSettings = build_settings(cfg.sampler)
    trainer_kwargs, max_grad_norm = grpo_trainer_kwargs(plain(cfg.trainer), stage.mu)
    output_dir = Path(cfg.output_dir)
    fingerprint = config_fingerprint(cfg)
    if str(stage.resume).lower() == "auto":
        finished, previous = finished_result(output_dir, fingerprint)
        if finished:
            print(
                f"grpo: {output_dir} finished earlier with this config ({DONE}), skipped; result {previous}"
            )
            return previous
    ckpt_path = resolve_resume(stage.resume, output_dir / CHECKPOINT_DIR, hpc_dir=output_dir)

    # 1. data: the world's tasks (unknown splits fail before the model loads)
    world, env = build_world(cfg)
    train_tasks = data.train_tasks(world)
    validate = stage.val_every_n_steps is not None
    val_tasks = {split: world.tasks(split, data.eval_limit) for split in data.eval_splits} if validate else {}
    rewards = build_rewards(cfg)
    pl.seed_everything(stage.seed, workers=True, verbose=False)

    # 2. module
    loaded, fmt = build_policy(cfg, trainer_kwargs)
    module = GRPOModule(
        loaded.model,
        loaded.tokenizer,
        fmt,
        world.suite,
        rewards,
        rollout_config(sampler, env),  # the module sets group_size samples, greedy validation, checks T > 0
        stage,
        engine=build_engine(sampler, loaded, fmt),
        val_splits=list(val_tasks),
        max_grad_norm=max_grad_norm,
        output_dir=output_dir,
        task_pool=train_tasks,
    )
    cadence = Cadence(stage.checkpoint_every_n_steps * stage.mu, stage.val_every_n_steps)
    trainer = build_trainer(trainer_kwargs, output_dir, cadence, build_logger(cfg), has_val=validate)
    if stage.pass_rate_samples:  # the tasks the starting policy solves sometimes (stages/grpo/pass_rate.py)
        policy = str(cfg.model.get("path") or loaded.name)
        train_tasks = pass_rate_tasks(
            stage, module, train_tasks, trainer, output_dir, ckpt_path is not None, policy
        )
        module.set_task_pool(train_tasks)
    datamodule = GRPODataModule(train_tasks, stage.tasks_per_step, stage.seed, val_tasks)

    # 3. run: Lightning counts optimizer updates, mu per GRPO step
    fit(trainer, module, datamodule, ckpt_path)
    train_reward = as_float(trainer.callback_metrics.get("train/reward/total"))
    val_success = final_validation(trainer, module, datamodule, "val/success") if validate else None
    result = val_success if val_success is not None else train_reward
    # sharded (fsdp_*) models: every rank helps gather the full weights onto rank 0's CPU; else None
    gathered_state = full_state_dict(module.model) if stage.export else None
    if not trainer.is_global_zero:
        return result

    summary: dict[str, Any] = {
        "grpo_steps": trainer.global_step // stage.mu,
        "optimizer_steps": trainer.global_step,
        "train_reward": train_reward,
        "train_success": as_float(trainer.callback_metrics.get("train/success")),
        "val_success": val_success,
        "resumed_from": str(ckpt_path) if ckpt_path else None,
        "model": loaded.name,
        "world_size": trainer.world_size,
        "train_tasks": len(train_tasks),
    }
    if validate:
        summary["val"] = {
            key: float(value) for key, value in trainer.callback_metrics.items() if key.startswith("val/")
        }
        # the final validation as split -> metrics, the layout of stage=eval that toolmaster.sweep aggregates
        write_json_atomic(output_dir / METRICS, nest_metrics(summary["val"]))
    if stage.export:
        info = {
            "base_model": loaded.name,
            "chat_format": loaded.chat_format,
            "global_step": trainer.global_step,
            "grpo_steps": summary["grpo_steps"],
            "stage": "grpo",
        }
        summary["export_dir"] = export_final(
            module.model, loaded.tokenizer, output_dir, stage.merge, info, gathered_state
        )
    write_json_atomic(output_dir / SUMMARY, summary)
    write_json_atomic(
        output_dir / DONE, {"config_sha256": fingerprint, "result": result, "finished": time.time()}
    )
    print(json.dumps({k: summary[k] for k in ("grpo_steps", "train_reward", "val_success")}))
    return result
