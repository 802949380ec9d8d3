"""A KV cache of fixed row slots, each with its own length: the HF engine's continuous-batching layout.

The left-padded layout of ``kv_cache`` aligns every row's newest position in one column, so a row that
ends its turn must leave the batch (the others copied into a new buffer), have its cache copied out, and
come back through a fresh prefill merged in with another copy of everything: three copies of the whole
batch's keys and values per turn boundary (11.9 s of a 112 s rollout of paper_cpu's SFT policy at batch 16,
profiled on this CPU). Here each row owns a slot ``[heads, capacity, dim]`` in every layer and writes its
tokens at its own columns ``[0, length)``. An episode's next turn appends its observation to its own slot
in place, a rejected speculative draft is just not counted into the length, and only an episode that ends
with nothing to take its place costs a copy (the batch shrinks: the slots behind it move forward in place,
one slot each, and the room it leaves is what the next new slot takes; the rollout tail of docs/performance.md
spent 0.72 s of 32 s re-allocating and copying every kept slot instead, now 0.03 s).

Every forward pass goes through a ``write plan`` set by the engine before the call (``plan``): which
slots the batch rows are (all, in order, or a subset), the column each fed token writes, and how many
columns the attention reads. The caller builds the matching attention mask itself (``visible``), a 4D
mask that transformers passes through unchanged: query ``t`` of row ``i`` sees its slot's columns up to
the one it wrote. Padding tokens of a left-padded prefill write into a scratch column (the last one),
which no mask shows.

Slots may hold keys and values in another dtype than the model computes them in (``SlotKV(dtype=...)``):
the HF engine keeps them in float32 for a bf16 model on CPU (``cache_dtype``), because the bf16 decode
attention (``toolmaster.models.attention.decode_attention``) works in float32 and would otherwise upcast the
whole cache of every layer at every decode step: 70 % of a bf16 decode step of SmolLM2 at batch 16 with 600
cached positions (torch profiler, ``aten::copy_``). bf16 values are exact in float32, so nothing changes but
the copy; prefill passes (flash kernel) cast the visible columns back to the query's dtype once per pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from toolmaster.samplers.kv_cache import KV


@dataclass
class WritePlan:
    """Where the next forward pass writes: batch row b is slot ``rows[b]`` (None: row b is slot b, all
    slots), its token t goes to column ``columns[b, t]``, attention reads columns ``[0, width)``."""

    rows: torch.Tensor | None = None
    columns: torch.Tensor | None = None
    width: int = 0
    contiguous: tuple[int, int] | None = None  # rows are the slot range [start, stop): read a view
    index: torch.Tensor | None = None  # [batch, 1] slot of each batch row, for the writes


class SlotLayer(DynamicLayer):
    """One layer's keys and values in [slots, heads, capacity, dim] buffers, written where the plan says."""

    def __init__(self, owner: SlotKV) -> None:
        super().__init__()
        self.owner = owner
        self.key_buffer: torch.Tensor | None = None
        self.value_buffer: torch.Tensor | None = None

    def allocate(self, like: torch.Tensor) -> None:
        shape = (self.owner.slots, like.shape[1], self.owner.capacity, like.shape[-1])
        dtype = self.owner.dtype or like.dtype
        self.key_buffer = like.new_zeros(shape, dtype=dtype)
        self.value_buffer = like.new_zeros(shape, dtype=dtype)
        self.dtype, self.device = dtype, like.device
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.allocate(key_states)

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        assert self.key_buffer is not None and self.value_buffer is not None
        plan = self.owner.plan
        assert plan.index is not None, "set a write plan before the forward pass"
        # (under autocast a layer's keys may come in another dtype than the first pass allocated)
        self.key_buffer[plan.index, :, plan.columns] = key_states.transpose(1, 2).to(self.key_buffer.dtype)
        self.value_buffer[plan.index, :, plan.columns] = value_states.transpose(1, 2).to(
            self.value_buffer.dtype
        )
        slots = self.owner.slots  # (the buffers may hold more: slots dropped in place stay allocated)
        keys = self.key_buffer[:slots, :, : plan.width]
        values = self.value_buffer[:slots, :, : plan.width]
        if plan.contiguous is not None:
            start, stop = plan.contiguous
            keys, values = keys[start:stop], values[start:stop]
        elif plan.rows is not None:
            keys, values = keys.index_select(0, plan.rows), values.index_select(0, plan.rows)
        self.keys, self.values = keys, values
        return keys, values

    def resize(self, capacity: int) -> None:
        """Buffers of ``capacity`` columns for exactly the owner's slots (one copy of the live slots; room
        dropped slots left behind is not carried over, new room is zeroed). A no-op when the slots fit in
        buffers of that capacity already."""
        if self.key_buffer is None or self.value_buffer is None:
            return
        if self.key_buffer.shape[0] >= self.owner.slots and self.key_buffer.shape[2] == capacity:
            return
        slots = self.owner.slots
        for name in ("key_buffer", "value_buffer"):
            old = getattr(self, name)[:slots]
            new = old.new_zeros((slots, old.shape[1], capacity, old.shape[3]))
            keep = min(capacity, old.shape[2])
            new[: len(old), :, :keep] = old[:, :, :keep]
            setattr(self, name, new)

    def compact(self, keep: list[int]) -> None:
        """Move slots ``keep`` (ascending) to the front, in place: only the slots after the first dropped one
        are copied, one slot each, and nothing is allocated. What lies behind the owner's count is stale and
        never read: a slot taken again is written from column 0 and its mask hides the rest."""
        if self.key_buffer is None or self.value_buffer is None:
            return
        for new, old in enumerate(keep):
            if new != old:  # new < old: a forward copy never overwrites a slot still to be moved
                self.key_buffer[new] = self.key_buffer[old]
                self.value_buffer[new] = self.value_buffer[old]


