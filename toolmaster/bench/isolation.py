"""Rollout throughput with process isolation of tool calls against the in-thread path, on toolworld.

The same episodes run through the real rollout loop twice per repeat, alternating: ``tools.isolation=process``
(tool host spawned from the world's spec, a fork per episode phase and per call) and ``thread``. Reports
episodes/s of each (best of ``--repeats`` after a warm-up) and the ratio process / thread (target >= 0.95).

``--engine scripted`` (default) replays each task's gold calls as one trial and then execution calls, with
no model cost at all: the worst case for isolation, where tool calls are all the work. ``--engine hf`` plays
the episodes with ``--source`` (``tiny``: random weights, ``smollm2``: SmolLM2-135M) through the HF engine,
or with ``--path DIR``, a trained export (e.g. ``<run dir>/toolmaster_sft/hf``), whose episodes call tools:
the zero-shot SmolLM2 calls none, so it measures only per-episode set-up.

    python -m toolmaster.bench.isolation
    python -m toolmaster.bench.isolation --engine hf --source smollm2 --batch 8
    python -m toolmaster.bench.isolation --engine hf --path outputs/experiments/paper_small/seed0/toolmaster_sft/hf
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engine", default="scripted", choices=["scripted", "hf"])
    parser.add_argument("--source", default="tiny", choices=["tiny", "smollm2", "hf"])
    parser.add_argument("--path", default=None, help="a saved HF model directory (implies --source hf)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--episodes", type=int, default=48)
    parser.add_argument("--split", default="test_seen")
    parser.add_argument("--max-turns", type=int, default=6)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from toolmaster.envs.calls import Isolation
    from toolmaster.models import load_model
    from toolmaster.protocol import get_chat_format
    from toolmaster.samplers.loop import RolloutConfig, rollout
    from toolmaster.worlds.toolworld import build_toolworld

    source = "hf" if args.path else args.source
    lm = load_model(source=source, path=args.path, dtype="float32", device="cpu", seed=args.seed)
    fmt = get_chat_format(lm.chat_format)
    world = build_toolworld(seed=args.seed)
    world.suite.origin = {"_target_": "toolmaster.worlds.toolworld.build_toolworld", "seed": args.seed}
    tasks = world.tasks(args.split, args.episodes)
    if args.engine == "scripted":
        from toolmaster.samplers.scripted import ScriptedEngine

        engine = ScriptedEngine(lm.tokenizer, gold_player(tasks, fmt))
    else:
        from toolmaster.samplers.hf import HFEngine

        engine = HFEngine(lm.model, lm.tokenizer, stop_strings=fmt.tags.closing_tags())
    config = RolloutConfig(
        max_turns=args.max_turns,
        max_new_tokens=args.max_new_tokens,
        temperature=1.0,
        batch_size=args.batch,
        seed=args.seed,
    )

    def run(mode: str, episodes: list = tasks) -> tuple[float, int]:
        world.suite.isolation = Isolation(mode)
        start = time.perf_counter()
        trajs = rollout(engine, lm.tokenizer, fmt, world.suite, episodes, replace(config))
        errors[mode] = sorted({c["error"] for t in trajs for c in t.calls if c["error"]})
        return time.perf_counter() - start, sum(len(t.calls) for t in trajs)

    errors: dict[str, list[str]] = {}
    for mode in ("process", "thread"):  # warm-up: starts the tool host, fills caches
        run(mode, tasks[:2])
    times: dict[str, list[float]] = {"process": [], "thread": []}
    calls = 0
    for _ in range(args.repeats):
        for mode in ("process", "thread"):
            elapsed, calls = run(mode)
            times[mode].append(elapsed)
    best = {mode: min(values) for mode, values in times.items()}
    print(
        f"engine={args.engine} model={lm.name} episodes={len(tasks)} batch={args.batch} "
        f"tool calls per rollout={calls}"
    )
    for mode in ("process", "thread"):
        print(
            f"isolation={mode:7s}: {len(tasks) / best[mode]:.1f} episodes/s (best of {args.repeats}: {best[mode]:.2f} s)"
        )
    print(f"ratio (process / thread): {best['thread'] / best['process']:.3f}; error kinds seen: {errors}")


def gold_player(tasks: list, fmt):
    """A scripted turn function: the first gold call as a trial, each gold call for real, the gold answer."""
    by_query = {task.query: task for task in tasks}

    def respond(prompt: str) -> str:
        task = next(t for q, t in by_query.items() if q in prompt)
        done = prompt.count(fmt.generation_prompt()) - 1
        steps = [("trial", task.gold_calls[0])] if task.gold_calls else []
        steps += [("call", call) for call in task.gold_calls]
        if done >= len(steps):
            return f"<answer>{task.answer}</answer>"
        kind, call = steps[done]
        return f"<{kind}>{json.dumps({'name': call['name'], 'arguments': call['arguments']})}</{kind}>"

    return respond


if __name__ == "__main__":
    main()
