"""``stage=sft``: supervised fine-tuning on trajectory JSONL with PyTorch Lightning.

``python -m toolmaster stage=sft data.sft_path=<data.jsonl>`` trains the configured ``model`` (full
fine-tuning, or LoRA with ``model.lora.enabled=true``) with the configured ``trainer`` (``cpu``,
``ddp_cpu``: 2 gloo processes, ``ddp_gpu``: all GPUs, bf16-mixed) and ``logger``, and writes to the run
directory:

- ``checkpoints/last.ckpt``: the Lightning checkpoint (every ``stage.checkpoint_every_n_steps`` steps and at
  the end). ``stage.resume=auto`` (the default) continues from it when present: model, optimizer, scheduler,
  step count and position in the data all resume. With LoRA only the trainable (adapter) weights go into
  the checkpoint; the frozen base is rebuilt from the model config. Under Slurm, SIGUSR1 (``sbatch
  --signal=USR1@120``) saves ``hpc_ckpt_<n>.ckpt`` at the next step end and requeues the job
  (``stages.slurm_requeue``); ``auto`` resumes from the newer of the two.
- ``hf/``: the final model in Hugging Face format (``toolmaster.stages.export``; LoRA merged by default),
  loadable by every stage with ``model=hf model.path=<run dir>/hf``. Under DDP only rank 0 exports.
- ``sft_summary.json``: final step, losses and data statistics; ``logs/metrics.csv`` (the CSV logger).

Loss: token-level cross-entropy on labelled tokens only (the model's own turns, ``sft_data``), averaged
over the labelled tokens of each micro-batch; gradient accumulation (``trainer.accumulate_grad_batches``)
averages micro-batch means. Validation loss is the exact token-weighted mean over the held-out examples
(reduced across ranks). ``stage.val_success_split`` adds a generation-based metric: greedy episodes on that
split (``evaluate_splits`` with ``HFEngine``, at most ``val_success_limit`` tasks) logged as ``val/success``
at each validation, on rank 0 only.

Precision: ``trainer.precision`` (``auto`` on CPU: ``bf16-mixed`` where the CPU has native bf16, else
``32-true``; ``bf16-mixed`` on GPU). ``model.dtype=auto`` trains fp32 weights (master weights) unless the
precision is a half ``*-true`` one (``toolmaster.stages.precision``).

Departures from the paper: it trains the 7B student with full fine-tuning on its synthesized trajectories;
here LoRA is an option and the defaults target SmolLM2-135M. Its optimizer settings are not all given:
AdamW (no decay on biases and norms), warmup then cosine decay, are this implementation's choices.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from pytorch_lightning.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.plugins.environments import SLURMEnvironment

from toolmaster.errors import ConfigError
from toolmaster.io import write_json_atomic
from toolmaster.protocol.chat_format import ChatFormat
from toolmaster.settings import DataSettings, SFTSettings
from toolmaster.stages.precision import resolve_training_precision
from toolmaster.stages.schedules import build_scheduler
from toolmaster.stages.sft_data import IGNORE_INDEX, SFTDataModule
from toolmaster.stages.slurm_requeue import RequeueOnSignal, hpc_checkpoints

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
EXPORT_DIR = "hf"
LAST = "last.ckpt"


# --------------------------------------------------------------------------------------------- the loss
def token_losses(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of next-token cross-entropies over labelled positions, number of labelled positions).

    Logits are computed only at positions whose next token is labelled in some row (``logits_to_keep``):
    prompts and observations are most of an episode's tokens, and the vocabulary projection over them is
    most of the cost for small models with large vocabularies (and most of the memory for large ones).
    """
    targets = batch["labels"][:, 1:]
    keep = (targets != IGNORE_INDEX).any(dim=0).nonzero().squeeze(-1)
    if keep.numel() == 0:
        keep = torch.zeros(1, dtype=torch.long, device=targets.device)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    try:
        logits = model(**inputs, logits_to_keep=keep).logits
    except TypeError:  # a model without logits_to_keep: project every position, then select
        logits = model(**inputs).logits[:, keep]
    if logits.size(1) != keep.numel():  # logits_to_keep accepted but ignored
        logits = logits[:, keep]
    targets = targets[:, keep]
    total = F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return total, (targets != IGNORE_INDEX).sum()


