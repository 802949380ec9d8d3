"""Log-probs of the scored tokens through the vocabulary projection in chunks, without full-vocabulary tensors.

The plain path (``logits_to_keep``) projects every *column* some row of the batch scores, then runs a float32
log-softmax and its backward over ``[rows x columns, vocabulary]``. In an SFT batch of four toolworld episodes
the union of the assistant columns is 1,424 positions for 838 labelled tokens, and the log-softmax, its
backward, the zero-filled gradient and the float32 copy of the logits were 36 % of a step's time on a 2-core
CPU (``torch.profiler``, SmolLM2-135M, 49,152 tokens of vocabulary, bf16-mixed, top 10 layers trained).

Here the decoder's last hidden states are gathered at exactly the scored (row, column) positions, and a custom
autograd function projects them in chunks of rows. The forward keeps each row's log-sum-exp and target logit,
and the logits in the compute dtype (bf16 under autocast: half the plain path's float32 copy; above
``SAVED_LOGITS_ELEMENTS`` it keeps none and the backward projects each chunk again); the float32 reductions
run one chunk at a time. The backward writes ``(onehot - softmax) x grad`` over the spent logits, then forms
the hidden-state and (when the head is trained) weight gradients with one product each. The values are the
plain path's: the logits are computed in the same dtype and reduced in float32 (tested against it, with
gradients, in ``tests/unit/algorithms/test_fused_head.py``).

Used only where the model computes ``logits = lm_head(decoder(...).last_hidden_state)`` with a bias-free head
(``fused_head_parts``, verified once per model on a few tokens: a logit scale or soft-capping fails the check
and the caller keeps the plain path), and never on an FSDP-sharded model (calling its decoder directly would
skip the root module's unsharding of the embeddings and head).
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import Tensor

CHUNK_ELEMENTS = 1 << 24  # logits per chunk (64 MiB in float32)
SAVED_LOGITS_ELEMENTS = 1 << 28  # up to this many logits (512 MiB in bf16) are kept for the backward

_VERIFIED: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def _compute_dtype(reference: Tensor) -> torch.dtype:
    device = reference.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return reference.dtype


class _ChunkedLogProbs(torch.autograd.Function):
    """``log softmax(hidden @ weight.T / temperature)[target]`` per row, and (with ``with_entropy``, detached)
    the entropy of each row's distribution, else an empty tensor."""

    @staticmethod
    def forward(
        ctx: Any,
        hidden: Tensor,
        weight: Tensor,
        targets: Tensor,
        temperature: float,
        dtype: torch.dtype,
        with_entropy: bool,
    ) -> tuple[Tensor, Tensor]:
        rows, vocabulary = hidden.size(0), weight.size(0)
        chunk = max(1, CHUNK_ELEMENTS // vocabulary)
        lse = torch.empty(rows, dtype=torch.float32, device=hidden.device)
        picked = torch.empty_like(lse)
        entropy = torch.empty_like(lse) if with_entropy else lse.new_empty(0)
        # the logits in the compute dtype, kept for the backward when they fit (no second projection)
        saved = rows * vocabulary <= SAVED_LOGITS_ELEMENTS
        store = torch.empty((rows, vocabulary), dtype=dtype, device=hidden.device) if saved else None
        w = weight.to(dtype)
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, rows, chunk):
                end = min(rows, start + chunk)
                raw = hidden[start:end].to(dtype) @ w.t()
                if store is not None:
                    store[start:end] = raw
                z = raw.float()
                if temperature != 1.0:
                    z = z / temperature
                norm = torch.logsumexp(z, dim=-1)
                lse[start:end] = norm
                picked[start:end] = z.gather(1, targets[start:end, None]).squeeze(1)
                if with_entropy:
                    entropy[start:end] = norm - (torch.softmax(z, dim=-1) * z).sum(dim=-1)
        ctx.save_for_backward(hidden, weight, targets, lse, *(() if store is None else (store,)))
        ctx.temperature, ctx.dtype = temperature, dtype
        ctx.mark_non_differentiable(entropy)
        return picked - lse, entropy

    @staticmethod
    def backward(ctx: Any, grad_logprobs: Tensor, _grad_entropy: Tensor) -> tuple[Tensor | None, ...]:
        hidden, weight, targets, lse, *stored = ctx.saved_tensors
        store = stored[0] if stored else None
        temperature, dtype = ctx.temperature, ctx.dtype
        want_hidden, want_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_hidden = torch.empty_like(hidden) if want_hidden and store is None else None
        grad_weight = (
            torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
            if want_weight and store is None
            else None
        )
        chunk = max(1, CHUNK_ELEMENTS // weight.size(0))
        w = weight.to(dtype)
        grad_logprobs = grad_logprobs.float()
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, hidden.size(0), chunk):
                end = min(hidden.size(0), start + chunk)
                h = hidden[start:end].to(dtype)
                z = (store[start:end] if store is not None else h @ w.t()).float()
                if temperature != 1.0:
                    z = z / temperature
                g = grad_logprobs[start:end]
                # d logp / d z = onehot(target) - softmax(z); times the incoming gradient, over the temperature
                dz = torch.exp(z - lse[start:end, None]).mul_(-g[:, None])
                dz.scatter_add_(1, targets[start:end, None], g[:, None])
                if temperature != 1.0:
                    dz.div_(temperature)
                if store is not None:  # the saved logits are spent: their rows hold the gradient from now on
                    # (a second backward through this graph fails autograd's version check, never silently)
                    store[start:end] = dz
                    continue
                dz = dz.to(dtype)
                if grad_hidden is not None:
                    grad_hidden[start:end] = (dz @ w).to(hidden.dtype)
                if grad_weight is not None:
                    grad_weight += (dz.t() @ h).float()
            if store is not None:  # one product each over all rows instead of one per chunk
                if want_hidden:
                    grad_hidden = (store @ w).to(hidden.dtype)
                if want_weight:
                    grad_weight = (store.t() @ hidden.to(dtype)).float()
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_hidden, grad_weight, None, None, None, None


