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


@pytest.mark.parametrize("mask_kind", ["none", "bool", "additive"])
def test_decode_attention_matches_fp32_sdpa_for_grouped_heads(mask_kind):
    from toolmaster.models.attention import decode_attention

    gen = torch.Generator().manual_seed(0)
    batch, heads, kv_heads, length, dim = 3, 6, 2, 20, 16
    query = torch.randn(batch, heads, 1, dim, generator=gen)
    buffer = torch.randn(2, batch, kv_heads, length + 5, dim, generator=gen)
    key, value = buffer[0][:, :, :length], buffer[1][:, :, :length]  # strided views, like the KV buffers
    keep = torch.ones(batch, 1, 1, length, dtype=torch.bool)
    keep[0, ..., :7] = False  # left padding
    keep[2, ..., 3:5] = False
    mask = {
        "none": None,
        "bool": keep,
        "additive": torch.zeros(keep.shape).masked_fill(~keep, float("-inf")),
    }[mask_kind]
    reference = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=None if mask is None else keep, scale=0.3, enable_gqa=True
    ).transpose(1, 2)
    ours = decode_attention(query.bfloat16(), key.bfloat16(), value.bfloat16(), mask, 0.3)
    assert ours.dtype == torch.bfloat16 and ours.shape == (batch, 1, heads, dim)
    exact_inputs = decode_attention(query, key, value, mask, 0.3)
    assert torch.allclose(exact_inputs, reference, atol=1e-6)
    assert torch.allclose(ours.float(), reference, atol=3e-2)  # bf16 inputs and output


@pytest.mark.parametrize("mask_kind", ["bool", "additive"])
def test_decode_attention_matches_fp32_sdpa_for_short_causal_queries(mask_kind):
    """Several query positions per row (a speculative draft check): causal over the cache, padded rows
    and a padding query that sees nothing (zeros, like SDPA's kernel)."""
    from toolmaster.models.attention import decode_attention

    gen = torch.Generator().manual_seed(1)
    batch, heads, kv_heads, q_length, length, dim = 3, 6, 2, 5, 24, 16
    query = torch.randn(batch, heads, q_length, dim, generator=gen)
    key, value = torch.randn(2, batch, kv_heads, length, dim, generator=gen)
    positions = torch.arange(length)
    queries_at = torch.arange(length - q_length, length)
    keep = (positions[None, :] <= queries_at[:, None]).expand(batch, 1, q_length, length).clone()
    keep[0, ..., :9] = False  # left padding
    keep[1, ..., 12:14] = False  # a rejected draft's masked positions inside the row
    keep[2, :, 0] = False  # a query that attends nothing
    mask = keep if mask_kind == "bool" else torch.zeros(keep.shape).masked_fill(~keep, float("-inf"))
    reference = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=keep, scale=0.3, enable_gqa=True
    ).transpose(1, 2)
    reference = reference.nan_to_num(0.0)
    exact_inputs = decode_attention(query, key, value, mask, 0.3)
    assert exact_inputs.shape == (batch, q_length, heads, dim)
    assert torch.allclose(exact_inputs, reference, atol=1e-6)
    assert torch.equal(exact_inputs[2, 0], torch.zeros(heads, dim))
    ours = decode_attention(query.bfloat16(), key.bfloat16(), value.bfloat16(), mask, 0.3)
    assert torch.allclose(ours.float(), reference, atol=3e-2)


def test_bf16_decode_steps_take_the_decode_path_and_match_flash():
    """A bf16 model's one-token steps run decode_attention; the logits match the flash kernel's."""
    import toolmaster.models.attention as attention_module

    model = load_model(source="tiny", tiny_hidden_size=128, seed=1, dtype="bfloat16").model.eval()
    ids, mask = _padded_batch(model.config.vocab_size)
    calls = []
    original = attention_module.decode_attention

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return original(*args, **kwargs)

    def last_step() -> torch.Tensor:
        with torch.inference_mode():
            prefix = model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], use_cache=True)
            return model(
                input_ids=ids[:, -1:], attention_mask=mask, past_key_values=prefix.past_key_values
            ).logits[:, -1]

    attention_module.decode_attention = counting
    try:
        ours = last_step()
    finally:
        attention_module.decode_attention = original
    assert calls and all(shape[2] == 1 for shape in calls)  # only one-token queries, every layer
    assert len(calls) == model.config.num_hidden_layers
    with attention(model, "sdpa"):
        reference = last_step()
    assert torch.allclose(ours.float(), reference.float(), atol=5e-2, rtol=0)
