"""``token_losses`` drops the attention mask of a right-padded batch (SDPA's causal path): the same loss and
gradients as with the mask, on a real (tiny) model; a batch with padding anywhere else keeps its mask."""

from __future__ import annotations

import torch

from toolmaster.algorithms.logprobs import IGNORE_INDEX, right_padded, token_losses
from toolmaster.models import load_model


def test_right_padded_detects_only_prefix_masks():
    assert right_padded(torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0]]))
    assert not right_padded(torch.tensor([[0, 1, 1], [1, 1, 1]]))  # left padding
    assert not right_padded(torch.tensor([[1, 0, 1]]))  # a hole
    assert right_padded(torch.ones(2, 4, dtype=torch.long))


class _MaskRecorder(torch.nn.Module):
    """Wraps a model and records the attention mask each call passes."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.masks = model, []

    def forward(self, **kwargs):
        self.masks.append(kwargs.get("attention_mask"))
        return self.model(**kwargs)


def _batch() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    ids = torch.randint(5, 200, (3, 24))
    lengths = [24, 17, 9]
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, IGNORE_INDEX)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
        labels[row, n // 2 : n] = ids[row, n // 2 : n]
        ids[row, n:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def test_right_padded_batch_gives_the_masked_loss_and_gradients():
    model = load_model(source="tiny", dtype="float32", device="cpu", seed=0).model
    batch = _batch()
    recorder = _MaskRecorder(model)
    total, count = token_losses(recorder, batch)
    total.backward()
    fast = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    assert recorder.masks == [None]
    # the reference: the same batch with its mask passed explicitly (a row of padding appended elsewhere
    # would do it too; here the model is called directly)
    targets = batch["labels"][:, 1:]
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    reference = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    reference.backward()
    torch.testing.assert_close(total, reference, rtol=1e-5, atol=1e-5)
    assert int(count) == int((targets != IGNORE_INDEX).sum())
    for name, grad in fast.items():
        torch.testing.assert_close(grad, dict(model.named_parameters())[name].grad, rtol=1e-4, atol=1e-6)


def test_left_padded_batch_keeps_its_mask():
    model = load_model(source="tiny", dtype="float32", device="cpu", seed=0).model
    batch = _batch()
    batch["attention_mask"] = batch["attention_mask"].flip(1)
    recorder = _MaskRecorder(model)
    token_losses(recorder, batch)
    assert recorder.masks[0] is batch["attention_mask"]
