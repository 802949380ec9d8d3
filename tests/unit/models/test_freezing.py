"""``model.train_top_layers``: which weights train, that the frozen layers build no autograd graph, LoRA, errors."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig

from toolmaster.errors import ConfigError
from toolmaster.models.freezing import decoder_layers, top_layer_count
from toolmaster.models.loading import load_model

LORA = LoraConfig(
    r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"
)


def _tiny(**kwargs):
    return load_model(source="tiny", dtype="float32", tiny_num_layers=4, seed=2, **kwargs).model


def _layer_of(name: str) -> int | None:
    parts = name.split(".")
    return int(parts[parts.index("layers") + 1]) if "layers" in parts else None


def test_only_the_top_layers_and_final_norm_train():
    model = _tiny(train_top_layers=2)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert model.config.tie_word_embeddings  # the tied head is the embedding matrix: frozen with it
    assert {_layer_of(n) for n in trainable} == {2, 3, None}
    assert {n for n in trainable if _layer_of(n) is None} == {"model.norm.weight"}
    assert all(not p.requires_grad for p in model.get_input_embeddings().parameters())
    # every layer above the cut trains in full
    assert all(p.requires_grad for p in decoder_layers(model)[2].parameters())


def test_frozen_layers_get_no_gradient_and_build_no_graph():
    model = _tiny(train_top_layers=2)
    needs_grad: dict[int, bool] = {}
    for index, layer in enumerate(decoder_layers(model)):
        layer.register_forward_hook(
            lambda _m, _i, out, index=index: needs_grad.__setitem__(
                index, (out[0] if isinstance(out, tuple) else out).requires_grad
            )
        )
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    model(input_ids=ids, labels=ids).loss.backward()
    assert needs_grad == {0: False, 1: False, 2: True, 3: True}  # no graph below layer 2
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(grads[n] is None for n in grads if _layer_of(n) in (0, 1))
    assert grads["model.embed_tokens.weight"] is None
    assert all(grads[n] is not None and grads[n].abs().sum() > 0 for n in grads if _layer_of(n) in (2, 3))


def test_all_layers_freezes_only_the_embeddings():
    model = _tiny(train_top_layers=4)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"model.embed_tokens.weight"}


def test_with_lora_only_the_top_adapters_train():
    model = _tiny(lora=LORA, train_top_layers=1)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and _layer_of(n) == 3 for n in trainable)
    lower = [n for n, _ in model.named_parameters() if "lora_" in n and _layer_of(n) == 0]
    assert lower  # adapters exist below the cut but are frozen


@pytest.mark.parametrize("top", [0, 5, -1])
def test_out_of_range_is_a_config_error(top):
    with pytest.raises(
        ConfigError, match=f"model.train_top_layers={top} must be between 1 and the model's 4"
    ):
        _tiny(train_top_layers=top)


@pytest.mark.parametrize(
    ("spec", "fast", "expected"),
    [
        (None, False, None),
        (3, False, 3),
        (0.5, False, 15),
        (0.34, True, 10),
        (0.01, True, 1),  # a fraction keeps at least one layer
        (2.0, False, 2),  # a whole float is a count
        ("auto", True, None),  # CUDA or native CPU bf16: every layer trains
        ("auto", False, 15),  # fp32-only CPU: the top half
    ],
)
def test_top_layer_count(spec, fast, expected):
    assert top_layer_count(spec, 30, fast) == expected


@pytest.mark.parametrize("spec", [1.5, -0.5, "half", True])
def test_top_layer_count_rejects_what_is_not_a_count_fraction_or_auto(spec):
    with pytest.raises(ConfigError, match=r"model\.train_top_layers="):
        top_layer_count(spec, 30, False)


def test_a_fraction_freezes_the_lower_layers_of_the_loaded_model():
    model = _tiny(train_top_layers=0.5)
    trainable_layers = {_layer_of(n) for n, p in model.named_parameters() if p.requires_grad} - {None}
    assert trainable_layers == {2, 3}


def test_auto_on_a_fast_device_never_looks_for_the_decoder_layers():
    """A model whose layer stack cannot be found still loads with ``auto`` where every layer trains anyway;
    where only the top half trains, the same lookup gives the one-line error."""
    no_layers = torch.nn.Linear(2, 2)
    assert top_layer_count("auto", lambda: len(decoder_layers(no_layers)), True) is None
    with pytest.raises(ConfigError, match="cannot find the decoder layers of Linear"):
        top_layer_count("auto", lambda: len(decoder_layers(no_layers)), False)
    assert top_layer_count(0.5, lambda: 30, False) == 15
