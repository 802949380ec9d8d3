"""``training.slurm_requeue`` without a cluster: the requeue signal is acted on at a batch end (never inside the
handler), the checkpoint it writes holds that step, and ``resolve_resume(auto)`` prefers the newer of
``last.ckpt`` and the last ``hpc_ckpt_<n>.ckpt``. The whole path on a real Slurm is tests/integration/test_slurm.py."""

from __future__ import annotations

import os
import signal
import time

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from toolmaster.training.checkpoints import resolve_resume
from toolmaster.training.slurm_requeue import (
    RequeueOnSignal,
    hpc_checkpoints,
    next_hpc_checkpoint,
    slurm_job_id,
)


class Linear(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class SignalAt(pl.Callback):
    """Sends SIGUSR1 to this process in the middle of training step ``step`` (after its forward pass)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGUSR1)


@pytest.mark.parametrize("accumulate", [1, 2])
def test_signal_saves_after_the_next_optimizer_step_and_training_goes_on_outside_slurm(
    tmp_path, monkeypatch, accumulate
):
    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(name, raising=False)
    data = TensorDataset(torch.randn(16, 4), torch.randn(16, 1))
    requeue = RequeueOnSignal()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=6,
        accumulate_grad_batches=accumulate,
        default_root_dir=str(tmp_path),
        callbacks=[SignalAt(2), requeue],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    before = signal.getsignal(signal.SIGUSR1)
    trainer.fit(Linear(), DataLoader(data, batch_size=2))
    assert trainer.global_step == 6  # no job to requeue: the run trains on
    assert signal.getsignal(signal.SIGUSR1) == before  # the handler is restored after fit
    assert hpc_checkpoints(tmp_path) == [tmp_path / "hpc_ckpt_1.ckpt"]
    saved = torch.load(tmp_path / "hpc_ckpt_1.ckpt", weights_only=False)
    # signalled during step index 2 (after 2 optimizer steps; with accumulation, in its first micro-batch);
    # saved once that optimizer step completed, never between micro-batches
    assert saved["global_step"] == 3
    processed = saved["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["processed"]
    assert processed == 3 * accumulate
    assert next_hpc_checkpoint(tmp_path) == tmp_path / "hpc_ckpt_2.ckpt"


def _touch(path, seconds_later: int) -> None:
    t = int((time.time() + seconds_later) * 1e9)
    os.utime(path, ns=(t, t))


def test_resume_auto_takes_the_newer_of_last_and_hpc(tmp_path):
    ckpt_dir = tmp_path / "checkpoints"
    ckpt_dir.mkdir()
    assert resolve_resume("auto", ckpt_dir, hpc_dir=tmp_path) is None
    (tmp_path / "hpc_ckpt_2.ckpt").write_bytes(b"x")
    (tmp_path / "hpc_ckpt_10.ckpt").write_bytes(b"x")  # numbered, not sorted as text
    assert resolve_resume("auto", ckpt_dir, hpc_dir=tmp_path) == tmp_path / "hpc_ckpt_10.ckpt"
    (ckpt_dir / "last.ckpt").write_bytes(b"x")  # trained on after the resume: last.ckpt is newer
    _touch(ckpt_dir / "last.ckpt", 100)
    assert resolve_resume("auto", ckpt_dir, hpc_dir=tmp_path) == ckpt_dir / "last.ckpt"
    assert resolve_resume("auto", ckpt_dir) == ckpt_dir / "last.ckpt"  # without hpc_dir: as before
    _touch(tmp_path / "hpc_ckpt_10.ckpt", 200)  # preempted again later
    assert resolve_resume("auto", ckpt_dir, hpc_dir=tmp_path) == tmp_path / "hpc_ckpt_10.ckpt"


def test_job_id_of_an_array_task(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "41")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    assert slurm_job_id() == "41"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "40")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    assert slurm_job_id() == "40_1"