class SlotKV:
    """The slots of every layer, their capacity, and the plan of the next forward pass."""

    def __init__(self, slots: int, capacity: int, spare: int, dtype: torch.dtype | None = None) -> None:
        self.slots = slots
        self.dtype = dtype  # of the buffers (None: the dtype the model's keys come in)
        self.capacity = capacity
        self.spare = spare  # extra columns taken whenever the capacity grows
        self.plan = WritePlan()
        self.cache = DynamicCache()
        self.cache.layer_class_to_replicate = lambda: SlotLayer(self)  # layers made by the first forward
        self.cache.layers = []

    @property
    def layers(self) -> list[SlotLayer]:
        return self.cache.layers  # type: ignore[return-value]

    @property
    def scratch(self) -> int:
        """The column padding tokens write to (never shown to a query)."""
        return self.capacity - 1

    def reserve(self, width: int) -> None:
        """Room for ``width`` visible columns plus the scratch column (grows with one copy when short)."""
        if width < self.capacity:
            return
        self.capacity = max(width + 1 + self.spare, self.capacity * 3 // 2)
        for layer in self.layers:
            layer.resize(self.capacity)

    def add_slots(self, count: int) -> None:
        """``count`` more slots: room dropped slots left behind first, else grown buffers (one copy)."""
        self.slots += count
        for layer in self.layers:
            layer.resize(self.capacity)

    def keep_slots(self, keep: list[int]) -> None:
        """Drop every slot not in ``keep`` (ascending; the kept ones move to the front in that order),
        in place (``SlotLayer.compact``)."""
        if keep != sorted(keep):
            raise ValueError(f"keep_slots takes the kept slots in ascending order, got {keep}")
        self.slots = len(keep)
        for layer in self.layers:
            layer.compact(keep)

    def load(self, slot: int, kv: KV) -> None:
        """Write a saved cache (per layer [1, heads, length, dim]) into ``slot``'s first columns."""
        length = kv[0][0].shape[2]
        self.reserve(length)
        while len(self.layers) < len(kv):
            self.layers.append(SlotLayer(self))
        for layer, (keys, values) in zip(self.layers, kv):
            if layer.key_buffer is None:
                layer.allocate(keys)
            layer.key_buffer[slot, :, :length] = keys[0]  # type: ignore[index]
            layer.value_buffer[slot, :, :length] = values[0]  # type: ignore[index]

    def view(self, slot: int, length: int) -> KV:
        """``slot``'s first ``length`` columns as views (valid until the next write or resize)."""
        return [
            (layer.key_buffer[slot : slot + 1, :, :length], layer.value_buffer[slot : slot + 1, :, :length])  # type: ignore[index]
            for layer in self.layers
        ]

    def copy(self, slot: int, length: int, dtype: torch.dtype | None = None) -> KV:
        """``slot``'s first ``length`` columns, copied out (for the prefix store), in ``dtype`` (None: the
        buffers')."""
        return [
            (keys.to(dtype, copy=True), values.to(dtype, copy=True))
            for keys, values in self.view(slot, length)
        ]

    def set_plan(self, rows: list[int] | None, columns: torch.Tensor, width: int) -> None:
        """The next forward pass: batch rows are slots ``rows`` (None: all slots), token t of row b
        writes column ``columns[b, t]`` (below ``width``, or ``scratch``; ``reserve(width)`` first)."""
        if rows is None:
            index = torch.arange(self.slots, device=columns.device)
            self.plan = WritePlan(None, columns, width, None, index[:, None])
            return
        start = rows[0]
        contiguous = (start, start + len(rows)) if rows == list(range(start, start + len(rows))) else None
        index = torch.tensor(rows, dtype=torch.long, device=columns.device)
        self.plan = WritePlan(index, columns, width, contiguous, index[:, None])


def visible(query_columns: torch.Tensor, width: int) -> torch.Tensor:
    """The 4D boolean mask [rows, 1, queries, width]: each query sees its slot's columns up to its own."""
    columns = torch.arange(width, device=query_columns.device)
    return (columns[None, None, :] <= query_columns[:, :, None])[:, None]


def as_model_mask(mask: torch.Tensor, model: object, dtype: torch.dtype) -> torch.Tensor:
    """The mask in the form the model's attention takes: boolean for SDPA, additive for eager."""
    if attention_implementation(model) == "eager":
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
            ~mask, torch.finfo(dtype).min
        )
    return mask


def attention_implementation(model: object) -> str | None:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    return getattr(config, "_attn_implementation", None)


SLOT_ATTENTION = ("sdpa", "toolmaster_sdpa", "eager")  # implementations that take a custom 4D mask
