"""The fused head (``toolmaster.algorithms.fused_head``) gives the plain path's losses, log-probs, entropies and
gradients on a real (tiny) model, in float32 and under bf16 autocast, with and without temperature and with a
frozen head; a model whose logits are not ``decoder @ head.T`` keeps the plain path."""

from __future__ import annotations

import pytest
import torch

from toolmaster.algorithms import fused_head
from toolmaster.algorithms.logprobs import IGNORE_INDEX, policy_logprobs, token_losses
from toolmaster.algorithms.packing import PackedBatch
from toolmaster.algorithms.prefix_sharing import plan_prefixes, shared_prefix_logprobs
from toolmaster.models import load_model


def _batch(rows: int = 3, width: int = 40) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    ids = torch.randint(5, 200, (rows, width))
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, IGNORE_INDEX)
    for row in range(rows):
        n = width - 9 * row
        mask[row, :n] = 1
        labels[row, n // 3 : n // 2] = ids[row, n // 3 : n // 2]  # two labelled spans per row
        labels[row, n - 6 : n] = ids[row, n - 6 : n]
        ids[row, n:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@pytest.fixture()
def tiny():
    return load_model(source="tiny", dtype="float32", device="cpu", seed=0).model


def _grads(model) -> dict[str, torch.Tensor]:
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


def _assert_same_grads(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], tol: float) -> None:
    assert a.keys() == b.keys() and a
    for name in a:
        scale = b[name].abs().max().clamp(min=1e-6)
        assert (a[name] - b[name]).abs().max() / scale < tol, name


@pytest.mark.parametrize("autocast", [False, True])
def test_sft_loss_and_gradients_match_the_plain_path(tiny, autocast):
    batch = _batch()
    context = torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast)
    with context:
        total, count = token_losses(tiny, batch, fused_head=True)
    total.backward()
    fused = _grads(tiny)
    with context:
        plain_total, plain_count = token_losses(tiny, batch, fused_head=False)
    plain_total.backward()
    plain = _grads(tiny)
    assert int(count) == int(plain_count) == int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    tol = 2e-2 if autocast else 1e-5
    assert float(total.detach()) == pytest.approx(float(plain_total.detach()), rel=tol)
    _assert_same_grads(fused, plain, tol=5e-2 if autocast else 1e-4)
    assert fused_head.fused_head_parts(tiny) is not None  # the fused path really ran


def test_frozen_head_gets_no_gradient_and_the_rest_still_matches(tiny):
    head = tiny.get_output_embeddings().weight
    head.requires_grad_(False)
    batch = _batch()
    token_losses(tiny, batch)[0].backward()
    fused = _grads(tiny)
    token_losses(tiny, batch, fused_head=False)[0].backward()
    plain = _grads(tiny)
    assert head.grad is None
    _assert_same_grads(fused, plain, tol=1e-4)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_policy_logprobs_and_entropy_match_the_plain_path(tiny, temperature):
    batch = _batch()
    loss_mask = batch["labels"][:, 1:] != IGNORE_INDEX
    packed = PackedBatch(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        loss_mask=loss_mask,
        old_logprobs=torch.zeros(loss_mask.shape),
        advantages=torch.zeros(loss_mask.size(0)),
        lengths=batch["attention_mask"].sum(dim=1),
        index=torch.arange(loss_mask.size(0)),
    )
    fused, fused_entropy = policy_logprobs(tiny, packed, temperature, with_entropy=True)
    (fused * loss_mask).sum().backward()
    fused_grads = _grads(tiny)
    plain, plain_entropy = policy_logprobs(tiny, packed, temperature, with_entropy=True, fused_head=False)
    (plain * loss_mask).sum().backward()
    plain_grads = _grads(tiny)
    assert torch.allclose(fused[loss_mask], plain[loss_mask], atol=1e-5)
    assert torch.all(fused[~loss_mask] == 0)
    assert float(fused_entropy) == pytest.approx(float(plain_entropy), rel=1e-5)
    _assert_same_grads(fused_grads, plain_grads, tol=1e-4)


