"""``stage=sft`` module: supervised fine-tuning on trajectory JSONL with PyTorch Lightning.

``python -m toolmaster stage=sft data.sft_path=<data.jsonl>`` trains the configured ``model`` (full
fine-tuning, or LoRA with ``model/lora=enabled``) with the configured ``trainer`` (``cpu``,
``ddp_cpu``: 2 gloo processes, ``ddp_gpu``: all GPUs, bf16-mixed) and ``logger``, and writes to the run
directory:

- ``checkpoints/last.ckpt``: the Lightning checkpoint (every ``stage.checkpoint_every_n_steps`` steps and at
  the end). ``stage.resume=auto`` (the default) continues from it when present: model, optimizer, scheduler,
  step count and position in the data all resume. With LoRA only the trainable (adapter) weights go into
  the checkpoint; the frozen base is rebuilt from the model config.
- ``hf/``: the final model in Hugging Face format (``toolmaster.training.export``; LoRA merged by default),
  loadable by every stage with ``model=hf model.path=<run dir>/hf``. Under DDP only rank 0 exports.
- ``sft_summary.json``: final step, losses and data statistics; ``logs/metrics.csv`` (the CSV logger).

Loss: token-level cross-entropy on labelled tokens only (the model's own turns, ``toolmaster.stages.sft.data``), averaged
over the labelled tokens of each micro-batch; gradient accumulation (``trainer.accumulate_grad_batches``)
averages micro-batch means. Validation loss is the exact token-weighted mean over the held-out examples
(reduced across ranks). ``stage.val_success_split`` adds a generation-based metric: greedy episodes on that
split (``evaluate_splits`` with ``HFEngine``, at most ``val_success_limit`` tasks) logged as ``val/success``
at each validation, on rank 0 only.

Precision: ``trainer.precision`` (``auto`` on CPU: ``bf16-mixed`` where the CPU has native bf16, else
``32-true``; ``bf16-mixed`` on GPU). ``model.dtype=auto`` trains fp32 weights (master weights) unless the
precision is a half ``*-true`` one (``toolmaster.training.precision``).

Departures from the paper: it trains the 7B student with full fine-tuning on its synthesized trajectories;
here LoRA is an option and the defaults target SmolLM2-135M. Its optimizer settings are not all given:
AdamW (no decay on biases and norms), warmup then cosine decay, are this implementation's choices.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch

from toolmaster.algorithms.logprobs import token_losses
from toolmaster.evaluation import evaluate_splits
from toolmaster.protocol.chat_format import ChatFormat
from toolmaster.samplers.engines import make_engine
from toolmaster.settings import SFTSettings
from toolmaster.training.checkpoints import TrainableWeights
from toolmaster.training.optim import adamw_with_schedule


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
    engine: Any = None  # the sampler's engine (synced to the model before each evaluation if it keeps a copy)

    def __call__(self, model: Any) -> dict[str, float]:
        engine = self.engine
        if engine is None:
            engine = self.engine = make_engine(None, model, self.tokenizer, self.fmt)
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
    """Wraps a causal LM (plain or peft): masked cross-entropy, AdamW, warmup + decay schedule.

    Takes the ``SFTSettings`` the runner builds (``stage.lr``, ``weight_decay``, ``schedule``, ``warmup_steps``,
    ``min_lr_ratio``), as ``GRPOModule`` takes ``GRPOSettings``."""

    def __init__(
        self,
        model: Any,
        settings: SFTSettings,
        success_eval: SuccessEval | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.model.train()  # load_model returns eval mode; Lightning keeps the mode it finds
        self.settings = settings  # the optimizer and schedule: lr, weight_decay, schedule, warmup_steps ...
        self.success_eval = success_eval
        self.trainable = TrainableWeights(model)
        self.strict_loading = not self.trainable.partial  # LoRA: checkpoints hold only the adapter
        self._val_sum: torch.Tensor | None = None
        self._val_count: torch.Tensor | None = None
        self.last_validation: tuple[int, float] | None = (
            None  # (global step, val loss) of the latest fit-time run
        )

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        total, count = token_losses(self.model, batch, fused_head=self.settings.fused_head)
        loss = total / count.clamp(min=1)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=int(count))
        self.log("train/label_tokens", count.float(), on_step=True, on_epoch=False, reduce_fx="sum")
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self._val_count = torch.zeros((), dtype=torch.float64, device=self.device)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        total, count = token_losses(self.model, batch, fused_head=self.settings.fused_head)
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
        # sharded trainers (fsdp_*): every rank gathers the policy, then only rank 0 decodes with it
        gather = getattr(self.trainer.strategy, "gathered_for_generation", contextlib.nullcontext)
        with gather(), torch.inference_mode():
            metrics = self.success_eval(self.model) if self.trainer.is_global_zero else None
        if metrics is not None:
            values = torch.tensor(
                [metrics["success"], metrics.get("valid_format", 0.0)],
                dtype=torch.float32,
                device=self.device,
            )
        values = self.trainer.strategy.broadcast(values, src=0)
        self.log("val/success", values[0], sync_dist=True)
        self.log("val/valid_format", values[1], sync_dist=True)

    def configure_optimizers(self) -> Any:
        settings = self.settings
        return adamw_with_schedule(
            self.model,
            settings.lr,
            settings.weight_decay,
            settings.schedule,
            settings.warmup_steps,
            int(self.trainer.estimated_stepping_batches),
            settings.min_lr_ratio,
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.trainable.on_save(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.trainable.on_load(checkpoint)
