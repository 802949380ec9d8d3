"""Continuous batching over per-row KV slots against the left-padded layout (real SmolLM2, fp32)."""

from __future__ import annotations

import pytest
import torch

from toolmaster.samplers.hf import HFEngine
from toolmaster.samplers.packed_linear import packed_dtypes
from toolmaster.samplers.slot_cache import SlotKV

pytestmark = pytest.mark.slow


def _rollout(
    model,
    tokenizer,
    slot_cache: bool,
    draft_tokens: int = 0,
    temperature: float = 0.0,
    seed: int = 0,
    cache_dtype: str = "auto",
    packed_linears: bool = True,
):
    from toolmaster.protocol import get_chat_format
    from toolmaster.samplers.loop import RolloutConfig, rollout
    from toolmaster.worlds.toolworld import build_toolworld

    world = build_toolworld(seed=2, n_train=4, n_test=6)
    fmt = get_chat_format("chatml")
    tasks = world.tasks("test_seen")[:4]
    config = RolloutConfig(
        max_turns=3, max_new_tokens=32, temperature=temperature, batch_size=3, n_samples=2, seed=seed
    )
    engine = HFEngine(
        model,
        tokenizer,
        fmt.tags.closing_tags(),
        draft_tokens=draft_tokens,
        slot_cache=slot_cache,
        cache_dtype=cache_dtype,
        packed_linears=packed_linears,
    )
    return rollout(engine, tokenizer, fmt, world.suite, tasks, config), engine


def _same(a, b) -> None:
    assert [t.token_ids for t in a] == [t.token_ids for t in b]
    assert [t.loss_mask for t in a] == [t.loss_mask for t in b]
    for x, y in zip(a, b):
        assert torch.allclose(torch.tensor(x.logprobs), torch.tensor(y.logprobs), atol=2e-3)


@pytest.mark.parametrize("draft_tokens", [0, 6])
def test_slots_give_the_left_padded_layouts_greedy_rollouts_with_fewer_copies(
    smollm2, monkeypatch, draft_tokens
):
    """GRPO-like groups (2 samples per task, batch 3 over 8 episodes): episodes continue in their slots
    across turns, new ones take freed slots and share prefixes; tokens, masks and log-probs equal the
    left-padded layout's, and slots are dropped only when an episode ends with no one to take its slot."""
    drops = []
    keep_slots = SlotKV.keep_slots
    monkeypatch.setattr(
        SlotKV, "keep_slots", lambda self, keep: drops.append(len(keep)) or keep_slots(self, keep)
    )
    slots, slot_engine = _rollout(smollm2.model, smollm2.tokenizer, True, draft_tokens)
    padded, padded_engine = _rollout(smollm2.model, smollm2.tokenizer, False, draft_tokens)
    _same(slots, padded)
    assert sum(t.turns for t in slots) > len(slots)  # several turns continued in place
    assert len(drops) <= len(slots)  # at most one drop per finished episode, none per turn
    assert slot_engine.shared_tokens > 0 and slot_engine.prefill_tokens <= padded_engine.prefill_tokens
    assert not slot_engine._saved and slot_engine._slot_batch is None
    if draft_tokens:
        assert slot_engine.accepted_tokens > 0


def test_sampled_slot_rollouts_record_the_log_probs_of_a_teacher_forced_forward(smollm2):
    """Under sampling (with drafts, so rejected draft columns are left behind in the slots), every sampled
    token's recorded log-prob equals that of one forward pass over the whole conversation."""
    trajectories, engine = _rollout(smollm2.model, smollm2.tokenizer, True, 6, temperature=1.0, seed=3)
    assert engine.accepted_tokens < engine.drafted_tokens  # some drafts were rejected
    for trajectory in trajectories:
        ids = torch.tensor([trajectory.token_ids])
        with torch.inference_mode():
            logits = smollm2.model(ids).logits[0, :-1].float()
        expected = torch.log_softmax(logits, -1).gather(-1, ids[0, 1:, None]).squeeze(-1)
        sampled = torch.tensor(trajectory.loss_mask[1:], dtype=torch.bool)
        recorded = torch.tensor(trajectory.logprobs[1:])
        assert sampled.any()
        assert torch.allclose(recorded[sampled], expected[sampled], atol=2e-3)


