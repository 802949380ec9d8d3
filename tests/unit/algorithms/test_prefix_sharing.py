"""Shared-prompt log-probs (``toolmaster.algorithms.prefix_sharing``) against the plain forward pass.

The model is the project's tiny random Llama (real transformers code, SmolLM2's vocabulary): what is tested
is the batching, not the weights. Rows mimic GRPO groups: several episodes continue one prompt, with gaps in
the loss mask where observations sit, different lengths (padding), and a row whose prompt nobody shares.
"""

from __future__ import annotations

import itertools
import random
import re

import pytest
import torch
from peft import LoraConfig

from toolmaster.algorithms.fused_head import fused_head_parts
from toolmaster.algorithms.logprobs import policy_logprobs
from toolmaster.algorithms.packing import pack_trajectories
from toolmaster.algorithms.prefix_sharing import (
    MIN_SHARED_TOKENS,
    plan_prefixes,
    shared_prefix_logprobs,
    suffix_chunks,
    worth_sharing,
)
from toolmaster.models import load_model
from toolmaster.trajectory import Trajectory


def _episode(rng: random.Random, task: str, prompt: list[int], turns: list[tuple[int, int]]) -> Trajectory:
    """``prompt`` then turns of (sampled tokens, observation tokens); loss mask 1 on the sampled ones."""
    ids, mask = list(prompt), [0] * len(prompt)
    for sampled, observed in turns:
        ids += [rng.randrange(100, 40000) for _ in range(sampled)]
        mask += [1] * sampled
        ids += [rng.randrange(100, 40000) for _ in range(observed)]
        mask += [0] * observed
    logprobs = [-0.5 if m else 0.0 for m in mask]
    return Trajectory(task, "train", [], token_ids=ids, loss_mask=mask, logprobs=logprobs)


def _trajectories() -> tuple[list[Trajectory], list[int]]:
    rng = random.Random(0)
    prompt_a = [rng.randrange(100, 40000) for _ in range(40)]
    prompt_b = [rng.randrange(100, 40000) for _ in range(27)]
    prompt_c = [rng.randrange(100, 40000) for _ in range(33)]
    trajectories = [
        _episode(rng, "a", prompt_a, [(9, 12), (14, 0)]),
        _episode(rng, "a", prompt_a, [(30, 0)]),
        _episode(rng, "a", prompt_a, [(5, 8), (6, 20), (11, 0)]),
        _episode(rng, "b", prompt_b, [(12, 5), (3, 0)]),
        _episode(rng, "b", prompt_b, [(25, 0)]),
        _episode(rng, "c", prompt_c, [(7, 3), (4, 0)]),
    ]
    return trajectories, [0, 0, 0, 1, 1, 2]


@pytest.fixture(scope="module")
def tiny():
    return load_model(source="tiny", dtype="float32", device="cpu", tiny_num_layers=3)


@pytest.fixture(scope="module")
def packed():
    trajectories, groups = _trajectories()
    return pack_trajectories(trajectories, [1.0, -0.5, 0.25, 2.0, -1.0, 0.7], pad_id=0, groups=groups)


def test_groups_stay_together_longest_group_first(packed):
    trajectories, groups = _trajectories()
    order = packed.index.tolist()
    assert [groups[i] for i in order] == [0, 0, 0, 1, 1, 2]  # group 0 holds the longest row
    lengths = packed.lengths.tolist()
    assert lengths[:3] == sorted(lengths[:3], reverse=True) and lengths[3:5] == sorted(
        lengths[3:5], reverse=True
    )
    with pytest.raises(ValueError, match="groups has 2 entries"):
        pack_trajectories(trajectories, [0.0] * 6, pad_id=0, groups=[0, 1])


