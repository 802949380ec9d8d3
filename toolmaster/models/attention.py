"""Grouped-query attention without copying keys and values, for CPU.

transformers' ``sdpa`` attention repeats every key/value head ``num_heads / num_kv_heads`` times
(``repeat_kv``) whenever an attention mask is present, because CUDA's fused kernels fall back to the
slow path for masked GQA. On CPU, torch's SDPA takes ``enable_gqa=True`` with a mask and stays on its
flash kernel, so the copy is pure waste: for SmolLM2 (9 query heads, 3 KV heads) it writes 3x the KV
cache on every layer of every decode step. Measured here (batch 8, 700 cached positions, one layer):
9.4 ms with ``repeat_kv`` vs 1.6 ms with ``enable_gqa``; outputs and gradients are bit-identical.

Decoding (one query position) in half precision takes a second path: torch's CPU flash kernel runs a
one-token query in bf16 about 4x slower than in fp32 (batch 8, 600 cached positions, one layer: 2.4 ms
against 0.3 ms), which made attention 68 % of a bf16 decode step of SmolLM2. ``decode_attention`` does the
same attention as two grouped matrix products in fp32 (the query heads of each key/value head batched, no
``repeat_kv``; keys and values upcast once per layer): 0.78 ms, with the flash kernel's accuracy against an
fp32 reference (6.5e-4, the output's bf16 rounding). That upcast is itself a copy of the whole cache per
layer and step (70 % of a bf16 decode step at batch 16 with 600 cached positions), so the HF engine's
continuous batching keeps the cache in float32 (``toolmaster.samplers.slot_cache``): ``key.float()`` is then
free, and the flash path casts keys and values to the query's dtype. Masked queries of up to ``SHORT_QUERY`` positions
without autograd (the HF engine's checks of speculative drafts) take the same path; fp32 models and longer
queries (prefill, training) keep the flash kernel, which is fast there.

``use_gqa_attention(model)`` switches a CPU model to this function (registered with transformers'
``AttentionInterface`` as ``toolmaster_sdpa``, with SDPA's own mask builder); ``load_model`` calls it
for every model it puts on a CPU. Models on CUDA keep transformers' ``sdpa``. Checkpoints do not record
the choice: ``save_pretrained`` writes no attention implementation, so exported models load anywhere.
"""

from __future__ import annotations

from typing import Any

import torch

NAME = "toolmaster_sdpa"


def gqa_sdpa_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **_: Any,
) -> tuple[torch.Tensor, None]:
    """SDPA over [batch, heads, length, dim] tensors; key/value may have fewer heads than query."""
    q_length = query.shape[2]
    # longer queries only in inference (draft checks): training keeps the flash kernel's numerics
    short = q_length == 1 or (
        q_length <= SHORT_QUERY and attention_mask is not None and not torch.is_grad_enabled()
    )
    if short and query.dtype in _HALF and not (dropout and module.training):
        return decode_attention(query, key, value, attention_mask, scaling), None
    if key.dtype != query.dtype:  # a float32 KV cache of a half-precision model (HF engine's slots)
        key, value = key.to(query.dtype), value.to(query.dtype)
    is_causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    is_causal = bool(q_length > 1 and attention_mask is None and is_causal)
    if is_causal and key.shape[2] > q_length:
        # SDPA aligns is_causal to the upper left; transformers only skips the mask when nothing is cached
        key, value = key[:, :, :q_length], value[:, :, :q_length]
    output = torch.nn.functional.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        dropout_p=dropout,
        scale=scaling,
        is_causal=is_causal,
        enable_gqa=key.shape[1] != query.shape[1],
    )
    return output.transpose(1, 2).contiguous(), None


_HALF = (torch.bfloat16, torch.float16)
SHORT_QUERY = 16  # masked queries up to this long (speculative draft checks) take decode_attention too


def decode_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
) -> torch.Tensor:
    """Attention of a few query positions per row (one when decoding, a handful when checking speculative
    drafts), in fp32, returned as [batch, q_length, heads, dim] in the query's dtype.

    ``query`` is [batch, heads, q_length, dim], ``key``/``value`` [batch, kv_heads, length, dim] (kv_heads
    divides heads); ``attention_mask`` is SDPA's: boolean (True = attend) or additive, broadcastable to
    [batch, 1, q_length, length], or None (only for q_length 1: nothing to hide).
    """
    batch, heads, q_length, dim = query.shape
    kv_heads, length = key.shape[1], key.shape[2]
    group = heads // kv_heads
    scale = dim**-0.5 if scaling is None else scaling
    grouped = query.reshape(batch, kv_heads, group * q_length, dim).float() * scale
    scores = torch.matmul(grouped, key.float().transpose(-1, -2))  # [batch, kv_heads, group * q, length]
    if attention_mask is not None:
        scores = scores.view(batch, kv_heads, group, q_length, length)
        mask = attention_mask.reshape(attention_mask.shape[0], 1, 1, attention_mask.shape[-2], length)
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask.float()
        scores = scores.view(batch, kv_heads, group * q_length, length)
    weights = torch.softmax(scores, dim=-1)
    if q_length > 1:  # a padding query that sees nothing gets zeros, not NaN (as the flash kernel does)
        weights = weights.nan_to_num(0.0)
    output = torch.matmul(weights, value.float())  # [batch, kv_heads, group * q, dim]
    output = output.view(batch, heads, q_length, dim).transpose(1, 2)
    return output.to(query.dtype).contiguous()


def register() -> None:
    """Make ``toolmaster_sdpa`` known to transformers (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, gqa_sdpa_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)


def use_gqa_attention(model: Any) -> bool:
    """Switch a CPU model that uses ``sdpa`` to ``toolmaster_sdpa``; return whether it switched."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    if next(base.parameters()).device.type != "cpu":
        return False
    register()
    base.set_attn_implementation(NAME)
    return base.config._attn_implementation == NAME