def test_eager_attention_takes_the_slot_path_with_an_additive_mask(monkeypatch):
    """A model on transformers' eager attention gets the slot layout's mask as additive floats; its greedy
    rollouts equal the left-padded layout's."""
    from toolmaster.models import load_model
    from toolmaster.samplers import slot_batch

    lm = load_model(source="tiny", dtype="float32", device="cpu", seed=0)
    lm.model.set_attn_implementation("eager")
    calls = []
    run = slot_batch.SlotBatch.run
    monkeypatch.setattr(slot_batch.SlotBatch, "run", lambda self, *a: calls.append(1) or run(self, *a))
    slots, _ = _rollout(lm.model, lm.tokenizer, True)
    padded, _ = _rollout(lm.model, lm.tokenizer, False)
    assert calls and sum(t.num_generated_tokens for t in slots) > 0
    _same(slots, padded)


def test_rows_parked_earlier_in_a_step_keep_their_slots_when_others_end_later():
    """A row that ends on its sampled token is parked until its next turn joins; a row that ends on a
    draft token later in the same step must not free it."""
    from toolmaster.models import load_model
    from toolmaster.samplers.base import SamplingParams, TurnRequest
    from toolmaster.samplers.slot_batch import SlotBatch

    lm = load_model(source="tiny", dtype="float32", device="cpu", seed=0)
    engine = HFEngine(lm.model, lm.tokenizer)
    batch = SlotBatch(engine, SamplingParams(max_new_tokens=8), torch.Generator().manual_seed(0))
    first, second = [5, 6, 7], [8, 9]
    batch.join([TurnRequest("a", first, 8), TurnRequest("b", second, 8)])
    assert batch.lengths == [3, 2]
    batch.park([0], lambda finished: [TurnRequest("a", first + [10, 11], 8)])
    batch.park([1], lambda finished: [])  # b's episode ends
    assert batch.parked == {"a": 0} and batch.rows[1] is None
    batch.join([TurnRequest("a", first + [10, 11], 8)])  # continues in slot 0 after its 3 columns
    batch.drop_free()
    assert batch.lengths == [5] and not batch.parked and engine.prefill_tokens == 3 + 2 + 2


@pytest.fixture(scope="module")
def smollm2_bf16():
    from toolmaster.models import load_model

    return load_model(source="smollm2", dtype="bfloat16", device="cpu")


@pytest.mark.parametrize("draft_tokens", [0, 6])
def test_float32_slots_of_a_bf16_model_change_nothing_but_the_copies(smollm2_bf16, monkeypatch, draft_tokens):
    """A bf16 model's slots hold float32 keys and values (``cache_dtype=auto``): bf16 values are exact in
    float32 and the decode attention computes in float32 anyway, so greedy rollouts (decode, prefill of the
    next turns on the flash path, draft checks) give the same tokens and log-probs as bf16 slots."""
    from toolmaster.models import attention

    upcasts = []
    decode = attention.decode_attention
    monkeypatch.setattr(
        attention,
        "decode_attention",
        lambda q, k, v, *a: upcasts.append(k.dtype != torch.float32) or decode(q, k, v, *a),
    )
    model, tokenizer = smollm2_bf16.model, smollm2_bf16.tokenizer
    wide, wide_engine = _rollout(model, tokenizer, True, draft_tokens, cache_dtype="auto")
    assert wide_engine.slot_kv_dtype() == torch.float32 and upcasts and not any(upcasts)
    upcasts.clear()
    narrow, narrow_engine = _rollout(model, tokenizer, True, draft_tokens, cache_dtype="model")
    assert narrow_engine.slot_kv_dtype() is None and all(upcasts)  # bf16 slots: upcast at every call
    assert [t.token_ids for t in wide] == [t.token_ids for t in narrow]
    assert [t.logprobs for t in wide] == [t.logprobs for t in narrow]  # bit for bit
    assert sum(t.turns for t in wide) > len(wide)  # next turns were prefilled over float32 slots
    if draft_tokens:
        assert wide_engine.verify_steps > 0


