"""``sampler=vllm`` with a LoRA policy, for real on this CPU (its own engine: LoRA is enabled at start-up).

The engine serves the base snapshot plus the policy's adapter, re-saved and re-registered on every sync:

- before training (peft initialises B = 0) the adapter-served greedy turns equal the HF engine's;
- after a real optimizer step on the adapter the served turns change and equal the HF engine's on the
  updated peft model, and every output names the current adapter;
- an output served without the adapter (the base model) is refused, never passed on silently.
"""

from __future__ import annotations

from typing import Any

import pytest
from helpers.engines import STOPS, greedy, protocol_prompts, sft_step
from peft import LoraConfig

from toolmaster.models import load_model
from toolmaster.samplers.hf import HFEngine

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

LORA = LoraConfig(
    r=8,
    lora_alpha=16,
    lora_dropout=0.0,
    target_modules=["q_proj", "v_proj", "up_proj"],
    task_type="CAUSAL_LM",
)


@pytest.fixture(scope="module")
def lora_policy() -> Any:
    return load_model(source="smollm2", dtype="float32", device="cpu", lora=LORA)


@pytest.fixture(scope="module")
def lora_engine(lora_policy: Any) -> Any:
    from toolmaster.samplers.vllm_engine import VLLMEngine

    engine = VLLMEngine(
        lora_policy.model, lora_policy.tokenizer, STOPS, dtype="float32", max_model_len=2048, max_lora_rank=8
    )
    yield engine
    del engine.llm


def test_adapter_sync_after_an_optimizer_step(lora_policy, lora_engine):
    model, tokenizer = lora_policy.model, lora_policy.tokenizer
    prompts = protocol_prompts(tokenizer, range(1))
    hf = HFEngine(model, tokenizer, STOPS)
    before = greedy(lora_engine, prompts)
    assert [g.token_ids for g in before] == [g.token_ids for g in greedy(hf, prompts)]
    first = lora_engine.lora_request

    sft_step(model, tokenizer, lr=1e-2)
    lora_engine.sync_weights(model)
    assert lora_engine.lora_request.lora_int_id == first.lora_int_id + 1
    after = greedy(lora_engine, prompts)
    assert [g.token_ids for g in after] != [g.token_ids for g in before]
    assert [g.token_ids for g in after] == [g.token_ids for g in greedy(hf, prompts)]


def test_output_served_without_the_adapter_is_refused(lora_policy, lora_engine):
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    prompt = protocol_prompts(lora_policy.tokenizer, range(1))[0]
    # A real request to the base model (no adapter): exactly what must never pass as the policy's turn.
    [output] = lora_engine.llm.generate(
        [TokensPrompt(prompt_token_ids=prompt)], SamplingParams(max_tokens=4, logprobs=0), use_tqdm=False
    )
    with pytest.raises(RuntimeError, match="without the current LoRA adapter"):
        lora_engine._generation(output)
