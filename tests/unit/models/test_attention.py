"""toolmaster_sdpa: grouped-query attention without repeat_kv equals transformers' sdpa, forward and backward."""

from __future__ import annotations

import json
from contextlib import contextmanager

import pytest
import torch
from peft import LoraConfig

from toolmaster.models import load_model
from toolmaster.models.attention import NAME, use_gqa_attention


@contextmanager
def attention(model, name: str):
    previous = model.config._attn_implementation
    model.set_attn_implementation(name)
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


def _padded_batch(vocab: int, rows: int = 3, length: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(10, vocab - 1, (rows, length), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :7] = 0  # left padding
    mask[1, -5:] = 0  # right padding
    return ids, mask


def test_cpu_models_load_with_gqa_attention_and_lora_keeps_it():
    assert load_model(source="tiny").model.config._attn_implementation == NAME
    lora = LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"
    )
    assert load_model(source="tiny", lora=lora).model.get_base_model().config._attn_implementation == NAME
    assert not use_gqa_attention(load_model(source="tiny").model)  # already switched: nothing to do


@pytest.mark.slow  # the real SmolLM2 model
def test_smollm2_logits_equal_transformers_sdpa_with_padding_and_cache(smollm2):
    model = smollm2.model
    assert model.config.num_attention_heads != model.config.num_key_value_heads  # GQA really is in play
    ids, mask = _padded_batch(len(smollm2.tokenizer))
    with torch.inference_mode():
        ours = model(input_ids=ids, attention_mask=mask).logits
        unmasked = model(input_ids=ids[:, :10]).logits  # no mask: the is_causal path
        prefix = model(input_ids=ids[:, :16], attention_mask=mask[:, :16], use_cache=True)
        step = model(
            input_ids=ids[:, 16:], attention_mask=mask, past_key_values=prefix.past_key_values
        ).logits
        with attention(model, "sdpa"):
            reference = model(input_ids=ids, attention_mask=mask).logits
            reference_unmasked = model(input_ids=ids[:, :10]).logits
    keep = mask.bool()
    assert torch.allclose(ours[keep], reference[keep], atol=1e-5)
    assert torch.allclose(unmasked, reference_unmasked, atol=1e-5)
    assert torch.allclose(step[keep[:, 16:]], reference[:, 16:][keep[:, 16:]], atol=1e-4)


def test_gradients_equal_transformers_sdpa():
    model = load_model(
        source="tiny", tiny_hidden_size=128, seed=1, dtype="float32"
    ).model.train()  # 4 q, 2 kv heads
    ids, mask = _padded_batch(model.config.vocab_size)

    def grads() -> list[torch.Tensor]:
        model.zero_grad()
        logits = model(input_ids=ids, attention_mask=mask).logits
        logits[mask.bool()].float().logsumexp(-1).mean().backward()
        return [p.grad.clone() for p in model.parameters()]

    ours = grads()
    with attention(model, "sdpa"):
        reference = grads()
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(ours, reference))


def test_exported_checkpoints_do_not_record_the_attention_choice(tmp_path):
    lm = load_model(source="tiny")
    lm.model.save_pretrained(tmp_path)
    lm.tokenizer.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert not any(NAME in str(value) for value in config.values())
    assert load_model(source="hf", path=str(tmp_path)).model.config._attn_implementation == NAME
