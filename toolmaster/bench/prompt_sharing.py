"""GRPO update cost with and without shared prompts (``stage.share_prompts``), side by side in one run.

Rolls out ``--tasks`` toolworld train tasks x ``--group-size`` episodes with the HF sampler (real episodes:
trial and execution calls, observations), packs them as the GRPO stage does (a group's rows together), then
times the update's forward + backward over the micro-batches (``--micro-batch``) once with each prompt run
per row (the plain pass) and once with each group's prompt run once (``toolmaster.algorithms.prefix_sharing``),
alternating, ``--repeats`` times after a warm-up, best time each. Also prints the tokens each side runs
through the model and the largest log-prob difference between the two on the loss tokens.

    python -m toolmaster.bench.prompt_sharing                  # SmolLM2-135M-Instruct, 2 tasks x G = 4
    python -m toolmaster.bench.prompt_sharing --tasks 2 --group-size 8 --micro-batch 8
"""

from __future__ import annotations

import argparse
import time

import torch


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", default="smollm2", choices=["smollm2", "tiny"])
    parser.add_argument("--tasks", type=int, default=2)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--max-turns", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--trial-budget", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from toolmaster.algorithms.logprobs import policy_logprobs
    from toolmaster.algorithms.packing import pack_trajectories
    from toolmaster.algorithms.prefix_sharing import plan_prefixes
    from toolmaster.models import load_model
    from toolmaster.protocol import get_chat_format
    from toolmaster.samplers.engines import make_engine
    from toolmaster.samplers.loop import RolloutConfig, rollout
    from toolmaster.worlds.toolworld import build_toolworld

    torch.manual_seed(args.seed)
    lm = load_model(source=args.source, dtype="float32", device="cpu", seed=args.seed)
    fmt = get_chat_format(lm.chat_format)
    world = build_toolworld(seed=args.seed)
    tasks = world.tasks("train", args.tasks)
    engine = make_engine(None, lm.model, lm.tokenizer, fmt)
    config = RolloutConfig(
        max_turns=args.max_turns,
        max_new_tokens=args.max_new_tokens,
        temperature=1.0,
        batch_size=len(tasks) * args.group_size,
        seed=args.seed,
        trial_budget=args.trial_budget,
    )
    grouped = [task for task in tasks for _ in range(args.group_size)]
    trajectories = rollout(engine, lm.tokenizer, fmt, world.suite, grouped, config)
    groups = [i // args.group_size for i in range(len(trajectories))]
    advantages = torch.randn(len(trajectories))
    packed = pack_trajectories(trajectories, advantages, lm.tokenizer.pad_token_id, groups=groups)
    micro = list(packed.micro_batches(args.micro_batch))

    plain_tokens = sum(mb.input_ids.numel() for mb in micro)
    shared_tokens = 0
    for mb in micro:
        plan = plan_prefixes(mb.input_ids, mb.loss_mask, mb.lengths)
        starts = [plan.prefix_lengths[c] for c in plan.prefix_of]
        suffix = max(int(n) - s for n, s in zip(mb.lengths.tolist(), starts))
        shared_tokens += len(plan.prefix_rows) * max(plan.prefix_lengths) + len(mb) * suffix
    print(
        f"{len(trajectories)} episodes, {int(packed.lengths.sum())} tokens "
        f"({int(packed.loss_mask.sum())} sampled), micro-batches of {args.micro_batch}; "
        f"tokens run (with padding): plain {plain_tokens}, shared {shared_tokens}"
    )

    model = lm.model
    model.train()

    def update(share: bool) -> tuple[float, list[torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        outputs = []
        start = time.perf_counter()
        for mb in micro:
            logprobs, _ = policy_logprobs(model, mb, 1.0, with_entropy=True, share_prompts=share)
            (-(logprobs * mb.loss_mask * mb.advantages[:, None]).sum()).backward()
            outputs.append(logprobs.detach())
        return time.perf_counter() - start, outputs

    update(True)  # warm-up
    best = {False: float("inf"), True: float("inf")}
    results = {}
    for _ in range(args.repeats):
        for share in (False, True):
            seconds, results[share] = update(share)
            best[share] = min(best[share], seconds)
    difference = max(
        float((a - b)[mb.loss_mask].abs().max()) for a, b, mb in zip(results[False], results[True], micro)
    )
    print(f"plain  (each row runs its prompt)   {best[False]:7.2f} s")
    print(f"shared (each prompt runs once)      {best[True]:7.2f} s")
    print(f"ratio shared / plain: {best[True] / best[False]:.2f}; max |log-prob difference| {difference:.1e}")


if __name__ == "__main__":
    main()
