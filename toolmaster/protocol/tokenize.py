"""Conversation -> token ids + loss mask, shared by eval, SFT and RL.

Each segment of the chat format is tokenized on its own and the ids concatenated; the mask is 1 exactly on
tokens of trainable segments (the model's own content and end-of-turn token), never on the prompt, the
tool schemas or observations. Segment boundaries sit next to special tokens or newlines, where the
tokenizers we support never merge across, and the tests check the result equals tokenizing the whole
rendered text (and ``apply_chat_template`` where the template matches). One exception: assistant content
that starts with a run of white space can merge with the header's newline when the whole text is tokenized;
the segment-wise ids are kept then, because they keep the generation prompt a prefix (what the model saw).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from toolmaster.protocol.chat_format import ChatFormat


class SegmentTokenizer:
    """Tokenizes segments with a small cache (system prompts and headers repeat across episodes)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._encode = lru_cache(maxsize=4096)(self._encode_uncached)

    def _encode_uncached(self, text: str) -> tuple[int, ...]:
        return tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens added (cached; ``[]`` for empty text)."""
        return list(self._encode(text)) if text else []


def tokenize_segments(
    segments: list[tuple[str, bool]], encoder: SegmentTokenizer
) -> tuple[list[int], list[int]]:
    """Return ``(input_ids, loss_mask)`` for ``(text, trainable)`` segments, each tokenized on its own."""
    ids: list[int] = []
    mask: list[int] = []
    for text, trainable in segments:
        piece = encoder.encode(text)
        ids.extend(piece)
        mask.extend([int(trainable)] * len(piece))
    return ids, mask


def tokenize_conversation(
    tokenizer: Any | SegmentTokenizer,
    fmt: ChatFormat,
    messages: list[dict[str, str]],
    tool_schemas: list[dict[str, Any]] | None = None,
    add_generation_prompt: bool = False,
) -> tuple[list[int], list[int]]:
    """Return ``(input_ids, loss_mask)`` for a conversation."""
    encoder = tokenizer if isinstance(tokenizer, SegmentTokenizer) else SegmentTokenizer(tokenizer)
    return tokenize_segments(fmt.segments(messages, tool_schemas, add_generation_prompt), encoder)
