"""Paired timing of the rejected fused prefill (``fused_prefill.patch``): each decode step that carries the
prefill of joining turns, against the same state run as a decode step and a prefill pass.

    git apply experiments/perf/fused_prefill.patch
    .venv/bin/python experiments/perf/fused_prefill_pairs.py
    git apply -R experiments/perf/fused_prefill.patch

Plays 12 of ``toolmaster.bench.rollout``'s bf16 episodes at batch 8. At every fused step it snapshots the
slot cache, runs the fused pass (timed), restores the snapshot, runs the two passes the engine would run
without fusion (timed), and restores the fused result so the rollout goes on as fused. Prints per step
(live rows, slots, new tokens per joining slot, fused ms, decode ms, prefill ms) and the sums. Needs the
patch: on main ``SlotBatch.decode`` takes no joining slots.
"""

from __future__ import annotations

import time
from typing import Any


def main() -> None:
    from toolmaster.models import load_model
    from toolmaster.protocol import get_chat_format
    from toolmaster.samplers import slot_batch as sb
    from toolmaster.samplers.engines import make_engine
    from toolmaster.samplers.loop import RolloutConfig, rollout
    from toolmaster.worlds.toolworld import build_toolworld

    lm = load_model(source="smollm2", dtype="bfloat16", seed=0)
    fmt = get_chat_format(lm.chat_format)
    world = build_toolworld(seed=0)
    tasks = world.tasks("test_seen", 24)
    decode = sb.SlotBatch.decode
    records: list[tuple[Any, ...]] = []

    def buffers(batch: Any) -> list[tuple[Any, Any]]:
        return [(layer.key_buffer.clone(), layer.value_buffer.clone()) for layer in batch.kv.layers]

    def restore(batch: Any, saved: list[tuple[Any, Any]]) -> None:
        for layer, (keys, values) in zip(batch.kv.layers, saved):
            layer.key_buffer.copy_(keys)
            layer.value_buffer.copy_(values)

    def paired(self: Any, live: list[int], joining: list[int] | None = None) -> None:
        if not joining:
            return decode(self, live)
        self.kv.reserve(max(self.lengths) + 400)  # no growth inside the pair: snapshots stay restorable
        before, lengths = buffers(self), list(self.lengths)
        logits, exclude = self.logits.clone(), self.exclude.clone()
        new = [len(self.rows[slot].request.prompt) - lengths[slot] for slot in joining]
        start = time.perf_counter()
        decode(self, live, joining)
        fused = time.perf_counter() - start
        after, after_lengths = buffers(self), list(self.lengths)
        after_logits, after_exclude = self.logits.clone(), self.exclude.clone()
        restore(self, before)
        self.lengths[:], self.logits, self.exclude = lengths, logits, exclude
        start = time.perf_counter()
        decode(self, live)
        alone = time.perf_counter() - start
        start = time.perf_counter()
        self.prefill(joining)
        prefill = time.perf_counter() - start
        records.append((len(live), len(self.rows), new, fused * 1e3, alone * 1e3, prefill * 1e3))
        restore(self, after)
        self.lengths[:], self.logits, self.exclude = after_lengths, after_logits, after_exclude

    sb.SlotBatch.decode = paired  # type: ignore[method-assign]
    config = RolloutConfig(
        max_turns=4, max_new_tokens=96, temperature=1.0, batch_size=8, seed=0, continuous=True
    )
    engine = make_engine(None, lm.model, lm.tokenizer, fmt)
    rollout(engine, lm.tokenizer, fmt, world.suite, tasks[:12], config)
    for live, slots, new, fused, alone, prefill in records:
        print(
            f"live {live}, slots {slots}, new {new}: fused {fused:.0f} ms, decode {alone:.0f} + prefill {prefill:.0f} ms"
        )
    fused_sum = sum(r[3] for r in records)
    separate_sum = sum(r[4] + r[5] for r in records)
    print(f"sum over {len(records)} steps: fused {fused_sum:.0f} ms, separate {separate_sum:.0f} ms")


if __name__ == "__main__":
    main()
