"""A tiny byte-level BPE tokenizer for fast tests (built in well under a second, no model files).

It has ChatML's special tokens (``<|im_start|>``, ``<|im_end|>`` as end of turn, ``<|endoftext|>`` as padding)
and a vocabulary learned from the protocol's own text (system prompts for every trial budget, the action and
observation markup, a little English), so protocol conversations tokenize to a few hundred tokens like they do
with SmolLM2's tokenizer. Byte-level: any text round-trips. Unit tests of tokenization, packing and the rollout
loop use it; the tests of SmolLM2's own chat template keep the real tokenizer.
"""

from __future__ import annotations

import json
from typing import Any

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VOCAB_SIZE = 1200


def _corpus() -> list[str]:
    from toolmaster.protocol.chat_format import get_chat_format
    from toolmaster.protocol.prompt import observation_text, system_prompt

    schema = {
        "name": "zq_add",
        "description": "Adds two numbers.",
        "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
    }
    call = json.dumps({"name": "zq_add", "arguments": {"a": 1, "b": 2}})
    lines = [system_prompt([schema], budget) for budget in range(5)]
    lines += [
        observation_text("Error (invalid_arguments): missing a", trial, 1, 2) for trial in (True, False)
    ]
    lines += [f"<think>try it</think><trial>{call}</trial>", f"<call>{call}</call>", "<answer>2</answer>"]
    lines += ["Add 1 and 2. What is the answer? The result is 3. very long reasoning"]
    fmt = get_chat_format("chatml")
    lines.append(fmt.render([{"role": "system", "content": "x"}, {"role": "user", "content": "y"}]))
    return lines * 4


def build_tiny_tokenizer() -> Any:
    """A ``transformers`` fast tokenizer (``PreTrainedTokenizerFast``) trained on the protocol's text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(_corpus(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>")
