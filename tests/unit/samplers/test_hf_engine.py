"""The HF engine against transformers' own generate and a teacher-forced forward pass (real SmolLM2)."""

from __future__ import annotations

import pytest
import torch

from toolmaster.samplers.base import SamplingParams
from toolmaster.samplers.hf import HFEngine, sample_tokens

pytestmark = pytest.mark.slow


def _prompts(tokenizer) -> list[list[int]]:
    texts = [
        "<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start|>user\nWrite one short sentence about tools and why people like them.<|im_end|>\n"
        "<|im_start|>assistant\n",
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    ]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def test_greedy_matches_unbatched_generate(smollm2):
    model, tok = smollm2.model, smollm2.tokenizer
    prompts = _prompts(tok)
    engine = HFEngine(model, tok)
    gens = engine.generate(prompts, SamplingParams(temperature=0, max_new_tokens=12), [12, 12, 5])
    for prompt, gen, cap in zip(prompts, gens, [12, 12, 5]):
        ids = torch.tensor([prompt])
        with torch.inference_mode():
            ref = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=cap,
                eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id,
            )[0, len(prompt) :].tolist()
        assert gen.token_ids == ref
        assert gen.finish_reason == ("eos" if ref[-1] == tok.eos_token_id and len(ref) <= cap else "length")


def test_logprobs_equal_teacher_forced_forward(smollm2):
    model, tok = smollm2.model, smollm2.tokenizer
    prompts = _prompts(tok)
    gens = HFEngine(model, tok).generate(
        prompts, SamplingParams(temperature=0.7, max_new_tokens=10, seed=3), [10] * 3
    )
    for prompt, gen in zip(prompts, gens):
        full = torch.tensor([prompt + gen.token_ids])
        with torch.inference_mode():
            logits = model(full).logits[0, len(prompt) - 1 : -1].float() / 0.7
        expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(gen.token_ids)[:, None]).squeeze(-1)
        assert torch.allclose(torch.tensor(gen.logprobs), expected, atol=2e-3)


def test_stop_strings_end_the_turn_and_seed_is_reproducible(smollm2):
    model, tok = smollm2.model, smollm2.tokenizer
    prompts = _prompts(tok)
    params = SamplingParams(temperature=1.0, max_new_tokens=24, seed=7)
    first = HFEngine(model, tok).generate(prompts, params, [24] * 3)
    again = HFEngine(model, tok).generate(prompts, params, [24] * 3)
    assert [g.token_ids for g in first] == [g.token_ids for g in again]
    # a stop string that is any character the model emits: every row stops right after it
    engine = HFEngine(model, tok, stop_strings=("e",))
    for gen in engine.generate(prompts, params, [24] * 3):
        assert gen.finish_reason in ("stop", "eos")
        if gen.finish_reason == "stop":
            assert "e" in tok.decode(gen.token_ids) and "e" not in tok.decode(gen.token_ids[:-1])


def test_sample_tokens_top_p_keeps_only_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(2000, 1)
    tokens, logprobs = sample_tokens(
        logits, SamplingParams(temperature=1.0, top_p=0.7), torch.Generator().manual_seed(0)
    )
    assert set(tokens.tolist()) == {0, 1}  # 0.5 + 0.3 reaches 0.7; the tail is never sampled
    assert torch.allclose(logprobs[tokens == 0], torch.log(torch.tensor(0.5)), atol=1e-5)
    greedy, _ = sample_tokens(logits[:1], SamplingParams(temperature=0.0), None)
    assert greedy.tolist() == [0]


def test_cross_turn_cache_reuse_matches_full_prefill(smollm2):
    """Turn 2 with the saved KV caches generates what a full re-prefill generates, for a fraction of the prefill."""
    model, tok = smollm2.model, smollm2.tokenizer
    prompts = _prompts(tok)
    params = SamplingParams(temperature=0, max_new_tokens=8)
    reuse = HFEngine(model, tok)
    keys = ["a", "b", "c"]
    first = reuse.generate(prompts, params, [8, 3, 8], keys=keys)
    observation = tok(
        "<|im_end|>\n<|im_start|>tool\nError: bad spec<|im_end|>\n<|im_start|>assistant\n",
        add_special_tokens=False,
    )["input_ids"]
    second_prompts = [p + g.token_ids + observation for p, g in zip(prompts, first)]
    before = reuse.prefill_tokens
    again = reuse.generate(second_prompts, params, [8] * 3, keys=keys)
    reused_prefill = reuse.prefill_tokens - before
    fresh = HFEngine(model, tok, reuse_cache=False)
    full = fresh.generate(second_prompts, params, [8] * 3, keys=keys)
    assert [g.token_ids for g in again] == [g.token_ids for g in full]
    for a, b in zip(again, full):
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-3)
    assert fresh.prefill_tokens == sum(len(p) for p in second_prompts)
    assert reused_prefill == sum(len(observation) + 1 for _ in prompts)  # last sampled token + appended turn
    reuse.release(keys)
    assert not reuse._saved


