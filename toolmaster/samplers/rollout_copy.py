"""Roll out with a half-precision copy of the policy (``stage.rollout_dtype``) instead of the policy itself.

Why: under mixed precision (Lightning's ``bf16-mixed``) the policy keeps fp32 weights and autocast casts every
weight to bf16 on every forward. In training the cast is a small share of a long forward; in decoding, one
token per row per forward, it is most of the step. Measured with ``python -m toolmaster.bench.rollout --batch 16
--mixed-policy`` (SmolLM2-135M, 2-core EPYC with avx512_bf16): 90.6 tokens/s on bf16 weights, 35.4 for the fp32
policy under autocast, 2.56x (``docs/performance.md``, "Rollout copy"). The copy computes what ``stage=eval`` computes on the exported
model loaded in bf16 (no autocast, every op in the copy's dtype).

``CastCopyEngine`` wraps an engine factory (``HFEngine.for_model``) around such a copy. It keeps its own
weights, so it offers ``sync_weights(model)`` like the vLLM engine, and the GRPO module syncs it after every
optimizer step (``GRPOModule.synced_engine``): the first sync builds the copy on the policy's device (after
Lightning has moved the module there), later ones copy only the tensors that train (frozen ones cannot change;
a restored checkpoint is followed by a full sync). The copy costs one more set of weights in the half dtype.

Validation rollouts (greedy) use the copy too, so they measure the policy as ``stage=eval`` will run it in
bf16, not the fp32 weights.

Log-probs: the sampler's recorded log-probs are the copy's. With ``stage.old_logprobs=recompute`` (ratio 1 at
``mu = 1``) the update is the policy gradient of the trained policy on episodes of its half-precision twin, the
same small mismatch as in every framework that samples with a separate inference engine; with
``stage.old_logprobs=sampler`` the clipped ratio corrects for it.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any

import torch

from toolmaster.errors import ConfigError
from toolmaster.samplers.base import Generation, GenerationEngine, SamplingParams, TurnRequest

ROLLOUT_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
# auto copies only under bf16-mixed: fp16 without autocast's fp32 ops risks overflow (name float16 to get it)
_MIXED = {"bf16-mixed": torch.bfloat16}


def cast_copy(model: torch.nn.Module, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """A frozen deep copy of ``model`` in eval mode, its parameters cast to ``dtype`` (None: kept). Buffers keep
    their dtype (rotary frequencies stay fp32). The parameters are cast while copying, so no second full-
    precision copy exists even for a moment, and no gradient is copied."""
    memo: dict[int, Any] = {}
    with (
        torch.inference_mode(False),
        torch.no_grad(),
    ):  # normal tensors, even when called in a validation loop
        for param in model.parameters():
            data = param.detach()
            # copy=True: a parameter already in ``dtype`` must not share storage with the policy
            memo[id(param)] = torch.nn.Parameter(data.to(dtype or data.dtype, copy=True), requires_grad=False)
        duplicate = copy.deepcopy(model, memo)
    return duplicate.eval()


def resolve_rollout_dtype(
    setting: str | None,
    precision: str,
    engine: GenerationEngine,
    trainer_strategy: Any = None,
    weights_dtype: torch.dtype = torch.float32,
) -> torch.dtype | None:
    """The dtype of the rollout copy for ``stage.rollout_dtype=setting``, or None: roll out with the policy.

    ``auto``: bf16 under ``bf16-mixed`` when the policy's weights are not bf16 already, the engine can decode
    with a copy (the HF engine's ``for_model``) and the strategy does not shard the weights; otherwise None
    (``16-mixed`` too: fp16 decoding without autocast's fp32 ops may overflow). ``bfloat16`` / ``float16``:
    always, or a ``ConfigError`` saying why it cannot. ``null``: never."""
    if setting is None or str(setting).lower() in ("null", "none"):
        return None
    sharded = "fsdp" in str(trainer_strategy or "").lower()
    copyable = callable(getattr(engine, "for_model", None))
    if setting == "auto":
        dtype = _MIXED.get(str(precision))
        useful = dtype is not None and dtype != weights_dtype
        return dtype if useful and copyable and not sharded else None
    if setting not in ROLLOUT_DTYPES:
        raise ConfigError(f"stage.rollout_dtype={setting!r} is not one of auto, bfloat16, float16 or null")
    if not copyable:
        raise ConfigError(
            f"stage.rollout_dtype={setting} needs the HF engine (sampler=hf); {type(engine).__name__} keeps its"
            " own weights"
        )
    if sharded:
        raise ConfigError(f"stage.rollout_dtype={setting} needs unsharded weights (not an fsdp_* trainer)")
    return ROLLOUT_DTYPES[setting]


@contextlib.contextmanager
def no_autocast(device_type: str) -> Iterator[None]:
    """Autocast off: the copy runs every op in its own dtype (a training step's autocast context is
    thread-local and would otherwise apply)."""
    with torch.autocast(device_type, enabled=False):
        yield


class CastCopyEngine:
    """An engine that decodes with its own half-precision copy of the policy, synced by ``sync_weights``."""

    def __init__(self, engine_for: Callable[[Any], GenerationEngine], dtype: torch.dtype) -> None:
        self.engine_for = engine_for
        self.dtype = dtype
        self.copy: torch.nn.Module | None = None
        self.inner: GenerationEngine | None = None
        self.weight_syncs = 0  # for tests
        self._full_sync = True

    def mark_restored(self) -> None:
        """The policy's weights were replaced (a restored checkpoint): the next sync copies every tensor."""
        self._full_sync = True

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Make the copy hold ``model``'s current weights: build it on the model's device the first time (or
        when the model moved), else copy the trainable parameters (every parameter after ``mark_restored``).
        Runs outside inference mode, so a sync from a validation loop leaves normal tensors behind."""
        with torch.inference_mode(False), torch.no_grad():
            self._sync(model)
        self._full_sync = False
        self.weight_syncs += 1

    def _sync(self, model: torch.nn.Module) -> None:
        device = next(model.parameters()).device
        if self.copy is None or next(self.copy.parameters()).device != device:
            self.copy = cast_copy(model, self.dtype)
            self.inner = self.engine_for(self.copy)
        else:
            pairs = zip(self.copy.parameters(), model.parameters(), strict=True)
            for target, source in pairs:
                if self._full_sync or source.requires_grad:
                    target.copy_(source)
            for target, source in zip(self.copy.buffers(), model.buffers(), strict=True):
                target.copy_(source)
            clear = getattr(self.inner, "clear", None)
            if clear is not None:  # caches of the old weights
                clear()

    def _engine(self) -> GenerationEngine:
        if self.inner is None or self.copy is None:
            raise RuntimeError("CastCopyEngine: call sync_weights(model) before generating")
        return self.inner

    def _device_type(self) -> str:
        assert self.copy is not None
        return next(self.copy.parameters()).device.type

    def for_model(self, model: Any) -> GenerationEngine:
        """The wrapped engine kind over another model (``stage.async_rollout``'s background copy)."""
        return self.engine_for(model)

    def generate(
        self,
        prompts: list[list[int]],
        params: SamplingParams,
        max_new_tokens: list[int],
        messages: list[list[dict[str, str]]] | None = None,
        keys: Sequence[Hashable] | None = None,
    ) -> list[Generation]:
        engine = self._engine()
        with no_autocast(self._device_type()):
            return engine.generate(prompts, params, max_new_tokens, messages, keys=keys)

    def generate_continuous(
        self,
        requests: list[TurnRequest],
        params: SamplingParams,
        on_finish: Callable[[list[tuple[Hashable, Generation]]], list[TurnRequest]],
    ) -> None:
        engine = self._engine()
        with no_autocast(self._device_type()):
            engine.generate_continuous(requests, params, on_finish)  # type: ignore[attr-defined]

    def release(self, keys: Sequence[Hashable]) -> None:
        release = getattr(self.inner, "release", None)
        if release is not None:
            release(keys)

    def clear(self) -> None:
        clear = getattr(self.inner, "clear", None)
        if clear is not None:
            clear()
