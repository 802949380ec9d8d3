r"""Chat formats: how messages become text segments, each marked trainable or not.

A format renders every message on its own (no look-back), which is what makes token ids prefix-preserving:
the ids of a conversation are the concatenation of the ids of its messages' segments, so appending turns
never changes the ids of earlier ones. Five formats ship:

- ``chatml``: SmolLM2's template (``<|im_start|>{role}\n{content}<|im_end|>\n``). It ignores ``tools=``,
  so the protocol lists the tools in the system prompt (one JSON schema per line). Observations are
  ``tool`` turns.
- ``chatml_compact``: ``chatml`` with the tools listed as one signature line each instead of one JSON schema
  each (``toolmaster.protocol.tool_rendering``): about a third of the system prompt's tool tokens.
- ``chatml_rules_first``, ``chatml_compact_rules_first``: those two with the system prompt's rules before
  the tool list instead of after it, as ``qwen2.5`` lays them out. The rules are the same for every task and
  the tools are not, so prompts of different tasks (one trial budget) open with the same 166 tokens (SmolLM2's tokenizer;
  125 compact; 33 and 29 with the tools first), which the HF engine's prefix sharing computes once: 3,819 of 8,257 prompt tokens of
  ``bench.rollout``'s 24 tasks reused, sampler 1.22x ``generate`` at batch 8 (bf16) against 1.01 under
  ``chatml`` (docs/performance.md, "Prompt layout").
  A model reads its prompts one way: synthesize its SFT data, train and evaluate it with the same format.
- ``qwen2.5``: Qwen2.5's native tool format: tool schemas inside ``<tools></tools>`` in the system turn,
  execution calls as ``<tool_call>`` and observations as ``<tool_response>`` inside a user turn. Departure from
  Qwen's template: consecutive tool messages are not merged into one user turn (the protocol never produces
  them: one action per turn).

Trainable segments are exactly the assistant's content and its end-of-turn token, except in an assistant
message marked ``"train": false`` (a teacher's deliberate slip, ``toolmaster.teachers.slips``), which is
context only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from toolmaster.protocol.actions import ProtocolTags

Segment = tuple[str, bool]  # (text, trainable)

QWEN_TOOLS_HEADER = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
QWEN_TOOLS_FOOTER = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}'
    "\n</tool_call>"
)


@dataclass(frozen=True)
class ChatFormat:
    """A chat format: its markup tags, turn delimiters and whether it renders the tool schemas itself."""

    name: str
    tags: ProtocolTags
    native_tools: bool  # tools rendered by the format itself (not by the protocol's system prompt)
    tool_rendering: str = "json"  # how the protocol lists tools when the format does not (tool_rendering.py)
    rules_first: bool = False  # the protocol's system prompt lists the tools after its rules (prompt.py)
    start: str = "<|im_start|>"
    end: str = "<|im_end|>"

    def message_segments(
        self, message: dict[str, Any], tool_schemas: list[dict[str, Any]] | None = None
    ) -> list[Segment]:
        """The segments of one message (``tool_schemas`` only matter for a system message in ``qwen2.5``)."""
        role, content = message["role"], message["content"]
        if role == "assistant":
            trained = message.get("train", True) is not False  # a teacher's slip: context without loss
            return [
                (f"{self.start}assistant\n", False),
                (content, trained),
                (self.end, trained),
                ("\n", False),
            ]
        if self.name == "qwen2.5":
            if role == "tool":
                return [
                    (f"{self.start}user\n<tool_response>\n{content}\n</tool_response>{self.end}\n", False)
                ]
            if role == "system" and tool_schemas:
                tools = "".join(
                    "\n" + json.dumps({"type": "function", "function": s}, ensure_ascii=False)
                    for s in tool_schemas
                )
                return [
                    (
                        f"{self.start}system\n{content}{QWEN_TOOLS_HEADER}{tools}{QWEN_TOOLS_FOOTER}{self.end}\n",
                        False,
                    )
                ]
        return [(f"{self.start}{role}\n{content}{self.end}\n", False)]

    def generation_prompt(self) -> str:
        """The header that opens an assistant turn, after which the model generates."""
        return f"{self.start}assistant\n"

    def segments(
        self,
        messages: list[dict[str, str]],
        tool_schemas: list[dict[str, Any]] | None = None,
        add_generation_prompt: bool = False,
    ) -> list[Segment]:
        """The segments of a conversation, optionally followed by the generation prompt."""
        out: list[Segment] = []
        for message in messages:
            out.extend(self.message_segments(message, tool_schemas if message["role"] == "system" else None))
        if add_generation_prompt:
            out.append((self.generation_prompt(), False))
        return out

    def render(
        self,
        messages: list[dict[str, str]],
        tool_schemas: list[dict[str, Any]] | None = None,
        add_generation_prompt: bool = False,
    ) -> str:
        """The conversation as one text (its segments joined)."""
        return "".join(text for text, _ in self.segments(messages, tool_schemas, add_generation_prompt))


CHAT_FORMATS: dict[str, ChatFormat] = {
    "chatml": ChatFormat("chatml", ProtocolTags(), native_tools=False),
    "chatml_compact": ChatFormat(
        "chatml_compact", ProtocolTags(), native_tools=False, tool_rendering="compact"
    ),
    "chatml_rules_first": ChatFormat(
        "chatml_rules_first", ProtocolTags(), native_tools=False, rules_first=True
    ),
    "chatml_compact_rules_first": ChatFormat(
        "chatml_compact_rules_first",
        ProtocolTags(),
        native_tools=False,
        tool_rendering="compact",
        rules_first=True,
    ),
    "qwen2.5": ChatFormat("qwen2.5", ProtocolTags(call="tool_call"), native_tools=True),
}


def get_chat_format(name: str) -> ChatFormat:
    """The chat format called ``name``; ``ValueError`` for an unknown name."""
    try:
        return CHAT_FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown chat format {name!r}; choose one of {sorted(CHAT_FORMATS)}") from None