def test_cache_dtype_resolution(smollm2, smollm2_bf16):
    """``auto``: float32 slots only where they save the upcast (a half-precision model on toolmaster_sdpa);
    bad values and float32 under another attention are one-line errors."""
    from toolmaster.errors import ToolMasterError
    from toolmaster.models import load_model

    tokenizer = smollm2.tokenizer
    assert HFEngine(smollm2_bf16.model, tokenizer).slot_kv_dtype() == torch.float32
    assert HFEngine(smollm2.model, tokenizer).slot_kv_dtype() is None  # fp32 model: its own dtype
    assert HFEngine(smollm2_bf16.model, tokenizer, cache_dtype="model").slot_kv_dtype() is None
    assert (
        HFEngine(smollm2.model, tokenizer, cache_dtype="float32").for_model(smollm2.model).cache_dtype
        == "float32"
    )
    with pytest.raises(ToolMasterError, match="cache_dtype: 'fp8' is not one of auto, model, float32"):
        HFEngine(smollm2.model, tokenizer, cache_dtype="fp8")
    eager = load_model(source="tiny", dtype="bfloat16", device="cpu", seed=0)
    eager.model.set_attn_implementation("eager")
    assert HFEngine(eager.model, eager.tokenizer).slot_kv_dtype() is None
    with pytest.raises(ToolMasterError, match="needs the toolmaster_sdpa attention, the model runs eager"):
        HFEngine(eager.model, eager.tokenizer, cache_dtype="float32").slot_kv_dtype()


@pytest.mark.skipif(
    torch.bfloat16 not in packed_dtypes(),
    reason="this CPU packs no bf16 weights (oneDNN has no bf16 products here; see test_cpu_isa.py)",
)
def test_packed_linears_sample_the_same_rollouts(smollm2_bf16, monkeypatch):
    """Sampled bf16 rollouts over packed linear weights (the engine's default) equal the plain ones token
    for token and log-prob for log-prob: the packed products are bit-identical."""
    from toolmaster.samplers.packed_linear import PackedLinears

    packs_made = []
    pack = PackedLinears._pack
    monkeypatch.setattr(PackedLinears, "_pack", lambda self, m: packs_made.append(1) or pack(self, m))
    model, tokenizer = smollm2_bf16.model, smollm2_bf16.tokenizer
    packed, packed_engine = _rollout(model, tokenizer, True, temperature=1.0, seed=5, packed_linears=True)
    plain, plain_engine = _rollout(model, tokenizer, True, temperature=1.0, seed=5, packed_linears=False)
    assert packed_engine._packs is not None and packs_made and plain_engine._packs is None
    assert [t.token_ids for t in packed] == [t.token_ids for t in plain]
    assert [t.logprobs for t in packed] == [t.logprobs for t in plain]


@pytest.mark.parametrize("draft_tokens", [0, 6])
def test_packed_fp32_linears_give_the_greedy_rollouts_of_plain_ones(smollm2, monkeypatch, draft_tokens):
    """fp32 SmolLM2 (what ``model.dtype=auto`` loads on a CPU without bf16): greedy rollouts over packed
    linear weights take the same tokens as over ``F.linear`` and record log-probs equal to float
    rounding (the packed product sums in another order)."""
    from toolmaster.samplers.packed_linear import PackedLinears

    packs_made = []
    pack = PackedLinears._pack
    monkeypatch.setattr(PackedLinears, "_pack", lambda self, m: packs_made.append(1) or pack(self, m))
    model, tokenizer = smollm2.model, smollm2.tokenizer
    packed, packed_engine = _rollout(model, tokenizer, True, draft_tokens, packed_linears=True)
    plain, plain_engine = _rollout(model, tokenizer, True, draft_tokens, packed_linears=False)
    assert packed_engine._packs is not None and packs_made and plain_engine._packs is None
    assert [t.token_ids for t in packed] == [t.token_ids for t in plain]
    assert [t.loss_mask for t in packed] == [t.loss_mask for t in plain]
    for x, y in zip(packed, plain):
        assert torch.allclose(torch.tensor(x.logprobs), torch.tensor(y.logprobs), atol=1e-4)
