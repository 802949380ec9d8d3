"""Fully sharded data parallel training (PyTorch FSDP2 ``fully_shard``) for the training stages.

``trainer=fsdp_cpu`` (2 gloo processes) and ``trainer=fsdp_gpu`` (all GPUs, NCCL) use ``FSDP2Strategy``, a
Lightning ``ModelParallelStrategy`` with a one-dimensional data-parallel mesh over every process. Lightning's
``FSDPStrategy`` (FSDP1) refuses a CPU accelerator; FSDP2 runs on CPU with gloo, so the sharded path is tested
on this project's CPU machines. The strategy shards the LightningModule's ``model`` attribute (a Hugging Face
causal LM, plain or peft) itself, so the stages' modules need no ``configure_model`` hook:

- every block of every ``nn.ModuleList`` (the decoder layers) is one FSDP unit, the root (embeddings, final
  norm, LM head, tied or not) another; each process keeps 1/world of every parameter, gradient and AdamW
  moment; a unit's parameters are all-gathered for its forward and backward only;
- ``param_dtype`` / ``reduce_dtype`` set FSDP2's mixed precision (``bfloat16`` compute and gathers over fp32
  master weights; the GPU trainer's choice, with ``trainer.precision=32-true``); ``activation_checkpointing``
  turns on the model's gradient checkpointing (non-reentrant) before sharding;
- checkpoints are distributed: ``last.ckpt`` is a directory with one shard file per process plus Lightning's
  metadata, written and read by ``torch.distributed.checkpoint`` (Lightning's), resumable with the same
  number of processes or another;
- ``block_backward_sync`` skips the gradient reduce-scatter on all but the last micro-batch (GRPO's inner
  loop), as DDP's ``no_sync`` does;
- ``gathered_for_generation()`` all-gathers every unit once and keeps it gathered while the HF engine decodes
  with the policy itself, so ranks may run different numbers of forward passes (each rank rolls out its own
  tasks) without mismatched collectives. It materialises the whole model on every rank for the rollout: fine
  for small models; at scale use ``sampler=vllm``, whose weight sync streams buckets (``iter_full_weights``).

The export and the vLLM weight sync read full tensors out of the shards with ``toolmaster.training.gather``.

Not in the paper (which does not say how its 7B student was sharded): all of this is this project's choice.
Known limit: every rank loads the full model in CPU memory before sharding (no meta-device loading yet).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.strategies import ModelParallelStrategy
from pytorch_lightning.trainer.states import TrainerFn
from torch import nn

from toolmaster.training.gather import fsdp_units, gathered, is_sharded

log = logging.getLogger(__name__)


def _dtype(name: str | None) -> torch.dtype | None:
    return None if name in (None, "", "null") else getattr(torch, str(name))


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The blocks of every ``nn.ModuleList`` that hold parameters (decoder layers), outermost lists only."""
    units: list[nn.Module] = []
    taken: set[int] = set()
    for module in model.modules():
        if id(module) in taken or not isinstance(module, nn.ModuleList):
            continue
        for block in module:
            if any(True for _ in block.parameters()):
                units.append(block)
                taken.update(id(m) for m in block.modules())
    return units


def shard_model(
    model: nn.Module,
    mesh: Any,
    param_dtype: torch.dtype | None = None,
    reduce_dtype: torch.dtype | None = None,
    reshard_after_forward: bool = True,
    activation_checkpointing: bool = False,
) -> nn.Module:
    """Apply ``fully_shard`` to each decoder block and then to the root; returns ``model`` (sharded in place)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if activation_checkpointing:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()  # LoRA: frozen embeddings still need a grad path
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    units = shard_units(model)
    for unit in units:
        fully_shard(unit, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    fully_shard(model, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    log.info("sharded %d blocks + root over %d processes", len(units), mesh.size())
    return model


class FSDP2Strategy(ModelParallelStrategy):
    """Lightning's model-parallel strategy as pure FSDP2 over all processes; see the module docstring."""

    strategy_name = "toolmaster_fsdp2"

    def __init__(
        self,
        param_dtype: str | None = None,
        reduce_dtype: str | None = None,
        reshard_after_forward: bool = True,
        activation_checkpointing: bool = False,
        save_distributed_checkpoint: bool = True,
        process_group_backend: str | None = None,
        timeout_s: int = 1800,
    ) -> None:
        super().__init__(
            data_parallel_size="auto",
            tensor_parallel_size=1,
            save_distributed_checkpoint=save_distributed_checkpoint,
            process_group_backend=process_group_backend,
            timeout=timedelta(seconds=timeout_s),
        )
        self.param_dtype = _dtype(param_dtype)
        self.reduce_dtype = _dtype(reduce_dtype)
        self.reshard_after_forward = reshard_after_forward
        self.activation_checkpointing = activation_checkpointing

    def setup_environment(self) -> None:
        self._data_parallel_size = self.num_nodes * self.num_processes  # every process shards
        super().setup_environment()

    def _policy_model(self) -> nn.Module:
        module = self.lightning_module
        model = getattr(module, "model", None)
        if not isinstance(model, nn.Module):
            raise TypeError("FSDP2Strategy shards the LightningModule's `model` attribute; it has none")
        return model

    def setup(self, trainer: pl.Trainer) -> None:
        """Shard the policy (once), then the rest of Lightning's setup: precision, device, optimizers."""
        from lightning_fabric.utilities.optimizer import _optimizers_to_device

        assert self.model is not None and self.accelerator is not None
        self.accelerator.setup(trainer)
        model = self._policy_model()
        if not is_sharded(model):
            shard_model(
                model,
                self.device_mesh["data_parallel"],
                self.param_dtype,
                self.reduce_dtype,
                self.reshard_after_forward,
                self.activation_checkpointing,
            )
        self.model = self.precision_plugin.convert_module(self.model)
        self.model_to_device()
        self.barrier()
        if trainer.state.fn == TrainerFn.FITTING:
            self.setup_optimizers(trainer)
        self.setup_precision_plugin()
        if trainer.state.fn == TrainerFn.FITTING:
            _optimizers_to_device(self.optimizers, self.root_device)

    @contextlib.contextmanager
    def block_backward_sync(self) -> Iterator[None]:
        """No gradient reduce-scatter for the backward passes inside (the last micro-batch syncs)."""
        units = fsdp_units(self._policy_model())
        for unit in units:
            unit.set_requires_gradient_sync(False, recurse=False)
        try:
            yield None
        finally:
            for unit in units:
                unit.set_requires_gradient_sync(True, recurse=False)

    @contextlib.contextmanager
    def gathered_for_generation(self) -> Iterator[None]:
        """Every unit all-gathered (on all ranks at once) and kept gathered until the block ends."""
        with gathered(self._policy_model()):
            yield None
