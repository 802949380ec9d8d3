"""Full tensors out of FSDP2-sharded models, for the export and the vLLM weight sync (torch only).

Every function here is collective when the model is sharded: all ranks call it, in the same order.

- ``full_state_dict``: the full weights on rank 0 in CPU memory, gathered one tensor at a time (the HF export
  of ``toolmaster.training.export``); no rank holds a second copy on its GPU;
- ``iter_full_weights`` / ``BucketedGather``: ``(name, full tensor)`` on every rank, all-gathered one bucket
  (at most ``bucket_numel`` elements; a bigger tensor alone) at a time, for ``vllm_engine.sync_weights``:
  the whole model is never materialised outside the engine;
- ``gathered(model)``: every unit unsharded for the duration of a block, so ranks may run different numbers
  of forwards (generation with the policy itself).

Sharding itself is ``toolmaster.training.sharding``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

DEFAULT_BUCKET_NUMEL = 64 * 1024 * 1024  # 64 M elements: 128 MB of bf16 per bucket at 7B scale


def is_sharded(model: nn.Module) -> bool:
    """True when ``model`` (or one of its submodules) is an FSDP2 unit."""
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(module, FSDPModule) for module in model.modules())


def fsdp_units(model: nn.Module) -> list[Any]:
    from torch.distributed.fsdp import FSDPModule

    return [module for module in model.modules() if isinstance(module, FSDPModule)]


@contextlib.contextmanager
def gathered(model: nn.Module) -> Iterator[None]:
    """Keep every FSDP unit of ``model`` unsharded inside the block: forwards then run without collectives,
    so ranks may run different numbers of them. Collective on entry and exit; a no-op for unsharded models."""
    units = fsdp_units(model)
    if not units:
        yield None
        return
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)
    with torch.no_grad():
        for unit in units:
            unit.unshard()
    try:
        yield None
    finally:
        for unit in units:
            unit.reshard()
            unit.set_reshard_after_forward(True, recurse=False)


def _full(tensor: Tensor) -> Tensor:
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def full_numel(tensor: Tensor) -> int:
    """The number of elements of the full (unsharded) tensor."""
    return int(torch.Size(tensor.shape).numel())  # a DTensor's shape is the global shape


class BucketedGather:
    """Full tensors of sharded ``(name, tensor)`` pairs, all-gathered one bucket of at most ``bucket_numel``
    elements at a time (a larger tensor is a bucket of its own). Every rank must iterate it to the end, in the
    same order (the all-gathers are collectives). ``peak_numel`` records the most elements gathered at once:
    the previous bucket is released before the next is gathered, as long as the consumer keeps no references.
    """

    def __init__(self, named_tensors: Iterable[tuple[str, Tensor]], bucket_numel: int = DEFAULT_BUCKET_NUMEL):
        if bucket_numel < 1:
            raise ValueError(f"bucket_numel must be >= 1, got {bucket_numel}")
        self.named_tensors = named_tensors
        self.bucket_numel = bucket_numel
        self.peak_numel = 0
        self.buckets = 0

    def _buckets(self) -> Iterator[list[tuple[str, Tensor]]]:
        bucket: list[tuple[str, Tensor]] = []
        size = 0
        for name, tensor in self.named_tensors:
            numel = full_numel(tensor)
            if bucket and size + numel > self.bucket_numel:
                yield bucket
                bucket, size = [], 0
            bucket.append((name, tensor))
            size += numel
        if bucket:
            yield bucket

    def __iter__(self) -> Iterator[tuple[str, Tensor]]:
        for bucket in self._buckets():
            with torch.no_grad():
                full = [(name, _full(tensor.detach())) for name, tensor in bucket]
            self.buckets += 1
            self.peak_numel = max(self.peak_numel, sum(t.numel() for _, t in full))
            while full:
                yield full.pop(0)  # handed over: the bucket keeps no reference to what it yielded
            del full


def iter_full_weights(
    named_tensors: Iterable[tuple[str, Tensor]], bucket_numel: int = DEFAULT_BUCKET_NUMEL
) -> BucketedGather:
    """``BucketedGather`` over ``named_tensors`` (e.g. ``vllm_engine.base_state_dict(model).items()``)."""
    return BucketedGather(named_tensors, bucket_numel)


def full_state_dict(model: nn.Module) -> dict[str, Tensor] | None:
    """The full weights of a sharded ``model`` on rank 0 in CPU memory (``{}`` on other ranks), gathered one
    tensor at a time, so a GPU never holds a second copy; ``None`` when ``model`` is not sharded (the caller
    then exports the module as it is). Collective: every rank calls it."""
    if not is_sharded(model):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)
