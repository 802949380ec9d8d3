"""The trial-and-execution text protocol: system prompt, action markup, parsing, tokenization with loss masks."""

from toolmaster.protocol.actions import Action, ProtocolTags, parse_action
from toolmaster.protocol.chat_format import CHAT_FORMATS, ChatFormat, get_chat_format
from toolmaster.protocol.prompt import build_messages, system_prompt
from toolmaster.protocol.tokenize import tokenize_conversation

__all__ = [
    "CHAT_FORMATS",
    "Action",
    "ChatFormat",
    "ProtocolTags",
    "build_messages",
    "get_chat_format",
    "parse_action",
    "system_prompt",
    "tokenize_conversation",
]
