"""``run(cfg)`` of ``stage=sft``: build the model, data and module from the config, train, validate, export.

Reads top to bottom: settings, resume point and seed; precision and model; data (errors surface before any
process is launched); the optional ``val/success`` evaluation; module; trainer; fit; final validation; on rank 0
the export and ``sft_summary.json``. Returns the final validation loss, else the last train loss.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig

from toolmaster.build import (
    build_engine,
    build_logger,
    build_policy,
    build_settings,
    build_world,
    plain,
    rollout_config,
)
from toolmaster.errors import ConfigError
from toolmaster.io import write_json_atomic
from toolmaster.settings import DataSettings, SamplerSettings, SFTSettings
from toolmaster.stages.sft.data import SFTDataModule
from toolmaster.stages.sft.module import SFTModule, SuccessEval
from toolmaster.training.checkpoints import CHECKPOINT_DIR, resolve_resume
from toolmaster.training.export import export_final
from toolmaster.training.gather import full_state_dict
from toolmaster.training.trainer import Cadence, as_float, build_trainer, final_validation, fit

SUMMARY = "sft_summary.json"


def run(cfg: DictConfig) -> float | None:
    stage: SFTSettings = build_settings(cfg.stage)
    data: DataSettings = build_settings(cfg.data)
    if not data.sft_path:
        raise ConfigError(
            "stage=sft needs data.sft_path=<trajectories.jsonl> (e.g. the data.jsonl of stage=synthesize)"
        )
    output_dir = Path(cfg.output_dir)
    ckpt_path = resolve_resume(stage.resume, output_dir / CHECKPOINT_DIR, hpc_dir=output_dir)
    pl.seed_everything(stage.seed, workers=True, verbose=False)

    # 1. model
    trainer_cfg = plain(cfg.trainer)
    loaded, fmt = build_policy(cfg, trainer_cfg)

    # 2. data
    datamodule = SFTDataModule(
        data.sft_path,
        loaded.tokenizer,
        fmt,
        batch_size=stage.batch_size,
        max_length=stage.max_length,
        val_fraction=stage.val_fraction,
        bucket_size=stage.bucket_size,
        seed=stage.seed,
    )
    datamodule.setup("fit")  # data errors surface before any process is launched

    # 3. module, with greedy episodes on a held-out split as val/success when asked for
    success_eval = None
    if stage.val_success_split:
        world, env = build_world(cfg)
        world.tasks(stage.val_success_split)  # fail fast on an unknown split
        sampler: SamplerSettings = build_settings(cfg.sampler)
        success_eval = SuccessEval(
            world,
            stage.val_success_split,
            stage.val_success_limit,
            rollout_config(sampler, env, temperature=0.0, n_samples=1),
            loaded.tokenizer,
            fmt,
            engine=build_engine(sampler, loaded, fmt),
        )
    module = SFTModule(loaded.model, stage, success_eval=success_eval)

    # 4. run
    has_val = bool(datamodule.val_set)
    cadence = Cadence(stage.checkpoint_every_n_steps, stage.val_every_n_steps)
    trainer = build_trainer(trainer_cfg, output_dir, cadence, build_logger(cfg), has_val)
    fit(trainer, module, datamodule, ckpt_path)
    train_loss = as_float(trainer.callback_metrics.get("train/loss"))
    val_loss = final_validation(trainer, module, datamodule, "val/loss") if has_val else None
    # sharded (fsdp_*) models: every rank helps gather the full weights onto rank 0's CPU; else None
    gathered_state = full_state_dict(module.model) if stage.export else None
    if not trainer.is_global_zero:
        return val_loss if val_loss is not None else train_loss

    summary: dict[str, Any] = {
        "global_step": trainer.global_step,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "resumed_from": str(ckpt_path) if ckpt_path else None,
        "model": loaded.name,
        "data": {"path": str(data.sft_path), **datamodule.stats},
    }
    if stage.val_success_split:
        summary["val_success"] = as_float(trainer.callback_metrics.get("val/success"))
    if stage.export:
        info = {
            "base_model": loaded.name,
            "chat_format": loaded.chat_format,
            "global_step": trainer.global_step,
            "sft_path": str(data.sft_path),
        }
        summary["export_dir"] = export_final(
            module.model, loaded.tokenizer, output_dir, stage.merge, info, gathered_state
        )
    write_json_atomic(output_dir / SUMMARY, summary)
    print(json.dumps({k: summary[k] for k in ("global_step", "train_loss", "val_loss")}))
    return val_loss if val_loss is not None else train_loss