# ------------------------------------------------------------------------------------ generation metric
@dataclass
class SuccessEval:
    """Greedy episodes on a held-out split; ``__call__`` returns that split's metrics (``success``, ...)."""

    world: Any
    split: str
    limit: int
    config: Any  # RolloutConfig
    tokenizer: Any
    fmt: ChatFormat
    engine: Any = None  # sampler=vllm: an engine synced to the model before each evaluation; None = HF

    def __call__(self, model: Any) -> dict[str, float]:
        from toolmaster.samplers.hf import HFEngine
        from toolmaster.stages.evaluate import evaluate_splits

        engine = self.engine
        if engine is None:
            engine = HFEngine(model, self.tokenizer, stop_strings=self.fmt.tags.closing_tags())
        elif hasattr(engine, "sync_weights"):
            engine.sync_weights(model)
        metrics, _ = evaluate_splits(
            engine,
            self.tokenizer,
            self.fmt,
            self.world,
            [self.split],
            self.limit,
            self.config,
            show_progress=False,
        )
        return metrics[self.split]


# ---------------------------------------------------------------------------------------------- module
class SFTModule(pl.LightningModule):
    """Wraps a causal LM (plain or peft): masked cross-entropy, AdamW, warmup + decay schedule."""

    def __init__(
        self,
        model: Any,
        lr: float = 1e-5,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        schedule: str = "cosine",
        min_lr_ratio: float = 0.0,
        success_eval: SuccessEval | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.model.train()  # load_model returns eval mode; Lightning keeps the mode it finds
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_steps = warmup_steps
        self.schedule = schedule
        self.min_lr_ratio = min_lr_ratio
        self.success_eval = success_eval
        self.trainable_names = {n for n, p in model.named_parameters() if p.requires_grad}
        if not self.trainable_names:
            raise ConfigError("the model has no trainable parameters")
        # LoRA: checkpoints hold only the adapter, so loading them cannot be strict.
        self.partial_checkpoints = len(self.trainable_names) < sum(1 for _ in model.parameters())
        self.strict_loading = not self.partial_checkpoints
        self._val_sum: torch.Tensor | None = None
        self._val_count: torch.Tensor | None = None
        self.last_validation: tuple[int, float] | None = (
            None  # (global step, val loss) of the latest fit-time run
        )

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        total, count = token_losses(self.model, batch)
        loss = total / count.clamp(min=1)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=int(count))
        self.log("train/label_tokens", count.float(), on_step=True, on_epoch=False, reduce_fx="sum")
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self._val_count = torch.zeros((), dtype=torch.float64, device=self.device)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        total, count = token_losses(self.model, batch)
        weight = batch["weight"].to(torch.float64)
        assert self._val_sum is not None and self._val_count is not None
        self._val_sum += total.to(torch.float64) * weight
        self._val_count += count.to(torch.float64) * weight

    def on_validation_epoch_end(self) -> None:
        if self._val_sum is None or self._val_count is None:
            return
        total = self.trainer.strategy.reduce(self._val_sum.clone(), reduce_op="sum")
        count = self.trainer.strategy.reduce(self._val_count.clone(), reduce_op="sum")
        if float(count) > 0:
            val_loss = (total / count).float()
            # already reduced: identical on every rank (sync_dist only averages equal values)
            self.log("val/loss", val_loss, sync_dist=True)
            if self.trainer.state.fn == "fit" and not self.trainer.sanity_checking:
                self.last_validation = (self.trainer.global_step, float(val_loss))
        if self.success_eval is not None and not self.trainer.sanity_checking:
            self._log_success()

    def _log_success(self) -> None:
        assert self.success_eval is not None
        values = torch.zeros(2, dtype=torch.float32, device=self.device)
        if self.trainer.is_global_zero:
            with torch.inference_mode():
                metrics = self.success_eval(self.model)
            values = torch.tensor(
                [metrics["success"], metrics.get("valid_format", 0.0)],
                dtype=torch.float32,
                device=self.device,
            )
        values = self.trainer.strategy.broadcast(values, src=0)
        self.log("val/success", values[0], sync_dist=True)
        self.log("val/valid_format", values[1], sync_dist=True)

    def configure_optimizers(self) -> Any:
        decay, no_decay = [], []
        for name, param in self.model.named_parameters():
            if param.requires_grad:
                (decay if param.ndim >= 2 and "norm" not in name.lower() else no_decay).append(param)
        groups = [
            {"params": decay, "weight_decay": self.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=self.lr)
        total_steps = int(self.trainer.estimated_stepping_batches)
        scheduler = build_scheduler(
            optimizer, self.schedule, self.warmup_steps, max(1, total_steps), self.min_lr_ratio
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.partial_checkpoints:
            keep = {f"model.{name}" for name in self.trainable_names}
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        checkpoint["toolmaster"] = {"trainable_only": self.partial_checkpoints}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        missing = {f"model.{name}" for name in self.trainable_names} - set(checkpoint["state_dict"])
        if missing:
            raise ConfigError(
                f"checkpoint does not match the model: {len(missing)} trainable tensor(s) missing, "
                f"e.g. {sorted(missing)[0]} (same model and lora settings as the run that wrote it?)"
            )


# ---------------------------------------------------------------------------------------------- runner
def resolve_resume(resume: str | None, checkpoint_dir: Path, hpc_dir: Path | None = None) -> Path | None:
    """``auto``: the newest of ``last.ckpt`` in ``checkpoint_dir`` and the last ``hpc_ckpt_<n>.ckpt`` in
    ``hpc_dir`` (written when a Slurm job is preempted, ``stages.slurm_requeue``), if any; a path: that file;
    null / none: fresh."""
    if resume is None or str(resume).lower() in ("", "null", "none", "false"):
        return None
    if str(resume).lower() == "auto":
        last = checkpoint_dir / LAST
        found = ([last] if last.is_file() else []) + (hpc_checkpoints(hpc_dir)[-1:] if hpc_dir else [])
        return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None
    path = Path(resume).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"stage.resume={resume!r}: no such checkpoint file (use auto, null or a .ckpt path)"
        )
    return path


class FinalCheckpoint(Callback):
    """Saves ``last.ckpt`` at the last step (or epoch) when the periodic checkpoint does not fall on it, from
    inside the loop where the saved loop state is consistent; resuming a finished run then only re-exports."""

    def __init__(self, path: Path, every_n_steps: int) -> None:
        self.path = path
        self.every_n_steps = every_n_steps

    def _save_unless_periodic(self, trainer: pl.Trainer) -> None:
        if trainer.global_step > 0 and trainer.global_step % self.every_n_steps != 0:
            trainer.save_checkpoint(str(self.path), weights_only=False)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if 0 < trainer.max_steps <= trainer.global_step:
            self._save_unless_periodic(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        max_epochs = trainer.max_epochs
        finished_by_steps = 0 < trainer.max_steps <= trainer.global_step
        if (
            max_epochs is not None
            and max_epochs > 0
            and trainer.current_epoch + 1 >= max_epochs
            and not finished_by_steps
        ):
            self._save_unless_periodic(trainer)


def build_trainer(
    trainer_cfg: dict[str, Any],
    output_dir: Path,
    stage: SFTSettings,
    logger: Any,
    has_val: bool,
    extra_callbacks: list[Callback] | None = None,
) -> pl.Trainer:
    """The Lightning Trainer from the ``trainer`` group plus what SFT needs (checkpointing, our sampler)."""
    kwargs = dict(trainer_cfg)
    kwargs.pop("_target_", None)
    callbacks: list[Callback] = list(kwargs.pop("callbacks", None) or []) + list(extra_callbacks or [])
    if kwargs.get("enable_checkpointing", True):
        callbacks.append(FinalCheckpoint(output_dir / CHECKPOINT_DIR / LAST, stage.checkpoint_every_n_steps))
        callbacks.append(
            ModelCheckpoint(
                dirpath=str(output_dir / CHECKPOINT_DIR),
                save_top_k=0,
                save_last=True,
                every_n_train_steps=stage.checkpoint_every_n_steps,
                enable_version_counter=False,  # always last.ckpt, never last-v1.ckpt
            )
        )
    if logger:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    if SLURMEnvironment.detect() and not kwargs.get("plugins"):
        # preemption: our handler saves at a step boundary (stages.slurm_requeue), Lightning's is turned off
        kwargs["plugins"] = [SLURMEnvironment(auto_requeue=False)]
        callbacks.append(RequeueOnSignal())
    kwargs.update(
        logger=logger,
        callbacks=callbacks,
        default_root_dir=str(output_dir),
        use_distributed_sampler=False,  # the bucketing sampler shards itself across ranks
    )
    if not has_val:
        kwargs["limit_val_batches"] = 0
    elif stage.val_every_n_steps is not None:
        kwargs["val_check_interval"] = stage.val_every_n_steps * int(
            kwargs.get("accumulate_grad_batches") or 1
        )
        kwargs["check_val_every_n_epoch"] = None
    return pl.Trainer(**kwargs)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def run_sft(cfg: DictConfig) -> float | None:
    from toolmaster.run import (
        build_engine,
        build_model,
        build_world,
        chat_format_of,
        plain,
        rollout_config,
        settings,
    )

    stage: SFTSettings = settings(cfg.stage)
    data: DataSettings = settings(cfg.data)
    if not data.sft_path:
        raise ConfigError(
            "stage=sft needs data.sft_path=<trajectories.jsonl> (e.g. the data.jsonl of stage=synthesize)"
        )
    output_dir = Path(cfg.output_dir)
    ckpt_path = resolve_resume(stage.resume, output_dir / CHECKPOINT_DIR, hpc_dir=output_dir)
    pl.seed_everything(stage.seed, workers=True, verbose=False)

    trainer_cfg = plain(cfg.trainer)
    resolve_training_precision(trainer_cfg, cfg.model)  # precision=auto; fp32 master weights
    loaded = build_model(cfg)
    fmt = chat_format_of(loaded)
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

    success_eval = None
    if stage.val_success_split:
        from toolmaster.settings import SamplerSettings

        world, env = build_world(cfg)
        world.tasks(stage.val_success_split)  # fail fast on an unknown split
        sampler: SamplerSettings = settings(cfg.sampler)
        success_eval = SuccessEval(
            world,
            stage.val_success_split,
            stage.val_success_limit,
            rollout_config(sampler, env, temperature=0.0, n_samples=1),
            loaded.tokenizer,
            fmt,
            engine=None if sampler.engine == "hf" else build_engine(sampler, loaded, fmt),
        )
    module = SFTModule(
        loaded.model,
        lr=stage.lr,
        weight_decay=stage.weight_decay,
        warmup_steps=stage.warmup_steps,
        schedule=stage.schedule,
        min_lr_ratio=stage.min_lr_ratio,
        success_eval=success_eval,
    )
    from hydra.utils import instantiate

    logger = instantiate(cfg.logger, _convert_="all") if cfg.get("logger") else False
    has_val = bool(datamodule.val_set)
    trainer = build_trainer(trainer_cfg, output_dir, stage, logger, has_val)
    if ckpt_path is not None:
        log.info("resuming from %s", ckpt_path)
    trainer.fit(
        module, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None, weights_only=False
    )
    train_loss = _float(trainer.callback_metrics.get("train/loss"))

    val_loss = None
    if module.last_validation is not None and module.last_validation[0] == trainer.global_step:
        val_loss = module.last_validation[1]  # validated at the final step already
    elif has_val:
        results = trainer.validate(module, datamodule=datamodule, verbose=False)
        val_loss = _float(results[0].get("val/loss")) if results else None
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
        summary["val_success"] = _float(trainer.callback_metrics.get("val/success"))
    if stage.export:
        from toolmaster.stages.export import export_hf

        info = {
            "base_model": loaded.name,
            "chat_format": loaded.chat_format,
            "global_step": trainer.global_step,
            "sft_path": str(data.sft_path),
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
    write_json_atomic(output_dir / "sft_summary.json", summary)
    print(json.dumps({k: summary[k] for k in ("global_step", "train_loss", "val_loss")}))
    return val_loss if val_loss is not None else train_loss