def test_rollout_identical_with_and_without_cache_reuse(smollm2):
    from toolmaster.protocol import get_chat_format
    from toolmaster.samplers.loop import RolloutConfig, rollout
    from toolmaster.worlds.toolworld import build_toolworld

    world = build_toolworld(seed=1, n_train=4, n_test=4)
    fmt = get_chat_format("chatml")
    config = RolloutConfig(max_turns=3, max_new_tokens=24, temperature=0.0, batch_size=4)
    tasks = world.tasks("test_seen")

    def play(reuse_cache: bool):
        engine = HFEngine(smollm2.model, smollm2.tokenizer, fmt.tags.closing_tags(), reuse_cache=reuse_cache)
        return rollout(engine, smollm2.tokenizer, fmt, world.suite, tasks, config), engine

    with_reuse, engine_a = play(True)
    without, engine_b = play(False)
    assert [t.token_ids for t in with_reuse] == [t.token_ids for t in without]
    assert not engine_a._saved  # every finished episode released its cache
    if sum(t.turns for t in with_reuse) > len(tasks):
        assert engine_a.prefill_tokens < engine_b.prefill_tokens


def test_token_level_continuous_batching_matches_turn_batching(smollm2):
    """Rows that end a turn are refilled mid-batch (next turn or a queued episode, merged into the running
    KV cache); greedy trajectories must equal turn-level batching. Whether it saves decode steps depends on how
    unevenly turns end (on these short greedy turns the two are within a few steps), so speed is left to
    ``python -m toolmaster.bench.rollout``; here: every batched step advances between 1 and batch_size rows."""
    from toolmaster.protocol import get_chat_format
    from toolmaster.samplers.loop import RolloutConfig, rollout
    from toolmaster.worlds.toolworld import build_toolworld

    world = build_toolworld(seed=2, n_train=4, n_test=6)
    fmt = get_chat_format("chatml")
    tasks = world.tasks("test_seen") + world.tasks("test_unseen")[:2]

    def play(continuous: bool):
        config = RolloutConfig(
            max_turns=3, max_new_tokens=20, temperature=0.0, batch_size=3, continuous=continuous
        )
        engine = HFEngine(smollm2.model, smollm2.tokenizer, fmt.tags.closing_tags())
        return rollout(engine, smollm2.tokenizer, fmt, world.suite, tasks, config), engine

    by_token, engine_token = play(True)
    by_turn, engine_turn = play(False)
    assert [t.task_id for t in by_token] == [t.id for t in tasks]
    assert [t.token_ids for t in by_token] == [t.token_ids for t in by_turn]
    assert [t.loss_mask for t in by_token] == [t.loss_mask for t in by_turn]
    for a, b in zip(by_token, by_turn):
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=2e-3)
    assert not engine_token._saved  # finished episodes released their caches
    # each turn's first token comes from its prefill, the rest from batched steps of <= batch_size rows
    from_steps = sum(t.num_generated_tokens - t.turns for t in by_token)
    for engine in (engine_token, engine_turn):
        assert from_steps / 3 <= engine.decode_steps <= from_steps


def _drafting_rollout(smollm2, draft_tokens: int, temperature: float, seed: int = 0):
    from toolmaster.protocol import get_chat_format
    from toolmaster.samplers.loop import RolloutConfig, rollout
    from toolmaster.worlds.toolworld import build_toolworld

    world = build_toolworld(seed=2, n_train=4, n_test=6)
    fmt = get_chat_format("chatml")
    tasks = world.tasks("test_seen") + world.tasks("test_unseen")[:2]
    config = RolloutConfig(
        max_turns=3, max_new_tokens=40, temperature=temperature, batch_size=3, continuous=True, seed=seed
    )
    engine = HFEngine(
        smollm2.model, smollm2.tokenizer, fmt.tags.closing_tags(), draft_tokens=draft_tokens, draft_budget=16
    )
    return rollout(engine, smollm2.tokenizer, fmt, world.suite, tasks, config), engine


def test_prompt_lookup_drafts_leave_greedy_rollouts_unchanged_in_fewer_forward_passes(smollm2):
    """Speculative decoding with prompt-lookup drafts: the same greedy trajectories (tokens, masks,
    log-probs) across turns with cache reuse, with accepted drafts replacing decode steps."""
    plain, plain_engine = _drafting_rollout(smollm2, 0, 0.0)
    drafted, engine = _drafting_rollout(smollm2, 6, 0.0)
    assert [t.token_ids for t in drafted] == [t.token_ids for t in plain]
    assert [t.loss_mask for t in drafted] == [t.loss_mask for t in plain]
    for a, b in zip(drafted, plain):
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=2e-3)
    assert engine.verify_steps > 0 and 0 < engine.accepted_tokens <= engine.drafted_tokens
    assert plain_engine.verify_steps == 0
    assert engine.decode_steps + engine.verify_steps < plain_engine.decode_steps
    assert not engine._saved  # finished episodes released their caches


def test_sampled_drafted_rollouts_record_the_log_probs_of_a_teacher_forced_forward(smollm2):
    """Under sampling, rejected draft tokens stay in the KV cache as masked positions (and are dropped
    from saved caches): every sampled token's recorded log-prob must still equal the log-prob of a fresh
    forward pass over the whole conversation."""
    trajectories, engine = _drafting_rollout(smollm2, 6, 1.0, seed=3)
    assert engine.verify_steps > 0 and engine.accepted_tokens < engine.drafted_tokens  # some rejected
    model = smollm2.model
    for trajectory in trajectories:
        ids = torch.tensor([trajectory.token_ids])
        with torch.inference_mode():
            logits = model(ids).logits[0, :-1].float()
        expected = torch.log_softmax(logits, -1).gather(-1, ids[0, 1:, None]).squeeze(-1)
        sampled = torch.tensor(trajectory.loss_mask[1:], dtype=torch.bool)
        recorded = torch.tensor(trajectory.logprobs[1:])
        assert sampled.any()
        assert torch.allclose(recorded[sampled], expected[sampled], atol=2e-3)