def test_plan_groups_rows_by_their_prompt(packed):
    plan = plan_prefixes(packed.input_ids, packed.loss_mask, packed.lengths)
    assert plan.prefix_of == [0, 0, 0, 1, 1, 2]
    # the prompt ends where the first loss column starts (column t scores token t + 1): prompt length - 1
    assert plan.prefix_lengths == [39, 26, 32]
    assert plan.saved_tokens == 2 * 39 + 1 * 26


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_same_logprobs_entropy_and_gradients_as_the_plain_pass(tiny, packed, temperature):
    model = tiny.model
    model.train()
    results = {}
    for share in (False, True):
        model.zero_grad()
        logprobs, entropy = policy_logprobs(
            model, packed, temperature, with_entropy=True, share_prompts=share
        )
        loss = -(logprobs * packed.loss_mask * packed.advantages[:, None]).sum()
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results[share] = (logprobs.detach(), entropy, grads)
    (plain, plain_entropy, plain_grads), (shared, shared_entropy, shared_grads) = (
        results[False],
        results[True],
    )
    mask = packed.loss_mask
    assert shared.shape == plain.shape == mask.shape
    torch.testing.assert_close(shared[mask], plain[mask], atol=2e-5, rtol=1e-5)
    assert (shared[~mask] == 0).all()
    torch.testing.assert_close(shared_entropy, plain_entropy, atol=1e-3, rtol=1e-5)
    assert shared_grads.keys() == plain_grads.keys() and len(plain_grads) == len(list(model.parameters()))
    # fp32 summation order differs between the two passes; on an AVX512 host one embedding gradient entry of 3.1M
    # differed by 1.6e-6 (relative 3e-4), hence atol 5e-6: a real masking or prefix bug moves whole rows.
    for name, grad in plain_grads.items():
        torch.testing.assert_close(
            shared_grads[name], grad, atol=5e-6, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}"
        )


def test_shared_pass_runs_each_prompt_once(tiny, packed):
    """What the model sees: one pass over the distinct prompts, then the rows' suffixes in passes of rows of
    similar length, each padded only to its own longest suffix (``suffix_chunks``)."""
    seen: list[tuple[int, ...]] = []
    handle = tiny.model.model.embed_tokens.register_forward_hook(
        lambda module, args, out: seen.append(tuple(args[0].shape))
    )
    try:
        plan = plan_prefixes(packed.input_ids, packed.loss_mask, packed.lengths)
        with torch.no_grad():
            shared_prefix_logprobs(
                tiny.model, packed.input_ids, packed.attention_mask, packed.loss_mask, plan, 1.0
            )
    finally:
        handle.remove()
    suffixes = [length - plan.prefix_lengths[c] for length, c in zip(packed.lengths.tolist(), plan.prefix_of)]
    chunks = suffix_chunks(suffixes)
    assert len(chunks) > 1  # these rows' suffixes (21 to 50 tokens) are worth more than one pass
    assert seen == [(3, max(plan.prefix_lengths))] + [(len(c), max(suffixes[r] for r in c)) for c in chunks]
    assert sorted(r for c in chunks for r in c) == list(range(len(packed)))
    one_pass = len(packed) * max(suffixes)
    assert sum(rows * width for rows, width in seen[1:]) < one_pass
    plain_tokens = len(packed) * packed.input_ids.shape[1]
    assert sum(rows * width for rows, width in seen) < plain_tokens


def test_suffix_chunks_cut_the_sorted_rows_at_least_cost():
    lengths = [50, 12, 48, 30, 11, 29, 49]
    # free passes: one per distinct length; passes dearer than any padding: a single pass
    assert sorted(map(sorted, suffix_chunks(lengths, overhead=0))) == sorted(
        sorted(r for r, n in enumerate(lengths) if n == v) for v in set(lengths)
    )
    assert suffix_chunks(lengths, overhead=10_000) == [[0, 6, 2, 3, 5, 1, 4]]
    # against every way of cutting the sorted order
    order = sorted(range(len(lengths)), key=lambda r: -lengths[r])
    for overhead in (0, 5, 16, 40, 200):

        def cost(chunks, overhead=overhead):
            return sum(len(c) * max(lengths[r] for r in c) + overhead for c in chunks)

        best = min(
            cost([order[a:b] for a, b in zip((0, *cuts), (*cuts, len(order)))])
            for k in range(len(order))
            for cuts in itertools.combinations(range(1, len(order)), k)
        )
        chunks = suffix_chunks(lengths, overhead=overhead)
        assert cost(chunks) == best
        assert [r for c in chunks for r in c] == order  # longest pass first, rows longest first


