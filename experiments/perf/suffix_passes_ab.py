"""A/B of the GRPO update's length-cut suffix passes (``prefix_sharing.suffix_chunks``) in one process.

    .venv/bin/python experiments/perf/suffix_passes_ab.py --steps 3 --rollout-dtypes bfloat16 [--skip-trl]

Runs ``toolmaster.bench.grpo_vs_trl``'s own side twice, first with the length cut, then with every suffix in
one pass (what the update did before), and prints each run's step time, phases and per step the suffix
tokens: (rows, real tokens, tokens computed with padding, passes). The bench's printed table and TRL ratio
are those of the first (length-cut) run. A measurement record (docs/performance.md), not part of the package:
it swaps ``suffix_chunks`` for the second run.
"""

from __future__ import annotations

import sys
from typing import Any

import toolmaster.algorithms.prefix_sharing as prefix_sharing
from toolmaster.bench import grpo_vs_trl

length_cut = prefix_sharing.suffix_chunks
one_pass = {"on": False}
passes: list[tuple[int, int, int, int]] = []


def recorded_chunks(
    lengths: list[int], overhead: int = prefix_sharing.PASS_OVERHEAD_TOKENS
) -> list[list[int]]:
    chunks = (
        [sorted(range(len(lengths)), key=lambda r: -lengths[r])]
        if one_pass["on"]
        else length_cut(lengths, overhead)
    )
    computed = sum(len(c) * max(lengths[r] for r in c) for c in chunks)
    passes.append((len(lengths), sum(lengths), computed, len(chunks)))
    return chunks


def both_runs(*args: Any) -> dict[str, Any]:
    results = {}
    for on in (False, True):
        one_pass["on"] = on
        passes.clear()
        result = run_toolmaster(*args)
        print(
            f"one suffix pass={on}: step {grpo_vs_trl.step_times(result['times']):.1f} s, phases "
            f"{ {k: round(v, 1) for k, v in result['phases'].items()} }, suffix tokens per step "
            f"(rows, real, computed, passes) {passes}",
            flush=True,
        )
        results[on] = result
    return results[False]


run_toolmaster = grpo_vs_trl.run_toolmaster
prefix_sharing.suffix_chunks = recorded_chunks
grpo_vs_trl.run_toolmaster = both_runs

if __name__ == "__main__":
    sys.exit(grpo_vs_trl.main(sys.argv[1:]))
