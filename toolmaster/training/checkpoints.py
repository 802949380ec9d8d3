"""Checkpoints of the training stages: where they live, ``stage.resume``, the final one, trainable weights only.

``TrainableWeights`` is what a LightningModule's ``on_save_checkpoint`` / ``on_load_checkpoint`` delegate to:
with LoRA (or frozen layers) only the trainable tensors go into the checkpoint, and the frozen rest is rebuilt
from the model config on resume, so loading cannot be strict; a checkpoint missing a trainable tensor is a
``ConfigError`` (written by a run with another model or LoRA setting). Under the sharded trainers (``fsdp_*``)
``last.ckpt`` is a directory of per-rank shards (``toolmaster.training.sharding``), resumed the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from toolmaster.errors import ConfigError
from toolmaster.training.slurm_requeue import hpc_checkpoints

CHECKPOINT_DIR = "checkpoints"
LAST = "last.ckpt"


def is_sharded_checkpoint(path: Path) -> bool:
    """A distributed checkpoint of the sharded trainers: a directory with Lightning's ``meta.pt`` in it."""
    return path.is_dir() and (path / "meta.pt").is_file()


def resolve_resume(resume: str | None, checkpoint_dir: Path, hpc_dir: Path | None = None) -> Path | None:
    """``auto``: the newest of ``last.ckpt`` in ``checkpoint_dir`` (a file, or a sharded checkpoint directory)
    and the last ``hpc_ckpt_<n>.ckpt`` in ``hpc_dir`` (written when a Slurm job is preempted,
    ``training.slurm_requeue``), if any; a path: that file; null / none: fresh."""
    if resume is None or str(resume).lower() in ("", "null", "none", "false"):
        return None
    if str(resume).lower() == "auto":
        last = checkpoint_dir / LAST
        have_last = last.is_file() or is_sharded_checkpoint(last)
        found = ([last] if have_last else []) + (hpc_checkpoints(hpc_dir)[-1:] if hpc_dir else [])
        return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None
    path = Path(resume).expanduser()
    if not (path.is_file() or is_sharded_checkpoint(path)):
        raise ConfigError(
            f"stage.resume={resume!r}: no such checkpoint file (use auto, null or a .ckpt path)"
        )
    return path


class TrainableWeights:
    """The names of a model's trainable parameters and the checkpoint hooks that keep only those."""

    def __init__(self, model: Any, prefix: str = "model.") -> None:
        self.names = {n for n, p in model.named_parameters() if p.requires_grad}
        if not self.names:
            raise ConfigError("the model has no trainable parameters")
        self.prefix = prefix
        self.partial = len(self.names) < sum(1 for _ in model.parameters())

    def on_save(self, checkpoint: dict[str, Any], **tags: Any) -> None:
        if self.partial:
            keep = {self.prefix + name for name in self.names}
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        checkpoint["toolmaster"] = {"trainable_only": self.partial, **tags}

    def on_load(self, checkpoint: dict[str, Any]) -> None:
        if "state_dict" not in checkpoint:
            return  # a sharded checkpoint: the strategy loaded (and matched) the shards itself
        missing = {self.prefix + name for name in self.names} - set(checkpoint["state_dict"])
        if missing:
            raise ConfigError(
                f"checkpoint does not match the model: {len(missing)} trainable tensor(s) missing, "
                f"e.g. {sorted(missing)[0]} (same model and lora settings as the run that wrote it?)"
            )


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
