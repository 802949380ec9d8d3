"""Linear layers on oneDNN's pre-packed weights (``toolmaster.samplers.packed_linear``) against ``F.linear``."""

from __future__ import annotations

import pytest
import torch

from toolmaster.models import load_model
from toolmaster.samplers.packed_linear import PackedLinears, packable, packed_dtypes, packing_available

pytestmark = pytest.mark.skipif(not packing_available(), reason="this torch build has no oneDNN (mkldnn)")
# an AVX2-only CPU has no oneDNN bf16 products: bf16 layers stay plain there (tests/unit/test_cpu_isa.py runs
# that case under an emulated AVX2 cap)
needs_bf16_packs = pytest.mark.skipif(
    torch.bfloat16 not in packed_dtypes(),
    reason="this CPU packs no bf16 weights (oneDNN has no bf16 products here)",
)
BF16_OR_FP32 = "bfloat16" if torch.bfloat16 in packed_dtypes() else "float32"


@needs_bf16_packs
def test_packed_forward_is_bit_identical_and_leaves_the_modules_as_they_were():
    lm = load_model(source="tiny", dtype="bfloat16", device="cpu", seed=0)
    model = lm.model.eval()
    assert packable(model)
    ids = torch.randint(100, 1000, (3, 17))
    packs = PackedLinears(model)
    assert len(packs.linears) >= 7  # every projection of every layer, and the head
    with torch.inference_mode():
        plain = model(ids).logits
        with packs.active():
            assert all("forward" in vars(m) for m in packs.linears)
            packed = model(ids).logits
            one_row = model(ids[:1, :1]).logits  # decode-sized input, same packs
    assert torch.equal(packed, plain)
    assert len(packs.packs) == len(packs.linears)
    with torch.inference_mode():
        assert torch.equal(one_row, model(ids[:1, :1]).logits)
    assert not any("forward" in vars(m) for m in packs.linears)  # class forward restored


@needs_bf16_packs
def test_autograd_bypasses_the_packs_and_forget_follows_new_weights():
    lm = load_model(source="tiny", dtype="bfloat16", device="cpu", seed=0)
    model = lm.model
    ids = torch.randint(100, 1000, (2, 9))
    packs = PackedLinears(model)
    with packs.active():
        loss = model(ids).logits.sum()
        loss.backward()  # training inside the switch: plain F.linear, gradients reach the weights
    head = model.get_output_embeddings()
    assert head.weight.grad is not None and not packs.packs
    with torch.inference_mode(), packs.active():
        before = model(ids).logits
    with torch.no_grad():
        for linear in packs.linears:
            linear.weight.mul_(0.5)
    with torch.inference_mode(), packs.active():
        packs.forget()  # (a pack may alias its weight where oneDNN needs no re-layout: then it never was stale)
        fresh = model(ids).logits
    with torch.inference_mode():
        plain_now = model(ids).logits
    assert torch.equal(fresh, plain_now) and not torch.equal(fresh, before)


def test_engine_packs_only_where_it_can_and_repacks_after_clear():
    from toolmaster.samplers.hf import HFEngine

    lm = load_model(source="tiny", dtype=BF16_OR_FP32, device="cpu", seed=0)
    engine = HFEngine(lm.model, lm.tokenizer)
    assert engine.packed_linears and engine.for_model(lm.model).packed_linears
    with engine._packed(), torch.inference_mode():
        lm.model(torch.tensor([[5, 6, 7]]))
    assert engine._packs is not None and engine._packs.packs
    engine.clear()  # the rollout loop's clear: weights may have been written through .data
    assert not engine._packs.packs
    off = HFEngine(lm.model, lm.tokenizer, packed_linears=False)
    with off._packed():
        assert not any("forward" in vars(m) for m in lm.model.modules())
    assert packable(load_model(source="tiny", dtype="float32", device="cpu", seed=0).model)
    assert not packable(load_model(source="tiny", dtype="float16", device="cpu", seed=0).model)


def test_packed_fp32_forward_agrees_to_float_rounding():
    """fp32: the packed product sums in another order than MKL's sgemm, so logits agree to rounding, at
    prefill-sized and one-row (decode-sized) inputs, and the arg-max token is the same."""
    lm = load_model(source="tiny", dtype="float32", device="cpu", seed=0)
    model = lm.model.eval()
    ids = torch.randint(100, 1000, (3, 17))
    packs = PackedLinears(model)
    with torch.inference_mode():
        plain, plain_row = model(ids).logits, model(ids[:2, :1]).logits
        with packs.active():
            packed, packed_row = model(ids).logits, model(ids[:2, :1]).logits
    assert len(packs.packs) == len(packs.linears) >= 7
    for a, b in ((packed, plain), (packed_row, plain_row)):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)
        assert torch.equal(a.argmax(-1), b.argmax(-1))
