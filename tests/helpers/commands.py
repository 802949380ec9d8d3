"""Command lines the integration tests share: a short tiny-model SFT run and a one-step tiny GRPO sweep point."""

from __future__ import annotations

import sys
from pathlib import Path

# one GRPO step of the tiny model per sweep point (launcher tests: local, submitit, Slurm)
TINY_ABLATION = [
    "+experiment=ablation_sweep",
    "model=tiny",
    "model.path=null",
    "trainer.max_steps=1",
    "stage.tasks_per_step=1",
    "stage.group_size=2",
    "stage.val_every_n_steps=1",
    "stage.export=false",
    "data.train_limit=2",
    "data.eval_splits=[test_seen,test_unseen]",
    "data.eval_limit=1",
    "sampler.max_turns=2",
    "sampler.max_new_tokens=8",
]


def tiny_sft_command(run_dir: Path, data: Path, *overrides: str, val_fraction: float = 0.2) -> list[str]:
    """``python -m toolmaster stage=sft`` on the tiny model; ``overrides`` come last and win."""
    return [
        sys.executable,
        "-m",
        "toolmaster",
        "stage=sft",
        "model=tiny",
        f"data.sft_path={data}",
        f"hydra.run.dir={run_dir}",
        "stage.batch_size=2",
        "stage.max_length=768",
        f"stage.val_fraction={val_fraction:g}",
        "stage.lr=1e-3",
        "stage.warmup_steps=1",
        "trainer.enable_progress_bar=false",
        *overrides,
    ]
