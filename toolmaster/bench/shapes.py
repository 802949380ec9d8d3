"""Randomly initialised models of real architectures' shapes, for throughput benchmarks where no weights can be
downloaded (the lent GPU machines have no model hub).

``random_model("qwen2.5-0.5b", ...)`` builds a Qwen2 model with Qwen2.5-0.5B's layer count, widths, heads and
rope settings. One departure from the real shape: the vocabulary is SmolLM2's tokenizer's (49,152 tokens, not
151,936), so that every sampled id decodes with the tokenizer the episodes are built with; the embedding and
output matrices are therefore about a third of the real ones. Random weights produce gibberish turns, which the
rollout loop answers with format observations until the turn or token limit: the token counts, not the
content, are what a throughput benchmark measures.
"""

from __future__ import annotations

from typing import Any

import torch

from toolmaster.errors import ConfigError
from toolmaster.models.attention import use_gqa_attention
from toolmaster.models.loading import LoadedModel, load_tokenizer

SHAPES: dict[str, dict[str, Any]] = {
    "qwen2.5-0.5b": {
        "model_type": "qwen2",
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "max_position_embeddings": 32768,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
    },
    "smollm2-135m": {
        "model_type": "llama",
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "max_position_embeddings": 8192,
        "rope_theta": 100000.0,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": True,
    },
}


def shape_config(name: str, vocab_size: int, pad_token_id: int | None = None) -> Any:
    """The transformers config of shape ``name`` with the given vocabulary size."""
    from transformers import AutoConfig

    if name not in SHAPES:
        raise ConfigError(f"unknown model shape {name!r}; known: {', '.join(SHAPES)}")
    fields = dict(SHAPES[name])
    return AutoConfig.for_model(
        fields.pop("model_type"), vocab_size=vocab_size, pad_token_id=pad_token_id, **fields
    )


def random_model(name: str, dtype: torch.dtype, device: str, seed: int = 0) -> LoadedModel:
    """A seeded random-init model of shape ``name`` with SmolLM2's tokenizer and ChatML format."""
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer("smollm2")
    config = shape_config(name, len(tokenizer), tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model = model.to(device).eval()
    if not str(device).startswith("cuda"):
        use_gqa_attention(model)
    return LoadedModel(model=model, tokenizer=tokenizer, chat_format="chatml", name=f"random-{name}")