def test_falls_back_when_nothing_is_shared_or_the_cache_is_off(tiny, packed):
    single = packed.rows(5, 6)  # the row whose prompt nobody shares
    plan = plan_prefixes(single.input_ids, single.loss_mask, single.lengths)
    assert plan.saved_tokens == 0 and not worth_sharing(tiny.model, plan)
    full_plan = plan_prefixes(packed.input_ids, packed.loss_mask, packed.lengths)
    assert full_plan.saved_tokens >= MIN_SHARED_TOKENS and worth_sharing(tiny.model, full_plan)
    tiny.model.gradient_checkpointing_enable()
    try:
        tiny.model.train()
        assert not worth_sharing(tiny.model, full_plan)  # transformers drops the KV cache then
    finally:
        tiny.model.gradient_checkpointing_disable()


def test_lora_model_matches_too(packed):
    lora = load_model(
        source="tiny",
        dtype="float32",
        device="cpu",
        lora=LoraConfig(
            r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"
        ),
    )
    with torch.no_grad():
        for name, param in lora.model.named_parameters():
            if "lora_B" in name:  # peft starts B at zero: make the adapter do something
                param.normal_(0.0, 0.05)
        plain, _ = policy_logprobs(lora.model, packed, 1.0, share_prompts=False)
        shared, _ = policy_logprobs(lora.model, packed, 1.0, share_prompts=True)
        with lora.model.disable_adapter():
            base_shared, _ = policy_logprobs(lora.model, packed, 1.0, share_prompts=True)
    mask = packed.loss_mask
    torch.testing.assert_close(shared[mask], plain[mask], atol=2e-5, rtol=1e-5)
    assert not torch.allclose(base_shared[mask], shared[mask], atol=1e-4)  # the adapter is in the shared pass


def test_benchmark_command_runs_both_sides_on_the_tiny_model(capsys):
    from toolmaster.bench.prompt_sharing import main

    main(
        ["--source", "tiny", "--tasks", "2", "--group-size", "3", "--max-turns", "2", "--max-new-tokens", "8"]
    )
    out = capsys.readouterr().out
    assert (
        "6 episodes" in out and "plain  (each row runs its prompt)" in out and "ratio shared / plain" in out
    )
    plain, shared = (int(x) for x in re.search(r"plain (\d+), shared (\d+)", out).groups())
    assert 0 < shared < plain  # three rows per prompt: the prompt runs once instead of three times
    assert float(re.search(r"difference\| ([0-9.e+-]+)", out).group(1)) < 1e-4


@pytest.mark.parametrize("share", [False, True])
def test_right_padded_passes_without_a_mask_match_the_masked_forward(tiny, packed, share):
    """Packed batches are right-padded, so the plain pass and the prompt pass run without an attention mask
    (SDPA's causal path); the log-probs equal a forward pass given the mask explicitly."""
    model = tiny.model.eval()
    decoder = model.get_decoder()  # every path runs the decoder: the plain pass's fused head, the shared pass
    fused_head_parts(model)  # the fused head's one-off check, before recording
    masks = []
    original = decoder.forward

    def recording(*args, **kwargs):
        masks.append(kwargs.get("attention_mask"))
        return original(*args, **kwargs)

    with torch.no_grad():
        logits = model(input_ids=packed.input_ids, attention_mask=packed.attention_mask).logits[:, :-1]
        reference = torch.log_softmax(logits.float(), -1).gather(-1, packed.input_ids[:, 1:, None])[..., 0]
        decoder.forward = recording
        try:
            ours, _ = policy_logprobs(model, packed, 1.0, share_prompts=share)
        finally:
            del decoder.forward
    mask = packed.loss_mask
    torch.testing.assert_close(ours[mask], reference[mask], atol=2e-5, rtol=1e-5)
    assert masks[0] is None  # the plain pass, or the shared prompts' pass
    if share:  # then one pass per chunk of suffixes, each with the mask over [prompt cache | suffix]
        plan = plan_prefixes(packed.input_ids, packed.loss_mask, packed.lengths)
        suffixes = [n - plan.prefix_lengths[c] for n, c in zip(packed.lengths.tolist(), plan.prefix_of)]
        assert len(masks) == 1 + len(suffix_chunks(suffixes)) and all(m is not None for m in masks[1:])
    else:
        assert len(masks) == 1
