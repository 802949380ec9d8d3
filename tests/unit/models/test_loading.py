"""Model loading: sources, LoRA, dtype policy, crash-safe cache conversion, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoraConfig

from toolmaster.errors import ConfigError
from toolmaster.io import write_dir_atomic
from toolmaster.models.loading import load_model, resolve_dtype, smollm2_dir


def test_tiny_model_has_smollm2_tokenizer_and_chat_template(smollm2_tokenizer):
    lm = load_model(source="tiny", dtype="float32")
    assert lm.tokenizer.get_vocab() == smollm2_tokenizer.get_vocab()
    assert lm.model.config.num_hidden_layers == 2 and lm.chat_format == "chatml"
    ids = torch.tensor([lm.tokenizer("hello")["input_ids"]])
    assert lm.model(ids).logits.shape[-1] == len(lm.tokenizer)


def test_tiny_model_is_seeded():
    a, b = load_model(source="tiny", seed=3), load_model(source="tiny", seed=3)
    c = load_model(source="tiny", seed=4)
    wa, wb, wc = (m.model.model.embed_tokens.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_lora_wraps_the_model_with_trainable_adapters_only():
    lora = LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"
    )
    lm = load_model(source="tiny", lora=lora)
    trainable = [n for n, p in lm.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert hasattr(lm.model, "disable_adapter")


def test_smollm2_cache_is_plain_hf_safetensors(smollm2):
    path = smollm2_dir()
    assert (path / "model.safetensors").exists() and (path / "tokenizer.json").exists()
    assert smollm2.model.config.num_hidden_layers == 30 and smollm2.model.config.hidden_size == 576
    assert getattr(smollm2.model, "hf_quantizer", None) is None


def test_checkpoint_path_loads_as_hf(tmp_path):
    lm = load_model(source="tiny", seed=1, dtype="float32")
    lm.model.save_pretrained(tmp_path)
    lm.tokenizer.save_pretrained(tmp_path)
    again = load_model(source="hf", path=str(tmp_path), dtype="float32")
    ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.allclose(lm.model(ids).logits, again.model(ids).logits, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"source": "gpt"}, "model.source='gpt' is not one of smollm2, tiny, hf"),
        ({"source": "hf"}, "model.source=hf needs model.path"),
        (
            {"source": "smollm2", "path": "/nonexistent/ckpt"},
            "model.path='/nonexistent/ckpt': no such directory",
        ),
        ({"source": "hf", "path": "./outputs/x/hf"}, "model.path='./outputs/x/hf': no such directory"),
        ({"source": "tiny", "dtype": "int3"}, "model.dtype='int3'"),
    ],
)
def test_bad_model_configs_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_model(**kwargs)


def test_dtype_policy():
    assert resolve_dtype("auto", "cuda") == torch.bfloat16
    assert resolve_dtype("float32", "cuda") == torch.float32
    assert resolve_dtype("auto", "cpu") in (torch.float32, torch.bfloat16)


def test_interrupted_conversion_leaves_no_cache(tmp_path):
    target = tmp_path / "model"

    def write(tmp: Path) -> None:
        (tmp / "config.json").write_text("{}")
        raise KeyboardInterrupt  # killed half-way

    with pytest.raises(KeyboardInterrupt):
        write_dir_atomic(target, write, replace=False)
    assert not target.exists() and list(tmp_path.iterdir()) == []
    write_dir_atomic(target, lambda tmp: (tmp / "config.json").write_text("{}"), replace=False)
    assert (target / "config.json").exists()
