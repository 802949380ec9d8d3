"""The one place an engine is built: a ``sampler.engine`` config node bound to a model and a chat format.

``sampler.engine`` is a partial ``_target_`` node (``toolmaster.samplers.hf.HFEngine`` or
``toolmaster.samplers.vllm_engine.VLLMEngine``, ``_partial_: true``) whose keys are the engine's own keyword
arguments, so the config validation binds them against the engine's signature (a typo is an error naming the
key). The model, its tokenizer and the chat format's stop strings are given here, when they exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from toolmaster.protocol.chat_format import ChatFormat
from toolmaster.samplers.base import GenerationEngine

DEFAULT_ENGINE: dict[str, Any] = {"_target_": "toolmaster.samplers.hf.HFEngine", "_partial_": True}


def make_engine(
    node: Mapping[str, Any] | None, model: Any, tokenizer: Any, fmt: ChatFormat
) -> GenerationEngine:
    """Instantiate the engine node (None: the HF engine with its defaults) around ``model``."""
    from hydra.utils import instantiate

    factory = instantiate(dict(node or DEFAULT_ENGINE), _convert_="all")
    return factory(model, tokenizer, stop_strings=fmt.tags.closing_tags())
