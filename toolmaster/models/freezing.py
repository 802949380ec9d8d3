"""Train only the top decoder layers: ``model.train_top_layers=N`` freezes the input embeddings and every
decoder layer below the top N.

Why: autograd builds no graph below the lowest parameter that requires a gradient. With the embeddings and
the bottom layers frozen, the backward pass stops at the first trainable layer, and those lower layers keep
no activations for it. For SmolLM2-135M (30 layers, tied 49k x 576 embeddings) training the top 15 layers
took 0.41x the time of a full fp32 SFT step, with a higher loss after 5 steps (0.95 against 0.82;
``python -m toolmaster.bench.sft_step``). ``stage=sft`` and ``stage=grpo`` both honour it,
since the setting is applied when the model is loaded.

``model.train_top_layers`` takes a layer count N, a fraction in (0, 1) of the layers (rounded, at least one),
or ``auto``: every layer where training is fast (CUDA, or a CPU with native bf16, where
``trainer.precision=auto`` trains in bf16-mixed) and the top half of the layers on CPUs without native bf16,
where fp32 training is about twice as slow. ``+experiment=quickstart`` uses ``auto`` to fit its time budget
on either kind of CPU.

What stays trainable: the top N layers, the final norm and an output head that is not tied to the input
embeddings (a tied head *is* the embedding matrix, so it is frozen with it). With LoRA, only the adapters of
the top N layers train. Checkpoints then hold only the trainable tensors (as with LoRA); resuming rebuilds
the frozen ones from the same model config.

Not in the paper, which fine-tunes the whole 7B student; this is a compute saving for small runs on CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from toolmaster.errors import ConfigError


def decoder_layers(model: Any) -> torch.nn.ModuleList:
    """The stack of decoder layers: the ModuleList whose length is ``config.num_hidden_layers``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    count = getattr(getattr(base, "config", None), "num_hidden_layers", None)
    for module in base.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count:
            return module
    raise ConfigError(
        f"model.train_top_layers: cannot find the decoder layers of {type(base).__name__} "
        f"(no module list of config.num_hidden_layers={count} layers)"
    )


AUTO_FRACTION_WITHOUT_BF16 = 0.5


def top_layer_count(
    spec: int | float | str | None, num_layers: int | Callable[[], int], fast_training: bool
) -> int | None:
    """The number of top layers ``model.train_top_layers=spec`` trains (None: every layer, nothing frozen).

    ``fast_training`` says whether the device trains at full speed (CUDA or native CPU bf16): ``auto`` then
    trains every layer. ``num_layers`` may be a callable, asked only when a fraction needs the layer count (so
    ``auto`` on a fast device never looks for a model's decoder layers)."""
    if spec is None:
        return None
    if spec == "auto":
        return None if fast_training else top_layer_count(AUTO_FRACTION_WITHOUT_BF16, num_layers, True)
    if isinstance(spec, bool) or not isinstance(spec, (int, float)):
        raise ConfigError(
            f"model.train_top_layers={spec!r} must be a layer count, a fraction in (0, 1), auto or null"
        )
    if isinstance(spec, float) and not spec.is_integer():
        if not 0 < spec < 1:
            raise ConfigError(
                f"model.train_top_layers={spec} is a fraction of the layers: it must be in (0, 1)"
            )
        count = num_layers() if callable(num_layers) else num_layers
        return max(1, round(spec * count))
    return int(spec)


def freeze_below_top(model: Any, top: int) -> Any:
    """Freeze the input embeddings and all but the top ``top`` decoder layers of ``model``, in place."""
    layers = decoder_layers(model)
    if not 1 <= top <= len(layers):
        raise ConfigError(
            f"model.train_top_layers={top} must be between 1 and the model's {len(layers)} layers "
            "(null trains every layer)"
        )
    model.get_input_embeddings().requires_grad_(False)
    for layer in layers[: len(layers) - top]:
        layer.requires_grad_(False)
    return model
