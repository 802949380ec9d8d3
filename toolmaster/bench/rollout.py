"""Rollout throughput: this project's batched multi-turn sampler vs plain ``model.generate``.

Both run in one process on the same model, dtype and batch width. The sampler plays ``--episodes`` real
toolworld episodes (default 3 x ``--batch``) at most ``--batch`` at a time (parsing, tool execution,
observations, prefill of each new turn, token-level continuous batching, prompt prefixes shared between
episodes); ``model.generate`` then produces
the same number of new tokens for the same opening prompts in batches of ``--batch``
(``min_new_tokens == max_new_tokens``), which is the cost of generation alone. ``--turn-batching`` switches
the sampler to turn-level batching (one engine call per turn for all live episodes) for comparison. Each side runs ``--repeats`` times, alternating, after a warm-up; the best
time of each is reported.

``--packed-linears 1,0`` runs one sampler side per value of ``sampler.engine.packed_linears`` (linear layers
on oneDNN's pre-packed weights, ``toolmaster.samplers.packed_linear``); ``--packed-generate`` adds
``model.generate`` over the same packed weights, so the engine's kernel-level gain can be told apart from
its batching. ``--stock-generate`` adds ``model.generate`` with transformers' own ``sdpa`` attention (what a plain
transformers user runs) beside the default, which uses this project's ``toolmaster_sdpa`` like the sampler.

``--chat-format chatml_rules_first`` plays the episodes with the protocol's rules before the tool list
(``toolmaster.protocol.chat_format``): prompts of different tasks then share their opening tokens, which the
sampler's prefix sharing computes once; ``model.generate`` gets the same prompts.

``--draft-tokens 0,6`` runs one sampler side per value: the HF engine's prompt-lookup speculative decoding
(``sampler.engine.draft_tokens``, ``toolmaster.samplers.prompt_lookup``) with that many drafted tokens at
most (0: off), at most ``--draft-budget`` tokens per check; each side's tokens/s and ratio to
``model.generate`` is printed, with its accepted share of drafted tokens. ``--slot-cache 1,0`` likewise runs
one side per KV layout of continuous batching (``sampler.engine.slot_cache``: 1 = per-row slots, turns
continued in place, ``toolmaster.samplers.slot_batch``; 0 = the left-padded layout, rows copied out and
merged back at every turn); ``--cache-dtype auto,model`` one side per dtype of the slots' keys and values
(``sampler.engine.cache_dtype``: ``auto`` keeps them in float32 for a bf16 model on CPU, ``model`` in the
model's dtype); with several lists, one side per combination. Sides take turns in every repeat.

``--mixed-policy`` adds the sampler over an fp32 copy of the model under bf16 autocast: what a GRPO step under
``trainer.precision=bf16-mixed`` rolled out with before ``stage.rollout_dtype`` (the default now decodes with a
bf16 copy, which is what the main side runs when ``--dtype`` is bf16).

``--vllm`` adds a third side: the same episodes through the same rollout loop with ``sampler=vllm``'s engine
(a colocated ``vllm.LLM`` serving the same weights; ``make vllm`` installs it), reported as tokens/s and as
its ratio to this project's HF sampler.

``--cpu-isa avx2`` (or ``avx512_core``) re-runs the whole bench in a child process whose oneDNN, ATen and MKL
kernels are capped to that instruction set (``toolmaster.cpu_isa``): a host without avx512_bf16, emulated on
this one; the header's ``cpu isa:`` line says what the timed process ran under.

``--random-shape qwen2.5-0.5b`` replaces SmolLM2 with a randomly initialised model of Qwen2.5-0.5B's shape
(``toolmaster.bench.shapes``): for GPU machines, where no weights can be downloaded.

    python -m toolmaster.bench.rollout --batch 8
    python -m toolmaster.bench.rollout --batch 8 --vllm
    python -m toolmaster.bench.rollout --batch 32 --vllm --random-shape qwen2.5-0.5b   # on a GPU
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import torch

from toolmaster import cpu_isa
from toolmaster.errors import ConfigError, ToolMasterError


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model-path", default=None, help="HF checkpoint dir (default: SmolLM2-135M-Instruct)"
    )
    parser.add_argument("--source", default="smollm2", choices=["smollm2", "tiny", "hf"])
    parser.add_argument("--dtype", default="auto")
    parser.add_argument(
        "--chat-format",
        default=None,
        help="the episodes' chat format (default: the model's), e.g. chatml_rules_first",
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--episodes", type=int, default=None, help="default: 3 x --batch")
    parser.add_argument("--turn-batching", action="store_true", help="batch per turn, not per token")
    parser.add_argument("--split", default="test_seen")
    parser.add_argument("--max-turns", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--draft-tokens",
        default=None,
        help="comma list: one sampler side per value of sampler.engine.draft_tokens (default: the engine's)",
    )
    parser.add_argument("--draft-budget", type=int, default=None, help="sampler.engine.draft_budget")
    parser.add_argument(
        "--slot-cache",
        default=None,
        help="comma list of 1/0: one sampler side per value of sampler.engine.slot_cache (default: the engine's)",
    )
    parser.add_argument(
        "--cache-dtype",
        default=None,
        help="comma list: one sampler side per value of sampler.engine.cache_dtype (auto, model, float32)",
    )
    parser.add_argument(
        "--packed-linears",
        default=None,
        help="comma list of 1/0: one sampler side per value of sampler.engine.packed_linears",
    )
    parser.add_argument(
        "--packed-generate",
        action="store_true",
        help="also time model.generate over the same packed linear weights (toolmaster.samplers.packed_linear)",
    )
    parser.add_argument(
        "--stock-generate",
        action="store_true",
        help="also time model.generate with transformers' own sdpa attention (not toolmaster_sdpa)",
    )
    parser.add_argument(
        "--mixed-policy",
        action="store_true",
        help="also time the sampler over an fp32 copy of the model under bf16 autocast (bf16-mixed training)",
    )
    parser.add_argument("--vllm", action="store_true", help="also time the vLLM engine on the same episodes")
    parser.add_argument(
        "--random-shape",
        default=None,
        choices=["qwen2.5-0.5b", "smollm2-135m"],
        help="a random-init model of this shape (toolmaster.bench.shapes), for machines without weights",
    )
    cpu_isa.add_argument(parser)
    args = parser.parse_args(argv)
    status = cpu_isa.rerun_if_capped(parser, args, "toolmaster.bench.rollout", argv)
    if status is not None:
        if status:
            raise SystemExit(status)
        return
    try:
        bench(args)
    except ToolMasterError as exc:
        print(f"toolmaster.bench.rollout: error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def bench(args: argparse.Namespace) -> None:
    """Load the model, play the episodes on every side and ``model.generate``, print the report."""
    from toolmaster.models import load_model
    from toolmaster.protocol import get_chat_format
    from toolmaster.protocol.prompt import opening_messages
    from toolmaster.protocol.tokenize import tokenize_conversation
    from toolmaster.samplers.engines import make_engine
    from toolmaster.samplers.loop import RolloutConfig, rollout
    from toolmaster.samplers.packed_linear import packable
    from toolmaster.worlds.toolworld import build_toolworld

    if args.random_shape:
        from toolmaster.bench.shapes import random_model
        from toolmaster.models.loading import resolve_dtype

        device = "cuda" if torch.cuda.is_available() else "cpu"
        lm = random_model(args.random_shape, resolve_dtype(args.dtype, device), device, args.seed)
    else:
        source = "hf" if args.model_path else args.source
        lm = load_model(source=source, path=args.model_path, dtype=args.dtype, seed=args.seed)
    if args.packed_generate and not packable(lm.model):
        raise ConfigError(
            f"--packed-generate: this CPU packs no {str(next(lm.model.parameters()).dtype).removeprefix('torch.')}"
            " weights (oneDNN has no bf16 products here, e.g. an AVX2-only CPU)"
        )
    fmt = get_chat_format(args.chat_format or lm.chat_format)
    world = build_toolworld(seed=args.seed)
    tasks = world.tasks(args.split, args.episodes or 3 * args.batch)
    engine = make_engine(None, lm.model, lm.tokenizer, fmt)  # the HF engine with its defaults
    draft_sides = (
        [int(k) for k in args.draft_tokens.split(",")] if args.draft_tokens else [engine.draft_tokens]
    )
    slot_sides = (
        [bool(int(k)) for k in args.slot_cache.split(",")] if args.slot_cache else [engine.slot_cache]
    )
    dtype_sides = args.cache_dtype.split(",") if args.cache_dtype else [engine.cache_dtype]
    packed_sides = (
        [bool(int(k)) for k in args.packed_linears.split(",")]
        if args.packed_linears
        else [engine.packed_linears]
    )
    engines = []
    for draft_tokens, slot_cache, cache_dtype, packed in (
        (d, s, c, p) for d in draft_sides for s in slot_sides for c in dtype_sides for p in packed_sides
    ):
        node = {
            "_target_": "toolmaster.samplers.hf.HFEngine",
            "_partial_": True,
            "draft_tokens": draft_tokens,
            "slot_cache": slot_cache,
            "cache_dtype": cache_dtype,
            "packed_linears": packed,
        }
        if args.draft_budget is not None:
            node["draft_budget"] = args.draft_budget
        engines.append(make_engine(node, lm.model, lm.tokenizer, fmt))
    engine = engines[0]
    config = RolloutConfig(
        max_turns=args.max_turns,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        batch_size=args.batch,
        seed=args.seed,
        continuous=not args.turn_batching,
    )

    prompts = []
    for task in tasks:
        schemas = [world.suite.tools[name].schema for name in task.tool_names]
        messages = opening_messages(fmt, task.query, schemas, config.trial_budget)
        prompts.append(
            tokenize_conversation(lm.tokenizer, fmt, messages, schemas, add_generation_prompt=True)[0]
        )
    pad = lm.tokenizer.pad_token_id

    def left_padded(group: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(p) for p in group)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in group], device=lm.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in group], device=lm.device)
        return ids, mask

    batches = [left_padded(prompts[i : i + args.batch]) for i in range(0, len(prompts), args.batch)]

    def run_sampler(engine) -> tuple[float, int, int, dict[str, int]]:
        """One timed rollout: seconds, generated tokens, turns and the engine's counters of that run."""
        engine.prefill_tokens = engine.shared_tokens = engine.decode_steps = engine.verify_steps = 0
        engine.drafted_tokens = engine.accepted_tokens = 0
        start = time.perf_counter()
        trajs = rollout(engine, lm.tokenizer, fmt, world.suite, tasks, config)
        elapsed = time.perf_counter() - start
        counters = {
            name: getattr(engine, name)
            for name in (
                "prefill_tokens",
                "shared_tokens",
                "drafted_tokens",
                "accepted_tokens",
                "decode_steps",
                "verify_steps",
            )
        }
        return elapsed, sum(t.num_generated_tokens for t in trajs), sum(t.turns for t in trajs), counters

    def run_generate(per_row: int) -> float:
        start = time.perf_counter()
        for input_ids, attention in batches:
            generate_batch(input_ids, attention, per_row)
        return time.perf_counter() - start

    def generate_batch(input_ids: torch.Tensor, attention: torch.Tensor, per_row: int) -> None:
        with torch.inference_mode():
            lm.model.generate(
                input_ids=input_ids,
                attention_mask=attention,
                do_sample=args.temperature > 0,
                temperature=args.temperature or None,
                top_p=1.0,
                top_k=0,
                max_new_tokens=per_row,
                min_new_tokens=per_row,
                pad_token_id=pad,
            )

    vllm_engine = None
    if args.vllm:
        started = time.perf_counter()
        vllm_node = {
            "_target_": "toolmaster.samplers.vllm_engine.VLLMEngine",
            "_partial_": True,
            "max_model_len": config.max_total_tokens,
        }
        vllm_engine = make_engine(vllm_node, lm.model, lm.tokenizer, fmt)
        print(f"vLLM engine started in {time.perf_counter() - started:.1f} s")
        rollout(vllm_engine, lm.tokenizer, fmt, world.suite, tasks[:2], config)  # warm-up

    def run_vllm() -> tuple[float, int]:
        start = time.perf_counter()
        trajs = rollout(vllm_engine, lm.tokenizer, fmt, world.suite, tasks, config)
        return time.perf_counter() - start, sum(t.num_generated_tokens for t in trajs)

    mixed_engine = None
    if args.mixed_policy:
        import copy

        mixed_model = copy.deepcopy(lm.model).float()
        mixed_engine = make_engine(None, mixed_model, lm.tokenizer, fmt)
        with torch.autocast(lm.device.type, dtype=torch.bfloat16):
            rollout(mixed_engine, lm.tokenizer, fmt, world.suite, tasks[:2], config)  # warm-up

    def run_mixed() -> tuple[float, int]:
        start = time.perf_counter()
        with torch.autocast(lm.device.type, dtype=torch.bfloat16):
            trajs = rollout(mixed_engine, lm.tokenizer, fmt, world.suite, tasks, config)
        return time.perf_counter() - start, sum(t.num_generated_tokens for t in trajs)

    for side in engines:
        rollout(side, lm.tokenizer, fmt, world.suite, tasks[:2], config)  # warm-up
    generate_batch(*batches[0], 8)
    side_runs: list[list[tuple[float, int, int, dict[str, int]]]] = [[] for _ in engines]
    generate_times, vllm_runs, stock_times, mixed_runs, packed_times = [], [], [], [], []
    per_rows: list[int] = []  # generate's tokens per row in each repeat
    for _ in range(args.repeats):
        for runs, side in zip(side_runs, engines):
            runs.append(run_sampler(side))
        per_row = max(1, math.ceil(side_runs[0][-1][1] / len(tasks)))
        per_rows.append(per_row)
        generate_times.append(run_generate(per_row))
        if args.packed_generate:
            from toolmaster.samplers.packed_linear import PackedLinears

            with PackedLinears(lm.model).active():
                packed_times.append(run_generate(per_row))
        if args.stock_generate:
            base = lm.model.get_base_model() if hasattr(lm.model, "get_base_model") else lm.model
            ours = base.config._attn_implementation
            base.set_attn_implementation("sdpa")
            try:
                stock_times.append(run_generate(per_row))
            finally:
                base.set_attn_implementation(ours)
        if mixed_engine is not None:
            mixed_runs.append(run_mixed())
        if vllm_engine is not None:
            vllm_runs.append(run_vllm())
    generate_tps = per_row * len(tasks) / min(generate_times)
    print(
        f"model={lm.name} dtype={next(lm.model.parameters()).dtype} format={fmt.name} episodes={len(tasks)} batch={args.batch} "
        f"batching={'turn' if args.turn_batching else 'token'} threads={torch.get_num_threads()}"
    )
    print(cpu_isa.describe())
    print(
        f"model.generate     : {per_row * len(tasks)} tokens in {min(generate_times):.2f} s -> {generate_tps:.1f} tokens/s"
    )
    sampler_tps = 0.0
    for runs, side in zip(side_runs, engines):
        elapsed, tokens, turns, counts = min(runs, key=lambda run: run[0])
        tps = tokens / elapsed
        sampler_tps = sampler_tps or tps  # the first side is the reference of the other comparisons
        drafting = f", drafts <= {side.draft_tokens}, budget {side.draft_budget}" if side.draft_tokens else ""
        if side.slot_cache:
            kv_dtype = side.slot_kv_dtype() or next(lm.model.parameters()).dtype
            drafting += f", slot cache ({str(kv_dtype).removeprefix('torch.')} KV)"
        else:
            drafting += ", left-padded cache"
        packed = side.packed_linears and packable(lm.model)  # an AVX2-only CPU packs no bf16 layer
        drafting += ", packed linears" if packed else ", plain linears"
        print(
            f"toolmaster sampler{drafting}: {tokens} tokens in {elapsed:.2f} s over {turns} turns -> {tps:.1f} tokens/s"
        )
        print(
            f"  prefill: {counts['prefill_tokens']} tokens run, {counts['shared_tokens']} reused from other"
            f" episodes' caches (prompts: {sum(map(len, prompts))} tokens);"
            f" {counts['decode_steps'] + counts['verify_steps']} batched steps"
        )
        if side.draft_tokens:
            accepted, drafted = counts["accepted_tokens"], counts["drafted_tokens"]
            print(
                f"  drafts: {accepted} of {drafted} drafted tokens accepted ({accepted / max(1, drafted):.0%}),"
                f" {accepted / max(1, tokens):.0%} of the generated tokens"
            )
        print(f"  ratio (sampler / generate): {tps / generate_tps:.2f}")
        if len(runs) > 1:  # each repeat's ratio against the generate run of the same repeat
            paired = [
                (run[1] / run[0]) / (rows * len(tasks) / g)
                for run, g, rows in zip(runs, generate_times, per_rows)
            ]
            print(f"  ratio per repeat: {', '.join(f'{r:.2f}' for r in paired)}")
    if packed_times:
        packed_tps = per_row * len(tasks) / min(packed_times)
        print(
            f"model.generate, packed linears: {per_row * len(tasks)} tokens in {min(packed_times):.2f} s -> {packed_tps:.1f} tokens/s"
        )
        print(f"ratio (sampler / generate with packed linears): {sampler_tps / packed_tps:.2f}")
    if stock_times:
        stock_tps = per_row * len(tasks) / min(stock_times)
        print(
            f"model.generate, transformers sdpa: {per_row * len(tasks)} tokens in {min(stock_times):.2f} s -> {stock_tps:.1f} tokens/s"
        )
        print(f"ratio (sampler / generate with transformers sdpa): {sampler_tps / stock_tps:.2f}")
    if mixed_runs:
        mixed_time, mixed_tokens = min(mixed_runs)
        mixed_tps = mixed_tokens / mixed_time
        print(
            f"sampler, fp32 policy under bf16 autocast: {mixed_tokens} tokens in {mixed_time:.2f} s -> {mixed_tps:.1f} tokens/s"
        )
        print(
            f"ratio (sampler on this dtype's weights / fp32 policy under autocast): {sampler_tps / mixed_tps:.2f}"
        )
    if vllm_runs:
        vllm_time, vllm_tokens = min(vllm_runs)
        vllm_tps = vllm_tokens / vllm_time
        print(f"vLLM engine        : {vllm_tokens} tokens in {vllm_time:.2f} s -> {vllm_tps:.1f} tokens/s")
        print(f"ratio (vLLM / toolmaster HF sampler): {vllm_tps / sampler_tps:.2f}")


if __name__ == "__main__":
    main()
