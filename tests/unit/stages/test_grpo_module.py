"""``GRPOModule`` on a tiny model with scripted rollouts, and ``stage=grpo``'s runner in-process (no subprocess).

- The update phase (deterministic rewards, no generation cost): forward passes per step for mu = 1 / 2 and old
  log-probs from the sampler, bf16-mixed inner updates, engine sync and sleep, the KL reference (absent, LoRA
  adapter switched off, frozen copy), zero-variance groups, dropping truncated episodes.
- The runner through Hydra: CSV metric names, trajectory samples, validation, resume, HF export, and its
  one-line refusals. The 2-process ``trainer=ddp_cpu`` run and the real SmolLM2 run stay in
  ``tests/integration/test_grpo.py``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from helpers.grpo_scripted import (
    LORA,
    TINY_RUN,
    TRAIN_METRICS,
    compose_run,
    cycle_replies,
    fit_module,
    grpo_settings,
    metric,
    metrics_rows,
    models_alive,
    record_steps,
    scripted_module,
    snapshot_weights,
)
from helpers.lookups import num_loss_tokens, reference_model

from toolmaster.algorithms.fused_head import fused_head_parts
from toolmaster.algorithms.logprobs import policy_logprobs
from toolmaster.analyze import analyze
from toolmaster.models import load_model
from toolmaster.samplers.scripted import ScriptedEngine
from toolmaster.trajectory import Trajectory


# ---------------------------------------------------------------------------- (2) no redundant passes
@pytest.mark.parametrize(
    "mu,old_logprobs,expected",
    [(1, "recompute", 3), (2, "recompute", 3 + 2 * 3), (2, "sampler", 2 * 3)],
    ids=["mu1", "mu2-recompute", "mu2-sampler"],
)
def test_forward_passes_per_step(mu, old_logprobs, expected):
    """8 episodes in micro-batches of 3 = 3 micro-batches; rollouts are scripted, so every forward pass
    counted here is the update's. mu = 1 needs one pass per micro-batch (old = current, detached);
    mu = 2 adds one no-grad pass for old log-probs, unless they come from the sampler. Prompt sharing is off
    here: a shared pass is two model calls (prompts, then continuations), counted in test_prefix_sharing.py."""
    loaded = load_model(source="tiny", dtype="float32", device="cpu")
    settings = grpo_settings(mu=mu, old_logprobs=old_logprobs, share_prompts=False)
    module = scripted_module(loaded, cycle_replies("right", "wrong"), settings)
    calls: list[bool] = []
    fused_head_parts(loaded.model)  # the fused head's one-off check, before counting
    # every path runs the decoder once per pass (the fused head calls it without the LM wrapper)
    loaded.model.get_decoder().register_forward_hook(lambda *_: calls.append(torch.is_grad_enabled()))
    trainer = fit_module(module, steps=1)
    assert trainer.global_step == mu
    assert len(calls) == expected == module.forward_passes
    if mu == 1:
        assert calls == [True] * 3
        assert metric(trainer, "train/ratio") == 1.0 and metric(trainer, "train/clip_fraction") == 0.0
    elif old_logprobs == "recompute":
        assert calls == [False] * 3 + [True] * 6  # old log-probs once, before the inner loop
    assert math.isfinite(metric(trainer, "train/loss"))


class RecordingEngine(ScriptedEngine):
    """Scripted turns plus the weight-sync / sleep interface of ``sampler=vllm``, recording the order of calls.

    A test double: vLLM's sleep mode needs CUDA, so the real engine cannot sleep on this CPU; the real engine's
    sync is tested in test_vllm_sampler.py. Here only the module's protocol is checked: sleep before the
    update, wake after it, one sync before every rollout whose weights changed."""

    sleep_supported = True

    def __init__(self, tokenizer: Any, respond: Callable[[str], Any], model: Any) -> None:
        super().__init__(tokenizer, respond)
        self.model = model
        self.events: list[str] = []
        self.synced_to: list[dict[str, torch.Tensor]] = []

    def generate(self, prompts, params, max_new_tokens, messages=None, keys=None):
        self.events.append("generate")
        return super().generate(prompts, params, max_new_tokens, messages, keys)

    def sync_weights(self, model: Any) -> None:
        self.events.append("sync")
        self.synced_to.append(snapshot_weights(model))

    def sleep(self) -> None:
        self.events.append("sleep")

    def wake_up(self) -> None:
        self.events.append("wake")


def test_bf16_mixed_inner_updates_see_the_updated_weights():
    """Under ``bf16-mixed`` the whole training step runs in one autocast context, which caches the bf16
    copies of the weights; without clearing that cache after each optimizer step, the second of mu = 2
    updates would compute its log-probs with the weights from before the first (ratio exactly 1)."""
    loaded = load_model(source="tiny", dtype="float32", device="cpu")
    module = scripted_module(
        loaded, cycle_replies("right", "wrong"), grpo_settings(mu=2, micro_batch_size=8, share_prompts=False)
    )
    outputs: list[torch.Tensor] = []
    logprobs = module._logprobs

    def recording(*args: Any, **kwargs: Any) -> Any:
        result = logprobs(*args, **kwargs)
        outputs.append(result[0].detach().float().clone())
        return result

    module._logprobs = recording  # type: ignore[method-assign]
    fit_module(module, steps=1, precision="bf16-mixed")
    old, first, second = outputs  # one micro-batch: old log-probs, then one pass per inner update
    assert torch.equal(first, old)  # same weights, same cached casts
    assert not torch.equal(second, old)  # the first update is visible to the second


@pytest.mark.parametrize("mu", [1, 2])
def test_engine_syncs_after_updates_and_sleeps_through_them(mu):
    loaded = load_model(source="tiny", dtype="float32", device="cpu")
    engine = RecordingEngine(loaded.tokenizer, cycle_replies("right", "wrong"), loaded.model)
    settings = grpo_settings(mu=mu)
    module = scripted_module(loaded, None, settings, engine=engine)
    fit_module(module, steps=2)
    events = [e for i, e in enumerate(engine.events) if e != "generate" or engine.events[i - 1] != "generate"]
    # per GRPO step: sync (weights changed: fit start, then the previous update), rollout, sleep, update, wake
    assert events == ["sync", "generate", "sleep", "wake"] * 2, engine.events
    # the second sync carried the weights after step 1's updates, not the initial ones
    assert any(
        not torch.equal(a, b) for a, b in zip(engine.synced_to[0].values(), engine.synced_to[1].values())
    )
    assert module.synced_engine() is engine and engine.events[-1] == "sync"  # step 2's update made it stale
    module.synced_engine()
    assert engine.events.count("sync") == 3  # no new update: no second sync


# --------------------------------------------------------------------------------------------- (3) KL
def test_no_reference_without_kl():
    loaded = load_model(source="tiny", dtype="float32", device="cpu")
    before = models_alive()
    module = scripted_module(loaded, cycle_replies("right"), grpo_settings(kl_coef=0.0))
    assert models_alive() == before
    assert reference_model(module) is None and module._reference is None and not module.has_reference


def test_kl_with_lora_uses_the_base_with_the_adapter_disabled(tmp_path):
    loaded = load_model(source="tiny", dtype="float32", device="cpu", lora=LORA)
    base = load_model(source="tiny", dtype="float32", device="cpu")  # same seed: the LoRA model's base
    before = models_alive()
    module = scripted_module(loaded, cycle_replies("right", "wrong"), grpo_settings(kl_coef=0.1, mu=2))
    assert models_alive() == before  # no second copy of the model
    assert reference_model(module) is module.model and module._reference is None
    assert sum(p.numel() for p in module.parameters()) == sum(p.numel() for p in loaded.model.parameters())
    seen = record_steps(module)
    trainer = fit_module(module, steps=1)
    assert metric(trainer, "train/kl") > 0  # the second inner update moved away from the reference
    packed = seen["packed"][0]
    with torch.no_grad():
        ref = module._reference_logprobs(packed)
        base_lp = policy_logprobs(base.model, packed, module.temperature)[0]
        policy = policy_logprobs(module.model, packed, module.temperature)[0]
    mask = packed.loss_mask
    torch.testing.assert_close(ref[mask], base_lp[mask], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(policy[mask], ref[mask])  # the adapter is back on afterwards


def test_kl_without_lora_uses_a_frozen_copy_outside_the_module_state():
    loaded = load_model(source="tiny", dtype="float32", device="cpu")
    initial = snapshot_weights(loaded.model)
    before = models_alive()
    module = scripted_module(loaded, cycle_replies("right", "wrong"), grpo_settings(kl_coef=0.1))
    assert models_alive() == before + 1
    reference = reference_model(module)
    assert reference is not None and reference is not module.model
    assert not any(p.requires_grad for p in reference.parameters())
    assert sum(p.numel() for p in module.parameters()) == sum(p.numel() for p in loaded.model.parameters())
    assert all(key.startswith("model.") for key in module.state_dict())
    fit_module(module, steps=1)
    for name, param in reference.named_parameters():
        torch.testing.assert_close(param, initial[name], atol=0, rtol=0)
    assert any(not torch.equal(p, initial[n]) for n, p in module.model.named_parameters())


# ------------------------------------------------------------------------------ (4) zero-variance groups
@pytest.mark.parametrize(
    "advantage,aggregation",
    [("grpo", "token_mean"), ("grpo", "sequence_mean"), ("dr_grpo", "dr_grpo_constant")],
)
def test_zero_variance_groups_give_a_finite_zero_loss(advantage, aggregation):
    loaded = load_model(source="tiny", dtype="float32", device="cpu")
    module = scripted_module(
        loaded, cycle_replies("right"), grpo_settings(advantage=advantage, aggregation=aggregation, mu=2)
    )
    initial = snapshot_weights(loaded.model)
    seen = record_steps(module)
    trainer = fit_module(module, steps=1)
    assert all(t.reward == 1.0 for t in seen["trajectories"][0])
    assert (seen["packed"][0].advantages == 0).all()
    for name in ("train/loss", "train/kl", "train/entropy", "train/clip_fraction"):
        assert math.isfinite(metric(trainer, name)), name
    assert metric(trainer, "train/loss") == 0.0
    for name, param in loaded.model.named_parameters():
        assert param.grad is None or torch.isfinite(param.grad).all(), name
        torch.testing.assert_close(param, initial[name], atol=0, rtol=0)  # no signal, no step


# ------------------------------------------------------------------------------------ (5) drop_truncated
@pytest.mark.parametrize("drop", [True, False])
def test_drop_truncated_removes_truncated_episodes_from_the_loss(drop):
    loaded = load_model(source="tiny", dtype="float32", device="cpu")
    module = scripted_module(loaded, cycle_replies("right", "cut"), grpo_settings(drop_truncated=drop))
    seen = record_steps(module)
    trainer = fit_module(module, steps=1)
    trajectories, packed = seen["trajectories"][0], seen["packed"][0]
    truncated = {i for i, t in enumerate(trajectories) if t.truncated}
    assert truncated and len(truncated) < len(trajectories)
    kept = set(packed.index.tolist())
    assert kept == (set(range(len(trajectories))) - truncated if drop else set(range(len(trajectories))))
    expected_tokens = sum(sum(t.loss_mask) for i, t in enumerate(trajectories) if i in kept)
    assert metric(trainer, "train/loss_tokens") == expected_tokens == num_loss_tokens(packed)


def test_all_truncated_keeps_one_loss_free_row():
    """Nothing left to learn from: a placeholder row keeps the backward passes (DDP lockstep), loss 0."""
    loaded = load_model(source="tiny", dtype="float32", device="cpu")
    module = scripted_module(loaded, cycle_replies("cut"), grpo_settings(drop_truncated=True))
    initial = snapshot_weights(loaded.model)
    seen = record_steps(module)
    trainer = fit_module(module, steps=1)
    assert len(seen["packed"][0]) == 1 and num_loss_tokens(seen["packed"][0]) == 0
    assert metric(trainer, "train/loss") == 0.0 and metric(trainer, "train/loss_tokens") == 0.0
    for name, param in loaded.model.named_parameters():
        torch.testing.assert_close(param, initial[name], atol=0, rtol=0)


# ----------------------------------------------------------------------------------- task distribution


def test_runner_logs_metrics_and_trajectories_validates_resumes_and_exports(tmp_path):
    from toolmaster.run import run

    cfg = compose_run(tmp_path, *TINY_RUN, "trainer.max_steps=2", "stage.val_every_n_steps=2")
    result = run(cfg)
    rows = metrics_rows(tmp_path)
    header = set(rows[0])
    components = ["outcome", "format", "trial_cost", "exec_error", "call_match"]
    missing = [m for m in TRAIN_METRICS + [f"train/reward/{c}" for c in components] if m not in header]
    assert not missing, sorted(header)
    assert {"val/success", "val/test_seen/success", "val/test_seen/trial_calls"} <= header
    train_rows = [r for r in rows if r.get("train/loss")]
    assert [int(r["step"]) for r in train_rows] == [0, 1]
    assert all(float(r["train/episodes"]) == 2 for r in train_rows)
    lines = (tmp_path / "trajectories" / "train.jsonl").read_text().splitlines()
    assert len(lines) == 2 * 2  # one group of G = 2 per step
    record = json.loads(lines[0])
    assert {"grpo_step", "advantage", "token_ids", "loss_mask", "messages", "reward"} <= set(record)
    Trajectory.from_dict({k: v for k, v in record.items() if k not in ("grpo_step", "rank", "advantage")})
    summary = json.loads((tmp_path / "grpo_summary.json").read_text())
    assert summary["grpo_steps"] == 2 and summary["val_success"] == result == 0.0
    assert (tmp_path / "hf" / "config.json").exists() and (tmp_path / "checkpoints" / "last.ckpt").exists()
    # the final validation's episodes, in stage=eval's layout: the GRPO run reads as an arm of toolmaster.analyze
    validated = [json.loads(line) for line in (tmp_path / "val_trajectories" / "test_seen.jsonl").open()]
    assert len(validated) == 1 and validated[0]["split"] == "test_seen" and validated[0]["token_ids"]
    assert analyze(tmp_path)["test_seen"][tmp_path.name]["episodes"] == 1

    # resume: one more step continues from the checkpoint (step count, task order), not from scratch
    result = run(compose_run(tmp_path, *TINY_RUN, "trainer.max_steps=3"))
    summary = json.loads((tmp_path / "grpo_summary.json").read_text())
    assert summary["grpo_steps"] == 3 and summary["resumed_from"] == str(
        tmp_path / "checkpoints" / "last.ckpt"
    )
    assert summary["val_success"] is None and result == summary["train_reward"]
    assert len((tmp_path / "trajectories" / "train.jsonl").read_text().splitlines()) == 3 * 2
    rows = metrics_rows(
        tmp_path
    )  # the resumed run appended to the metrics history, which keeps the first run's rows
    assert [int(r["step"]) for r in rows if r.get("train/loss")] == [0, 1, 2]
    assert any(r.get("val/test_seen/success") for r in rows)


def test_runner_rejects_greedy_sampling_and_missing_steps(tmp_path):
    from toolmaster.errors import ConfigError
    from toolmaster.run import run

    with pytest.raises(ConfigError, match="sampler.temperature"):
        run(compose_run(tmp_path, *TINY_RUN, "sampler.temperature=0"))
    with pytest.raises(ConfigError, match="trainer.max_steps"):
        run(compose_run(tmp_path, *TINY_RUN, "trainer.max_steps=-1"))
    with pytest.raises(ConfigError, match="accumulate_grad_batches"):
        run(compose_run(tmp_path, *TINY_RUN, "trainer.max_steps=1", "trainer.accumulate_grad_batches=2"))
