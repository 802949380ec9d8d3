"""``trainer.precision=auto`` and the weight dtype of the training stages (fp32 master weights)."""

from __future__ import annotations

import pytest
import torch

from toolmaster.training import precision as precision_module
from toolmaster.training.precision import (
    resolve_precision,
    resolve_training_precision,
    training_weight_dtype,
)


@pytest.mark.parametrize(
    "accelerator,cuda,fast_bf16,expected",
    [
        ("cpu", False, True, "bf16-mixed"),
        ("cpu", False, False, "32-true"),
        ("cpu", True, False, "32-true"),  # a GPU in the box does not matter to a CPU trainer
        ("gpu", True, False, "bf16-mixed"),
        ("auto", True, False, "bf16-mixed"),
        ("auto", False, False, "32-true"),
    ],
)
def test_auto_precision(monkeypatch, accelerator, cuda, fast_bf16, expected):
    # Test doubles for the hardware: the CPU flags and CUDA availability are what this machine has, not
    # what each row needs, so both are patched.
    monkeypatch.setattr(precision_module, "cpu_has_fast_bf16", lambda: fast_bf16)
    monkeypatch.setattr(precision_module.torch.cuda, "is_available", lambda: cuda)
    kwargs = {"accelerator": accelerator, "precision": "auto"}
    assert resolve_precision(kwargs) == expected
    assert kwargs["precision"] == expected  # written back for the Lightning Trainer


@pytest.mark.parametrize("explicit", ["32-true", "bf16-mixed", "bf16-true", "16-mixed"])
def test_explicit_precision_is_kept(monkeypatch, explicit):
    monkeypatch.setattr(precision_module, "cpu_has_fast_bf16", lambda: True)
    kwargs = {"accelerator": "cpu", "precision": explicit}
    assert resolve_precision(kwargs) == explicit and kwargs["precision"] == explicit


@pytest.mark.parametrize(
    "model_dtype,precision,expected",
    [
        ("auto", "32-true", "float32"),  # auto would pick bf16 weights on a bf16 CPU: not for training
        ("auto", "bf16-mixed", "float32"),  # master weights
        ("auto", "bf16-true", "auto"),  # half-true training asks for half weights
        ("auto", "bf16", "float32"),  # Lightning's alias of bf16-mixed
        ("bfloat16", "32-true", "bfloat16"),  # explicit is obeyed
        ("float32", "bf16-mixed", "float32"),
    ],
)
def test_training_weight_dtype(model_dtype, precision, expected):
    assert training_weight_dtype(model_dtype, precision) == expected


def test_resolve_training_precision_gives_both_and_edits_only_the_trainer_kwargs(monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_has_fast_bf16", lambda: True)
    kwargs = {"accelerator": "cpu", "precision": "auto"}
    assert resolve_training_precision(kwargs, "auto") == ("bf16-mixed", "float32")
    assert kwargs["precision"] == "bf16-mixed"


def test_build_policy_loads_the_training_dtype_without_editing_the_model_config(monkeypatch):
    from toolmaster.build import build_policy
    from toolmaster.cli import compose
    from toolmaster.models import loading

    monkeypatch.setattr(precision_module, "cpu_has_fast_bf16", lambda: True)
    monkeypatch.setattr(loading, "cpu_has_fast_bf16", lambda: True)
    cfg = compose(["model=tiny", "model.dtype=auto"])
    kwargs = {"accelerator": "cpu", "precision": "auto"}
    loaded, _ = build_policy(cfg, kwargs)
    assert next(loaded.model.parameters()).dtype == torch.float32  # auto would be bf16 on this "CPU"
    assert kwargs["precision"] == "bf16-mixed" and cfg.model.dtype == "auto"
