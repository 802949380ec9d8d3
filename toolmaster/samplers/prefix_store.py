"""Shared-prefix KV reuse between episodes of one rollout (the HF engine's prefix cache).

Episodes of a rollout often open with the same tokens: the ``n_samples`` episodes of a task (a GRPO
group) have identical prompts, and toolworld tasks that offer the same tools share ~300 of their ~345
prompt tokens. Causal attention makes the keys and values of a prefix independent of what follows, so a
new episode can start from another episode's cache and prefill only where the two differ.

``PrefixStore`` keeps (token ids, KV) pairs of finished episodes, least recently used first out, and
answers "which stored entry shares the longest prefix with this prompt". It never outlives the
weights that produced it: the HF engine drops it (and every episode's saved cache) when the parameters'
version counters show an in-place update since its last call (an optimizer step, a weight sync), and the
rollout loop clears it at the start and end of every rollout. vLLM's automatic
prefix caching does the same job in ``sampler=vllm``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from toolmaster.samplers.kv_cache import KV


def common_prefix_length(a: list[int], b: list[int]) -> int:
    """Number of leading tokens ``a`` and ``b`` share."""
    length = 0
    for x, y in zip(a, b):
        if x != y:
            break
        length += 1
    return length


class PrefixStore:
    """At most ``capacity`` (ids, KV) entries; lookups return the longest usable shared prefix."""

    def __init__(self, capacity: int = 16) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[int, tuple[list[int], KV]] = OrderedDict()
        self._next = 0

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, ids: list[int], kv: KV) -> None:
        if self.capacity <= 0:
            return
        self._entries[self._next] = (ids, kv)
        self._next += 1
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def longest(
        self, prompt: list[int], others: Iterable[tuple[list[int], KV]] = (), min_length: int = 1
    ) -> tuple[int, KV | None]:
        """The longest prefix of ``prompt`` held by a stored entry or one of ``others``, capped at
        ``len(prompt) - 1`` (the last prompt token must run to give the next-token logits); the KV
        comes back sliced to that length (views, no copy). Entries that do not share the first
        ``min_length`` tokens are skipped with one C-level list comparison."""
        best, best_kv, best_key = 0, None, None
        head = prompt[: max(1, min_length)]
        candidates = [(key, entry) for key, entry in self._entries.items()]
        candidates += [(None, entry) for entry in others]
        for key, (ids, kv) in candidates:
            if ids[: len(head)] != head:
                continue
            length = min(common_prefix_length(prompt, ids), len(prompt) - 1)
            if length > best:
                best, best_kv, best_key = length, kv, key
        if best_kv is None:
            return 0, None
        if best_key is not None:
            self._entries.move_to_end(best_key)
        return best, [(keys[:, :, :best], values[:, :, :best]) for keys, values in best_kv]
