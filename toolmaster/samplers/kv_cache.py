"""The HF engine's KV cache: per-layer buffers with spare positions, written in place.

transformers' ``DynamicCache`` appends by concatenation, so every decode step copies every layer's keys
and values (12% of a batch-8 decode step of SmolLM2 at 700 cached positions on this CPU, profiled with
``torch.profiler``). ``BufferedLayer`` keeps each layer in a buffer with ``spare`` free positions at the
end; appending writes into them, and ``keys``/``values`` are views of the used part, which is what the
attention reads. The buffer grows (one copy) only when the spare room runs out.

The layout helpers of the HF engine's continuous batching work on these buffers too: ``merge`` stacks two
batches with one copy into a fresh buffer (rows right-aligned, the narrower batch left-padded with masked
zeros), ``trim_left`` drops leading positions that every row masks without copying (the buffers become
views that start later), ``row_kv`` copies one row's unmasked positions out for reuse in a later turn,
``trim_right`` forgets trailing positions every row masks (rejected speculative drafts) so that the next
append reuses them.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values of one row, [1, heads, length, dim]


class BufferedLayer(DynamicLayer):
    """One layer's keys and values in [batch, heads, capacity, dim] buffers; ``length`` positions are used."""

    def __init__(self, spare: int) -> None:
        super().__init__()
        self.spare = spare
        self.length = 0
        self.key_buffer: torch.Tensor | None = None
        self.value_buffer: torch.Tensor | None = None

    def allocate(self, like: torch.Tensor, batch: int, length: int, extra: int) -> None:
        """Zeroed buffers for ``batch`` rows: ``length`` used positions, room for ``extra`` + spare more."""
        shape = (batch, like.shape[1], length + extra + self.spare, like.shape[3])
        self.key_buffer = like.new_zeros(shape)
        self.value_buffer = like.new_zeros(shape)
        self.dtype, self.device = like.dtype, like.device
        self.length = length
        self.is_initialized = True
        self._expose()

    def _expose(self) -> None:
        assert self.key_buffer is not None and self.value_buffer is not None
        self.keys = self.key_buffer[:, :, : self.length]
        self.values = self.value_buffer[:, :, : self.length]

    @property
    def capacity(self) -> int:
        return 0 if self.key_buffer is None else self.key_buffer.shape[2]

    def _reserve(self, extra: int) -> None:
        if self.length + extra <= self.capacity:
            return
        keys, values = self.keys, self.values
        self.allocate(keys, keys.shape[0], self.length, extra)
        self.key_buffer[:, :, : self.length] = keys  # type: ignore[index]
        self.value_buffer[:, :, : self.length] = values  # type: ignore[index]

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.allocate(key_states, key_states.shape[0], 0, key_states.shape[2])

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        added = key_states.shape[2]
        self._reserve(added)
        end = self.length + added
        self.key_buffer[:, :, self.length : end] = key_states  # type: ignore[index]
        self.value_buffer[:, :, self.length : end] = value_states  # type: ignore[index]
        self.length = end
        self._expose()
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            self.key_buffer = self.key_buffer[indices]  # type: ignore[index]
            self.value_buffer = self.value_buffer[indices]  # type: ignore[index]
            self._expose()

    def drop_front(self, start: int) -> None:
        """Forget the first ``start`` positions without copying (the buffers become later-starting views)."""
        self.key_buffer = self.key_buffer[:, :, start:]  # type: ignore[index]
        self.value_buffer = self.value_buffer[:, :, start:]  # type: ignore[index]
        self.length -= start
        self._expose()

    def drop_back(self, count: int) -> None:
        """Forget the last ``count`` positions (the next ``update`` writes over them)."""
        self.length -= count
        self._expose()


def new_cache(spare: int, num_layers: int = 0) -> DynamicCache:
    """A cache of buffered layers keeping ``spare`` free positions each; the model's first forward pass
    adds the layers it writes, ``num_layers`` creates some up front."""
    cache = DynamicCache()
    cache.layer_class_to_replicate = lambda: BufferedLayer(spare)
    cache.layers = [BufferedLayer(spare) for _ in range(num_layers)]
    return cache