def test_chunks_and_recomputed_logits_give_the_same_result(tiny, monkeypatch):
    batch = _batch()
    whole = token_losses(tiny, batch)[0]
    whole.backward()
    one_chunk = _grads(tiny)
    vocabulary = tiny.get_output_embeddings().weight.size(0)
    monkeypatch.setattr(fused_head, "CHUNK_ELEMENTS", vocabulary * 5)  # 5 rows per chunk
    chunked = token_losses(tiny, batch)[0]
    chunked.backward()
    assert float(chunked.detach()) == pytest.approx(float(whole.detach()), rel=1e-6)
    _assert_same_grads(_grads(tiny), one_chunk, tol=1e-5)
    monkeypatch.setattr(fused_head, "SAVED_LOGITS_ELEMENTS", 0)  # logits projected again in the backward
    again = token_losses(tiny, batch)[0]
    again.backward()
    assert float(again.detach()) == pytest.approx(float(whole.detach()), rel=1e-6)
    _assert_same_grads(_grads(tiny), one_chunk, tol=1e-5)


class _ScaledLogits(torch.nn.Module):
    """A model whose logits are scaled after the head (as Cohere's or Granite's are): not fusable."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.inner = model

    def get_decoder(self):
        return self.inner.get_decoder()

    def get_output_embeddings(self):
        return self.inner.get_output_embeddings()

    def forward(self, **kwargs):
        out = self.inner(**kwargs)
        out.logits = out.logits * 0.5
        return out


def test_a_model_with_scaled_logits_keeps_the_plain_path(tiny):
    scaled = _ScaledLogits(tiny)
    assert fused_head.fused_head_parts(scaled) is None
    batch = _batch()
    total, _ = token_losses(scaled, batch)
    logits = scaled(input_ids=batch["input_ids"]).logits[:, :-1]
    reference = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)),
        batch["labels"][:, 1:].reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    assert float(total.detach()) == pytest.approx(float(reference.detach()), rel=1e-5)


def test_shared_prompt_pass_matches_its_plain_head(tiny):
    """The GRPO update's shared-prompt pass (``prefix_sharing``) projects only the loss tokens too."""
    torch.manual_seed(1)
    prompt = torch.randint(5, 200, (18,))
    rows, width = 4, 34
    ids = torch.zeros(rows, width, dtype=torch.long)
    attention = torch.zeros_like(ids)
    loss_mask = torch.zeros(rows, width - 1, dtype=torch.bool)
    for row in range(rows):
        n = width - 3 * row
        ids[row, :18] = prompt
        ids[row, 18:n] = torch.randint(5, 200, (n - 18,))
        attention[row, :n] = 1
        loss_mask[row, 17 : n - 1] = True
        loss_mask[row, 24:26] = False  # an observation inside the completion
    plan = plan_prefixes(ids, loss_mask, attention.sum(dim=1))
    assert plan.saved_tokens > 0
    results = {}
    for fused in (True, False):
        values, entropy = shared_prefix_logprobs(tiny, ids, attention, loss_mask, plan, 0.8, True, fused)
        (values * loss_mask).sum().backward()
        results[fused] = (values, entropy, _grads(tiny))
    (fused_values, fused_entropy, fused_grads), (plain_values, plain_entropy, plain_grads) = (
        results[True],
        results[False],
    )
    assert torch.allclose(fused_values[loss_mask], plain_values[loss_mask], atol=1e-5)
    assert torch.all(fused_values[~loss_mask] == 0)
    assert float(fused_entropy) == pytest.approx(float(plain_entropy), rel=1e-5)
    _assert_same_grads(fused_grads, plain_grads, tol=1e-4)


def test_a_second_backward_through_the_same_graph_fails_loudly():
    """The backward reuses the saved logits' memory for the gradient: autograd's version check must catch a
    retained graph run twice rather than give a wrong gradient."""
    weight = torch.randn(50, 8, requires_grad=True)
    hidden = torch.randn(5, 8, requires_grad=True)
    logprobs, _ = fused_head.head_logprobs(weight, hidden, torch.randint(0, 50, (5,)))
    loss = logprobs.sum()
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
