"""Shared-prefix KV reuse across episodes: the store, and the HF engine with it on real SmolLM2."""

from __future__ import annotations

import pytest
import torch

from toolmaster.samplers.base import SamplingParams
from toolmaster.samplers.hf import HFEngine
from toolmaster.samplers.prefix_store import PrefixStore, common_prefix_length


def _kv(length: int, value: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.full((1, 2, length, 4), value), torch.full((1, 2, length, 4), -value))]


def test_common_prefix_length():
    assert common_prefix_length([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix_length([1, 2], [1, 2, 3]) == 2 and common_prefix_length([], [1]) == 0


def test_store_returns_the_longest_prefix_sliced_and_evicts_least_recently_used():
    store = PrefixStore(capacity=2)
    store.add([1, 2, 3, 4, 5], _kv(5, 1.0))
    store.add([1, 2, 9], _kv(3, 2.0))
    length, kv = store.longest([1, 2, 3, 4, 7])
    assert length == 4 and kv[0][0].shape[2] == 4 and kv[0][0].eq(1.0).all()
    assert store.longest([1, 2, 3, 4, 5])[0] == 4  # the last prompt token always runs
    assert store.longest([8, 1, 2])[1] is None
    store.add([6, 6, 6], _kv(3, 3.0))  # evicts [1, 2, 9]: [1, 2, 3, 4, 5] was used more recently
    assert store.longest([1, 2, 9, 9])[0] == 2 and len(store) == 2
    assert store.longest([6] * 6, others=[([6] * 5, _kv(5, 4.0))])[1][0][0].eq(4.0).all()  # longer wins
    store.clear()
    assert len(store) == 0 and PrefixStore(capacity=0).longest([1, 2])[0] == 0


def _prompts(tokenizer, questions: list[str]) -> list[list[int]]:
    system = (
        "<|im_start|>system\n"
        + "You answer questions about tools, carefully and briefly. " * 8
        + "<|im_end|>\n"
    )
    texts = [system + f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n" for q in questions]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


@pytest.mark.slow
def test_shared_prompts_prefill_once_and_generate_what_a_full_prefill_generates(smollm2):
    model, tok = smollm2.model, smollm2.tokenizer
    prompts = _prompts(tok, ["Name a colour.", "Name a colour.", "Name a tool.", "Name a colour."])
    system_length = common_prefix_length(prompts[0], prompts[2])
    assert system_length > 64
    params = SamplingParams(temperature=0, max_new_tokens=8)
    shared = HFEngine(model, tok)
    ours = shared.generate(prompts, params, [8] * 4, keys=list("abcd"))
    plain = HFEngine(model, tok, share_prefixes=False)
    reference = plain.generate(prompts, params, [8] * 4, keys=list("abcd"))
    assert [g.token_ids for g in ours] == [g.token_ids for g in reference]
    for a, b in zip(ours, reference):
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-3)
    assert plain.prefill_tokens == sum(map(len, prompts)) and plain.shared_tokens == 0
    # the leader (row 0) runs in full once; the three others reuse it up to where they differ, and
    # the leader itself re-runs only its last token
    expected = len(prompts[0]) + 1 + 1 + (len(prompts[2]) - system_length) + 1
    assert shared.prefill_tokens == expected
    assert shared.shared_tokens == sum(map(len, prompts)) - 4 - (len(prompts[2]) - system_length - 1)


@pytest.mark.slow
def test_finished_episodes_share_with_later_ones_and_a_rollout_leaves_nothing_behind(smollm2):
    from toolmaster.protocol import get_chat_format
    from toolmaster.samplers.loop import RolloutConfig, rollout
    from toolmaster.worlds.toolworld import build_toolworld

    model, tok = smollm2.model, smollm2.tokenizer
    first, later = _prompts(tok, ["Name a colour.", "Name a fruit."])
    engine = HFEngine(model, tok)
    engine.generate([first], SamplingParams(temperature=0, max_new_tokens=4), [4], keys=["x"])
    engine.release(["x"])  # the finished episode's cache moves to the prefix store
    before = engine.prefill_tokens
    engine.generate([later], SamplingParams(temperature=0, max_new_tokens=4), [4], keys=["y"])
    assert engine.prefill_tokens - before == len(later) - common_prefix_length(first, later)

    world = build_toolworld(seed=1, n_train=4, n_test=4)
    fmt = get_chat_format("chatml")
    tasks = world.tasks("test_seen")[:2]
    config = RolloutConfig(max_turns=2, max_new_tokens=12, temperature=1.0, batch_size=4, n_samples=2)
    trajs = rollout(engine, tok, fmt, world.suite, tasks, config)
    assert len(trajs) == 4 and engine.shared_tokens > 0  # each task's second sample reused the first
    assert not engine._saved and len(engine._prefixes) == 0  # nothing survives into the next policy update


def test_an_optimizer_step_invalidates_cached_prefixes_between_direct_generate_calls(smollm2_tokenizer):
    """Direct ``generate`` calls (no rollout loop around them) must not reuse KV from older weights."""
    from toolmaster.models import load_model

    model = load_model(source="tiny", seed=3).model
    prompts = _prompts(smollm2_tokenizer, ["Name a colour.", "Name a tool."])
    params = SamplingParams(temperature=0, max_new_tokens=6)
    engine = HFEngine(model, smollm2_tokenizer)
    engine.generate(prompts, params, [6, 6])
    first_call = engine.prefill_tokens
    assert len(engine._prefixes) == 1  # the leader's prompt, kept for later calls with the same weights
    engine.generate(prompts, params, [6, 6])
    assert engine.prefill_tokens - first_call < first_call  # same weights: the stored prefix is reused

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(input_ids=torch.tensor([prompts[0]]), labels=torch.tensor([prompts[0]])).loss.backward()
    optimizer.step()
    before = engine.prefill_tokens
    after = engine.generate(prompts, params, [6, 6])
    assert engine.prefill_tokens - before == first_call  # nothing computed with the old weights was reused
    fresh = HFEngine(model, smollm2_tokenizer, share_prefixes=False).generate(prompts, params, [6, 6])
    assert [g.token_ids for g in after] == [g.token_ids for g in fresh]


@pytest.mark.slow
def test_rules_first_prompts_share_across_tasks_and_sample_what_unshared_prompts_sample(smollm2):
    """``chatml_rules_first``: episodes of different tasks (one sample each) reuse the rules' keys and
    values from each other's caches; greedy rollouts equal those of an engine that shares nothing. Under
    ``chatml`` the same tasks share nothing (their common opening is below ``min_shared_tokens``)."""
    from toolmaster.protocol import get_chat_format
    from toolmaster.samplers.loop import RolloutConfig, rollout
    from toolmaster.worlds.toolworld import build_toolworld

    model, tok = smollm2.model, smollm2.tokenizer
    world = build_toolworld(seed=1, n_train=4, n_test=6)
    tasks = world.tasks("test_seen")[:4]
    config = RolloutConfig(max_turns=2, max_new_tokens=12, temperature=0.0, batch_size=2, n_samples=1)
    runs = {}
    for name in ("chatml", "chatml_rules_first"):
        fmt = get_chat_format(name)
        for share in (True, False):
            engine = HFEngine(model, tok, fmt.tags.closing_tags(), share_prefixes=share)
            runs[name, share] = (rollout(engine, tok, fmt, world.suite, tasks, config), engine)
    assert runs["chatml", True][1].shared_tokens == 0
    shared, plain = runs["chatml_rules_first", True], runs["chatml_rules_first", False]
    assert shared[1].shared_tokens >= 3 * 64  # the three later episodes each reused the rules
    assert shared[1].prefill_tokens + shared[1].shared_tokens == plain[1].prefill_tokens
    assert [t.token_ids for t in shared[0]] == [t.token_ids for t in plain[0]]
    for a, b in zip(shared[0], plain[0]):
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-3)
