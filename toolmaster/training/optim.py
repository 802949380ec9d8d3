"""AdamW with the usual parameter groups (no weight decay on biases and norms) and a warmup + decay schedule,
as the dict a LightningModule's ``configure_optimizers`` returns (the schedule steps every Lightning step)."""

from __future__ import annotations

from typing import Any

import torch

from toolmaster.training.schedules import build_scheduler


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable matrices decay; biases, norms and other vectors do not. Empty groups are left out."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 and "norm" not in name.lower() else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def adamw_with_schedule(
    model: torch.nn.Module,
    lr: float,
    weight_decay: float,
    schedule: str,
    warmup_steps: int,
    total_steps: int,
    min_lr_ratio: float,
) -> dict[str, Any]:
    optimizer = torch.optim.AdamW(parameter_groups(model, weight_decay), lr=lr)
    scheduler = build_scheduler(optimizer, schedule, warmup_steps, max(1, total_steps), min_lr_ratio)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
