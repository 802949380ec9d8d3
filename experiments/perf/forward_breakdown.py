"""Where a continuous-batching rollout's wall clock goes: forward passes against everything else.

    .venv/bin/python experiments/perf/forward_breakdown.py --dtype bfloat16 --batch 8 [--chat-format chatml]

Plays ``toolmaster.bench.rollout``'s episodes (3 x batch toolworld tasks, 4 turns, 96 tokens per turn) once
after a warm-up, with the slot batch's methods wrapped in timers: forward passes (decode steps and prefills,
counted apart), sampling, parking (``on_finish``: parsing, tool execution, next turns), dropping free slots.
Prints each one's seconds and calls, then how many decode steps ran with how many live rows. A measurement
record (docs/performance.md), not part of the package: it patches ``SlotBatch`` and ``sample_tokens``.
"""

from __future__ import annotations

import argparse
import collections
import time
from collections.abc import Callable
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--chat-format", default=None)
    args = parser.parse_args()

    from toolmaster.models import load_model
    from toolmaster.protocol import get_chat_format
    from toolmaster.samplers import hf
    from toolmaster.samplers import slot_batch as sb
    from toolmaster.samplers.engines import make_engine
    from toolmaster.samplers.loop import RolloutConfig, rollout
    from toolmaster.worlds.toolworld import build_toolworld

    lm = load_model(source="smollm2", dtype=args.dtype, seed=0)
    fmt = get_chat_format(args.chat_format or lm.chat_format)
    world = build_toolworld(seed=0)
    tasks = world.tasks("test_seen", 3 * args.batch)
    engine = make_engine(None, lm.model, lm.tokenizer, fmt)
    config = RolloutConfig(
        max_turns=4, max_new_tokens=96, temperature=1.0, batch_size=args.batch, seed=0, continuous=True
    )
    rollout(engine, lm.tokenizer, fmt, world.suite, tasks[:2], config)  # warm-up

    seconds: dict[str, float] = collections.defaultdict(float)
    calls: collections.Counter[str] = collections.Counter()
    live_rows: collections.Counter[int] = collections.Counter()

    def timed(owner: Any, name: str, label: str, count: Callable[..., None] | None = None) -> None:
        original = getattr(owner, name)

        def wrapper(*a: Any, **k: Any) -> Any:
            if count is not None:
                count(*a, **k)
            start = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                seconds[label] += time.perf_counter() - start
                calls[label] += 1

        setattr(owner, name, wrapper)

    timed(sb.SlotBatch, "decode", "decode steps", lambda self, live: live_rows.update([len(live)]))
    timed(sb.SlotBatch, "prefill", "prefill passes")
    timed(sb.SlotBatch, "park", "parking (on_finish: parse, tools, next turns)")
    timed(sb.SlotBatch, "drop_free", "dropping free slots")
    timed(hf, "sample_tokens", "sampling")
    start = time.perf_counter()
    trajectories = rollout(engine, lm.tokenizer, fmt, world.suite, tasks, config)
    total = time.perf_counter() - start
    tokens = sum(t.num_generated_tokens for t in trajectories)
    print(f"format={fmt.name} dtype={args.dtype} batch={args.batch}: {tokens} tokens in {total:.2f} s")
    for label, value in seconds.items():
        print(f"  {label}: {value:.2f} s over {calls[label]} calls ({value / total:.0%})")
    print(f"  decode steps by live rows: {dict(sorted(live_rows.items()))}")


if __name__ == "__main__":
    main()
