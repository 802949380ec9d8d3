"""The parts of the vLLM engine that need no running engine: the install hint, the finish-reason mapping and
the base-weight snapshot of a LoRA policy (what vLLM loads before the adapter is attached)."""

from __future__ import annotations

import sys

import pytest
import torch
from peft import LoraConfig

from toolmaster.errors import ConfigError
from toolmaster.models import load_model
from toolmaster.samplers.vllm_engine import base_state_dict, finish_reason, import_vllm, save_base_snapshot

LORA = LoraConfig(
    r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"
)


def test_missing_vllm_is_a_one_line_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # what Python does for a package that is not installed
    with pytest.raises(ConfigError, match="make vllm") as err:
        import_vllm()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "reason,stop,expected",
    [("length", None, "length"), ("stop", "</call>", "stop"), ("stop", 2, "eos"), ("stop", None, "eos")],
)
def test_finish_reasons(reason, stop, expected):
    assert finish_reason(reason, stop) == expected


def test_base_snapshot_of_a_lora_policy_is_the_plain_model(tmp_path):
    from transformers import AutoModelForCausalLM

    plain = load_model(source="tiny", dtype="float32", device="cpu", seed=3)
    lora = load_model(source="tiny", dtype="float32", device="cpu", seed=3, lora=LORA)
    with torch.no_grad():  # a trained adapter must not leak into the base weights
        for name, param in lora.model.named_parameters():
            if "lora_B" in name:
                param.fill_(0.5)
    state = base_state_dict(lora.model)
    assert set(state) == set(plain.model.state_dict())
    assert all(torch.equal(state[k], v) for k, v in plain.model.state_dict().items())

    save_base_snapshot(lora.model, lora.tokenizer, tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32)
    ids = torch.tensor([[1, 5, 9, 200]])
    assert torch.equal(reloaded(ids).logits, plain.model(ids).logits)
    assert (tmp_path / "tokenizer.json").exists() or (tmp_path / "tokenizer_config.json").exists()
