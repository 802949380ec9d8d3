"""Slurm preemption: on the requeue signal, checkpoint at the next step boundary, requeue the job, exit.

A Slurm job asks for a warning before it is stopped (``sbatch --signal=USR1@120``: SIGUSR1 two minutes before
its time limit, or ``scancel --signal=USR1 <job>`` by hand). Lightning's own handler
(``SLURMEnvironment(auto_requeue=True)``) saves its ``hpc_ckpt_<n>.ckpt`` from *inside* the signal handler,
i.e. at whatever bytecode the main thread was running: in the middle of an optimizer update, between the
optimizer step and the scheduler step, or while the loop's counters are half advanced; under DDP the ranks
then enter the checkpoint's collectives at different points of their step. A run resumed from such a file can
differ from one that was never interrupted.

``RequeueOnSignal`` replaces that handler (``build_trainer`` turns Lightning's off when it runs under Slurm):
the signal only sets a flag; at the end of the training batch that completes the current optimizer step (where
``ModelCheckpoint`` saves too, so the saved state is one Lightning resumes exactly; never inside a gradient
accumulation, whose gradients a checkpoint does not hold) the ranks agree on the flag, rank 0 writes
``<run dir>/hpc_ckpt_<n>.ckpt`` (Lightning's name, which ``resolve_resume`` picks up), runs
``scontrol requeue <job>`` and every rank leaves with ``RequeuedExit`` (a ``SystemExit`` with code 0, like
Lightning's own ``SIGTERMException``), so nothing after ``fit`` runs (no export, no summary). Slurm starts the
job again under the same id; its ``stage.resume=auto`` continues from the newest checkpoint. If
``scontrol requeue`` fails (a job submitted with ``--no-requeue``) the run logs a warning and trains on.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

log = logging.getLogger(__name__)

HPC_PREFIX = "hpc_ckpt_"


class RequeuedExit(SystemExit):
    """Raised on every rank once the job is requeued: leaves ``fit`` and the process with exit code 0."""

    def __init__(self) -> None:
        super().__init__(0)


def slurm_job_id() -> str | None:
    """The id ``scontrol requeue`` takes: ``<array job>_<task>`` in an array job, else ``SLURM_JOB_ID``."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job is not None and os.environ.get("SLURM_ARRAY_TASK_ID") is not None:
        return f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def hpc_checkpoints(run_dir: Path) -> list[Path]:
    """``hpc_ckpt_<n>.ckpt`` files in ``run_dir``, by increasing ``n``."""
    found = []
    for path in Path(run_dir).glob(f"{HPC_PREFIX}*.ckpt"):
        match = re.fullmatch(rf"{HPC_PREFIX}(\d+)\.ckpt", path.name)
        if match:
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def next_hpc_checkpoint(run_dir: Path) -> Path:
    existing = hpc_checkpoints(run_dir)
    number = int(existing[-1].stem.removeprefix(HPC_PREFIX)) + 1 if existing else 1
    return Path(run_dir) / f"{HPC_PREFIX}{number}.ckpt"


class RequeueOnSignal(Callback):
    """SIGUSR1 (``signum``) -> at the next training-batch end: save, ``scontrol requeue``, exit (see module)."""

    def __init__(self, signum: int = signal.SIGUSR1) -> None:
        self.signum = signum
        self.requested = False
        self._previous: Any = None
        self._last_step = -1

    def _note(self, signum: int, frame: Any) -> None:
        self.requested = True

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.requested, self._last_step = False, trainer.global_step
        self._previous = signal.signal(self.signum, self._note)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._restore()

    def _restore(self) -> None:
        if self._previous is not None:
            signal.signal(self.signum, self._previous)
            self._previous = None

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        stepped, self._last_step = trainer.global_step != self._last_step, trainer.global_step
        if not stepped:  # inside a gradient accumulation: the accumulated gradients are not checkpointed
            return
        # every rank takes part in the vote after each optimizer step, so all of them save and leave at the same one
        if not trainer.strategy.reduce_boolean_decision(self.requested, all=False):
            return
        path = Path(
            trainer.strategy.broadcast(str(next_hpc_checkpoint(Path(trainer.default_root_dir))), src=0)
        )
        trainer.save_checkpoint(str(path))
        requeued = self._requeue(path, trainer.global_step) if trainer.is_global_zero else False
        if trainer.strategy.broadcast(requeued, src=0):
            for logger in trainer.loggers:
                logger.finalize("requeued")  # write the metrics logged so far
            raise RequeuedExit()
        self.requested = False  # not requeued: keep training

    @staticmethod
    def _requeue(path: Path, step: int) -> bool:
        job = slurm_job_id()
        if job is None:
            log.warning("requeue signal outside a Slurm job: saved %s, training on", path)
            return False
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
        if result.returncode != 0:
            log.warning(
                "scontrol requeue %s failed (%s): saved %s, training on", job, result.stderr.strip(), path
            )
            return False
        log.warning("requeue signal: saved %s at step %d and requeued Slurm job %s", path, step, job)
        return True