def preload(cache: DynamicCache, saved: list[KV | None], lengths: list[int], width: int, extra: int) -> None:
    """Fill ``cache`` with each row's saved KV right-aligned in ``width`` positions (rows without KV stay
    masked zeros), leaving room for ``extra`` positions the coming forward pass appends."""
    sample = next(kv for kv in saved if kv is not None)
    while len(cache.layers) < len(sample):
        cache.layers.append(cache.layer_class_to_replicate())
    for index, layer in enumerate(cache.layers):
        layer.allocate(sample[index][0], len(saved), width, extra)  # type: ignore[attr-defined]
        for row, kv in enumerate(saved):
            if kv is not None:
                layer.key_buffer[row, :, width - lengths[row] : width] = kv[index][0][0]  # type: ignore[attr-defined]
                layer.value_buffer[row, :, width - lengths[row] : width] = kv[index][1][0]  # type: ignore[attr-defined]


def merge(
    a: tuple[DynamicCache, torch.Tensor], b: tuple[DynamicCache, torch.Tensor], spare: int
) -> tuple[DynamicCache, torch.Tensor]:
    """Stack two (cache, attention mask) batches; the narrower one is left-padded (masked) to match."""
    (cache_a, att_a), (cache_b, att_b) = a, b
    rows_a, width_a, width_b = att_a.shape[0], att_a.shape[1], att_b.shape[1]
    width = max(width_a, width_b)
    merged = new_cache(spare, len(cache_a.layers))
    for layer, la, lb in zip(merged.layers, cache_a.layers, cache_b.layers):
        layer.allocate(la.keys, rows_a + att_b.shape[0], width, 0)  # type: ignore[attr-defined]
        layer.key_buffer[:rows_a, :, width - width_a : width] = la.keys  # type: ignore[attr-defined]
        layer.value_buffer[:rows_a, :, width - width_a : width] = la.values  # type: ignore[attr-defined]
        layer.key_buffer[rows_a:, :, width - width_b : width] = lb.keys  # type: ignore[attr-defined]
        layer.value_buffer[rows_a:, :, width - width_b : width] = lb.values  # type: ignore[attr-defined]
    attention = torch.cat(
        [
            torch.nn.functional.pad(att_a, (width - width_a, 0)),
            torch.nn.functional.pad(att_b, (width - width_b, 0)),
        ]
    )
    return merged, attention


def trim_left(cache: DynamicCache, attention: torch.Tensor) -> torch.Tensor:
    """Drop leading positions that every row masks (left behind by rows that left the batch), in place;
    return the trimmed attention mask."""
    used = attention.any(dim=0).nonzero()
    start = int(used[0]) if len(used) else attention.shape[1]
    if start == 0:
        return attention
    for layer in cache.layers:
        layer.drop_front(start)  # type: ignore[attr-defined]
    return attention[:, start:]


def trim_right(cache: DynamicCache, attention: torch.Tensor) -> torch.Tensor:
    """Drop trailing positions that every row masks (rejected draft tokens), in place: the buffers keep
    their room and the next append overwrites them; return the trimmed attention mask."""
    used = attention.any(dim=0).nonzero()
    end = int(used[-1]) + 1 if len(used) else 0
    drop = attention.shape[1] - end
    if drop == 0:
        return attention
    for layer in cache.layers:
        layer.drop_back(drop)  # type: ignore[attr-defined]
    return attention[:, :end]


def row_kv(cache: DynamicCache, index: int, attention_row: torch.Tensor) -> KV:
    """Copy one row's unmasked keys and values out of the batch (index_select copies)."""
    keep = attention_row.nonzero().squeeze(-1)
    return [
        (
            layer.keys[index : index + 1].index_select(2, keep),
            layer.values[index : index + 1].index_select(2, keep),
        )
        for layer in cache.layers
    ]
