"""``stage.rollout_dtype``: the half-precision rollout copy decodes what a bf16 model decodes, keeps in step with
the policy it copies (trainable tensors every sync, everything after a restore), ignores the training step's
autocast, and the GRPO module uses it exactly where the precision is mixed and the engine can copy.

Tiny random Llama with the real HF engine (what the copy wraps); tokens compared under greedy decoding.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from helpers.engines import greedy
from helpers.grpo_scripted import FMT, fit_module, grpo_settings, scripted_suite

from toolmaster.errors import ConfigError
from toolmaster.models import load_model
from toolmaster.models.freezing import freeze_below_top
from toolmaster.rewards.compose import RewardGroup
from toolmaster.samplers.hf import HFEngine
from toolmaster.samplers.loop import RolloutConfig
from toolmaster.samplers.rollout_copy import CastCopyEngine, cast_copy, resolve_rollout_dtype
from toolmaster.samplers.scripted import ScriptedEngine
from toolmaster.stages.grpo.module import GRPOModule
from toolmaster.trajectory import Trajectory


def _tiny() -> Any:
    return load_model(source="tiny", dtype="float32", device="cpu", seed=0)


def _prompts(tokenizer: Any) -> list[list[int]]:
    texts = [
        "<|im_start|>user\nAdd 3 and 2.<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start|>user\nHi<|im_end|>\n",
    ]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def test_cast_copy_casts_parameters_keeps_buffers_and_shares_nothing():
    model = _tiny().model
    model.lm_head.weight.grad = torch.ones_like(model.lm_head.weight)
    duplicate = cast_copy(model, torch.bfloat16)
    assert {p.dtype for p in duplicate.parameters()} == {torch.bfloat16}
    assert not any(p.requires_grad for p in duplicate.parameters())
    assert all(p.grad is None for p in duplicate.parameters())
    assert not duplicate.training
    for (name, buffer), (_, original) in zip(duplicate.named_buffers(), model.named_buffers(), strict=True):
        assert buffer.dtype == original.dtype, name  # rotary frequencies stay fp32
    source = dict(model.named_parameters())
    for name, param in duplicate.named_parameters():
        assert param.data_ptr() != source[name].data_ptr()
        torch.testing.assert_close(param, source[name].detach().to(torch.bfloat16))
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # the policy is untouched
    # a policy already in the copy's dtype still gets its own storage (the async rollout decodes from the copy
    # while the optimizer writes the policy)
    half = copy.deepcopy(model).to(torch.bfloat16)
    for param, source in zip(cast_copy(half, torch.bfloat16).parameters(), half.parameters(), strict=True):
        assert param.data_ptr() != source.data_ptr()


def test_a_copy_first_synced_in_a_validation_loop_still_syncs_in_training():
    model = _tiny().model
    engine = CastCopyEngine(lambda m: HFEngine(m, _tiny().tokenizer), torch.bfloat16)
    with torch.inference_mode():  # what Lightning's validation loop runs under
        engine.sync_weights(model)
    assert not any(p.is_inference() for p in engine.copy.parameters())
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    engine.mark_restored()
    engine.sync_weights(model)  # outside inference mode: would raise on inference tensors
    torch.testing.assert_close(
        next(engine.copy.parameters()), next(model.parameters()).detach().to(torch.bfloat16)
    )


def test_copy_engine_decodes_what_a_bf16_model_decodes_even_under_autocast():
    loaded = _tiny()
    prompts = _prompts(loaded.tokenizer)
    engine = CastCopyEngine(lambda m: HFEngine(m, loaded.tokenizer), torch.bfloat16)
    with pytest.raises(RuntimeError, match="sync_weights"):
        greedy(engine, prompts)
    engine.sync_weights(loaded.model)
    reference = HFEngine(copy.deepcopy(loaded.model).to(torch.bfloat16), loaded.tokenizer)
    expected = [g.token_ids for g in greedy(reference, prompts)]
    assert [g.token_ids for g in greedy(engine, prompts)] == expected
    # a training step's autocast context (bf16-mixed) does not reach the copy's decoding
    seen: list[bool] = []
    inner_generate = engine.inner.generate

    def recording(*args: Any, **kwargs: Any) -> Any:
        seen.append(torch.is_autocast_enabled("cpu"))
        return inner_generate(*args, **kwargs)

    engine.inner.generate = recording  # type: ignore[method-assign]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = greedy(engine, prompts)
    assert seen == [False]
    assert [g.token_ids for g in inside] == expected


def test_sync_copies_trainable_tensors_and_everything_after_a_restore():
    model = _tiny().model
    freeze_below_top(model, 1)
    engine = CastCopyEngine(lambda m: HFEngine(m, _tiny().tokenizer), torch.bfloat16)
    engine.sync_weights(model)
    trainable = next(p for p in model.parameters() if p.requires_grad)
    frozen = next(p for p in model.parameters() if not p.requires_grad)
    with torch.no_grad():
        trainable.add_(1.0)
        frozen.add_(1.0)
    engine.sync_weights(model)
    copies = dict(zip(map(id, model.parameters()), engine.copy.parameters(), strict=True))
    torch.testing.assert_close(copies[id(trainable)], trainable.detach().to(torch.bfloat16))
    assert not torch.equal(copies[id(frozen)], frozen.detach().to(torch.bfloat16))  # frozen: not re-copied
    engine.mark_restored()
    engine.sync_weights(model)
    torch.testing.assert_close(copies[id(frozen)], frozen.detach().to(torch.bfloat16))
    assert engine.weight_syncs == 3


def test_rollout_dtype_resolution():
    tokenizer = _tiny().tokenizer
    hf = HFEngine(_tiny().model, tokenizer)
    scripted = ScriptedEngine(tokenizer, lambda prompt: "<answer>1</answer>")
    assert resolve_rollout_dtype("auto", "bf16-mixed", hf) is torch.bfloat16
    assert resolve_rollout_dtype("auto", "16-mixed", hf) is None  # fp16 without autocast: only when asked
    assert (
        resolve_rollout_dtype("auto", "bf16-mixed", hf, weights_dtype=torch.bfloat16) is None
    )  # bf16 already
    assert resolve_rollout_dtype("float16", "32-true", hf) is torch.float16
    assert resolve_rollout_dtype("auto", "32-true", hf) is None
    assert resolve_rollout_dtype("auto", "bf16-true", hf) is None  # the policy already computes in bf16
    assert resolve_rollout_dtype("auto", "bf16-mixed", scripted) is None
    assert resolve_rollout_dtype("auto", "bf16-mixed", hf, "FSDP2Strategy") is None
    assert resolve_rollout_dtype(None, "bf16-mixed", hf) is None
    assert resolve_rollout_dtype("bfloat16", "32-true", hf) is torch.bfloat16
    with pytest.raises(ConfigError, match="needs the HF engine"):
        resolve_rollout_dtype("bfloat16", "bf16-mixed", scripted)
    with pytest.raises(ConfigError, match="unsharded"):
        resolve_rollout_dtype("float16", "bf16-mixed", hf, "FSDP2Strategy")
    with pytest.raises(ValueError, match="stage.rollout_dtype"):
        grpo_settings(rollout_dtype="int8")


def test_the_async_rollouts_copy_is_cast_and_private():
    from toolmaster.stages.grpo.async_rollout import RolloutPrefetcher

    loaded = _tiny()
    prefetcher = RolloutPrefetcher(
        loaded.model, lambda m: HFEngine(m, loaded.tokenizer), dtype=torch.bfloat16
    )
    try:
        pairs = list(zip(prefetcher.copy.parameters(), loaded.model.parameters(), strict=True))
        assert all(c.dtype is torch.bfloat16 and c.data_ptr() != p.data_ptr() for c, p in pairs)
        with torch.no_grad():
            pairs[0][1].add_(1.0)
        prefetcher.refresh(loaded.model, version=1)
        torch.testing.assert_close(pairs[0][0], pairs[0][1].detach().to(torch.bfloat16))
    finally:
        prefetcher.close()


class _SampledIds:
    weight = 1.0

    def __call__(self, trajectory: Trajectory, task: Any) -> float:
        return sum(trajectory.token_ids[trajectory.prompt_length :]) % 97 / 97


def _hf_module(**settings: Any) -> GRPOModule:
    loaded = _tiny()
    return GRPOModule(
        loaded.model,
        loaded.tokenizer,
        FMT,
        scripted_suite(),
        RewardGroup({"ids": _SampledIds()}),
        RolloutConfig(max_turns=2, max_new_tokens=8, temperature=1.0, seed=0),
        grpo_settings(lr=5e-3, micro_batch_size=8, **settings),
        max_grad_norm=None,
    )


def test_grpo_under_bf16_mixed_rolls_out_with_a_synced_bf16_copy():
    module = _hf_module(old_logprobs="sampler")
    fit_module(module, steps=2, precision="bf16-mixed")
    engine = module.engine
    assert isinstance(engine, CastCopyEngine) and module.rollout_dtype is torch.bfloat16
    assert engine.weight_syncs == 2  # before each step's rollout (the weights changed in between)
    # the copy holds the weights that played the last step: the policy's before its last update, so it
    # differs from the trained policy now; a sync makes it equal to the trained policy cast to bf16
    engine.sync_weights(module.model)
    for param, source in zip(engine.copy.parameters(), module.model.parameters(), strict=True):
        torch.testing.assert_close(param, source.detach().to(torch.bfloat16))


@pytest.mark.parametrize(("precision", "setting"), [("32-true", "auto"), ("bf16-mixed", None)])
def test_grpo_rolls_out_with_the_policy_itself_otherwise(precision: str, setting: str | None):
    module = _hf_module(rollout_dtype=setting)
    fit_module(module, steps=1, precision=precision)
    assert isinstance(module.engine, HFEngine) and module.engine.model is module.model
    assert module.rollout_dtype is None