def fsdp_sharded(model: Any) -> bool:
    """True when ``model`` (or a submodule) is an FSDP2 unit: its decoder cannot be called on its own."""
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(module, FSDPModule) for module in model.modules())


def fused_head_parts(model: Any) -> tuple[Any, Tensor] | None:
    """(decoder, head weight) when ``model``'s logits are ``decoder(...).last_hidden_state @ weight.T``, else
    None. Checked once per model object on three tokens in eval mode (a logit scale, soft-capping, a head bias
    or a decoder that is not the logits' input fail it)."""
    get_decoder = getattr(model, "get_decoder", None)
    get_head = getattr(model, "get_output_embeddings", None)
    if get_decoder is None or get_head is None:
        return None
    try:
        decoder, head = get_decoder(), get_head()
    except (AttributeError, NotImplementedError):
        return None
    weight = getattr(head, "weight", None)
    if decoder is None or decoder is model or weight is None or getattr(head, "bias", None) is not None:
        return None
    verified = _VERIFIED.get(model)
    if verified is None:
        verified = not fsdp_sharded(model) and _same_logits(model, decoder, weight)
        _VERIFIED[model] = verified
    return (decoder, weight) if verified else None


@torch.no_grad()
def _same_logits(model: Any, decoder: Any, weight: Tensor) -> bool:
    was_training = model.training
    model.eval()
    try:
        ids = torch.tensor([[1, 2, 3]], device=weight.device)
        with torch.autocast(weight.device.type, enabled=False):
            plain = model(input_ids=ids, use_cache=False).logits.float()
            hidden = decoder(input_ids=ids, use_cache=False).last_hidden_state
            fused = (hidden.to(weight.dtype) @ weight.t()).float()
    except Exception:  # noqa: BLE001 - any model this path cannot drive keeps the plain path
        return False
    finally:
        model.train(was_training)
    if plain.shape != fused.shape:
        return False
    scale = plain.abs().max().clamp(min=1.0)
    return bool(((plain - fused).abs().max() / scale) < 1e-2)


def scored_logprobs(
    model: Any,
    input_ids: Tensor,
    attention_mask: Tensor | None,
    targets: Tensor,
    scored: Tensor,
    temperature: float = 1.0,
    with_entropy: bool = False,
) -> tuple[Tensor, Tensor, Tensor] | None:
    """Log-probs and (with ``with_entropy``, else empty) entropies of ``targets`` ``[B, T - 1]`` (column t:
    the token after position t) where ``scored`` is True, as flat ``[K]`` tensors in ``scored.nonzero()``
    order, with those positions ``[K, 2]``; None when the model does not allow the fused head (the caller's
    plain path)."""
    parts = fused_head_parts(model)
    if parts is None:
        return None
    decoder, weight = parts
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    where = scored.nonzero()
    rows, columns = where[:, 0], where[:, 1]
    logprobs, entropy = head_logprobs(
        weight, hidden[rows, columns], targets[rows, columns], temperature, with_entropy
    )
    return logprobs, entropy, where


def head_logprobs(
    weight: Tensor, hidden: Tensor, targets: Tensor, temperature: float = 1.0, with_entropy: bool = False
) -> tuple[Tensor, Tensor]:
    """Log-probs ``[K]`` of ``targets`` under ``hidden @ weight.T / temperature`` for hidden states ``[K, H]``
    (the decoder's, at the scored positions), and with ``with_entropy`` the entropies (detached; else empty),
    projected in chunks; in the autocast dtype where autocast is on (as the model's own head would be), else in
    the hidden states'."""
    dtype = _compute_dtype(hidden)
    apply: Any = _ChunkedLogProbs.apply
    logprobs, entropy = apply(hidden, weight, targets, float(temperature), dtype, with_entropy)
    return logprobs, entropy
