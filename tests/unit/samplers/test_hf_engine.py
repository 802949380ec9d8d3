"""The HF engine against transformers' own generate and a teacher-forced forward pass (real SmolLM2)."""

from __future__ import annotations

import pytest
import torch

from toolmaster.samplers.base import SamplingParams
from toolmaster.samplers.hf import HFEngine, sample_tokens

pytestmark = pytest.mark.slow


def _prompts(tokenizer) -> list[list[int]]:
    texts = ["<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n",
             "<|im_start|>user\nWrite one short sentence about tools and why people like them.<|im_end|>\n"
             "<|im_start|>assistant\n",
             "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def test_greedy_matches_unbatched_generate(smollm2):
    model, tok = smollm2.model, smollm2.tokenizer
    prompts = _prompts(tok)
    engine = HFEngine(model, tok)
    gens = engine.generate(prompts, SamplingParams(temperature=0, max_new_tokens=12), [12, 12, 5])
    for prompt, gen, cap in zip(prompts, gens, [12, 12, 5]):
        ids = torch.tensor([prompt])
        with torch.inference_mode():
            ref = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=cap,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)[0, len(prompt):].tolist()
        assert gen.token_ids == ref
        assert gen.finish_reason == ("eos" if ref[-1] == tok.eos_token_id and len(ref) <= cap else "length")


def test_logprobs_equal_teacher_forced_forward(smollm2):
    model, tok = smollm2.model, smollm2.tokenizer
    prompts = _prompts(tok)
    gens = HFEngine(model, tok).generate(prompts, SamplingParams(temperature=0.7, max_new_tokens=10, seed=3), [10] * 3)
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
    tokens, logprobs = sample_tokens(logits, SamplingParams(temperature=1.0, top_p=0.7), torch.Generator().manual_seed(0))
    assert set(tokens.tolist()) == {0, 1}  # 0.5 + 0.3 reaches 0.7; the tail is never sampled
    assert torch.allclose(logprobs[tokens == 0], torch.log(torch.tensor(0.5)), atol=1e-5)
    greedy, _ = sample_tokens(logits[:1], SamplingParams(temperature=0.0), None)
    assert greedy.tolist() == [0]
