"""The HF engine's linear layers on oneDNN's pre-packed weights, for inference on CPU.

``torch.nn.functional.linear`` on CPU hands oneDNN a plain row-major weight at every call, and oneDNN
re-lays it out for its kernels each time: at decode-sized inputs (a few rows) that work is most of the
call. ``torch.ops.mkldnn._reorder_linear_weight`` does the re-layout once and
``torch.ops.mkldnn._linear_pointwise`` multiplies with the packed weight (what torch.compile's CPU
freezing path emits). Measured on this CPU (2 cores, avx512_bf16), bf16, 1,536 x 576 weight: 16 rows
116 -> 83 us, one row 59 -> 31 us, SmolLM2's 49,152 x 576 head at 16 rows 6.3 -> 2.8 ms; 512 rows (prefill)
about equal. In bf16 the outputs are bit-identical to ``F.linear``'s (tested), so sampling does not change.

fp32 gains more: there ``F.linear`` runs MKL's sgemm on the transposed weight, which at decode sizes is
far from the memory bound (8 rows: 1,536 x 576 175 -> 84 us, 576 x 1,536 172 -> 90 us, the 49,152 x 576
head 14.6 -> 3.5 ms). The packed fp32 product sums in another order, so it is not bit-identical: it differs
by float rounding (about 1e-4 on SmolLM2's logits). Tests hold it to greedy token equality and log-prob
tolerance, the same contract as the engine's other kernels; ``sampler.engine.packed_linears=false`` gives
``F.linear``'s bits back.

``PackedLinears(model)`` finds the model's ``nn.Linear`` modules (the base layers inside peft's LoRA
wrappers included) and, inside ``active()``, routes their forward through the packed weights while no
gradient is recorded; outside it (and whenever autograd is on) the modules are untouched. Packs are made on
first use and dropped by ``forget()`` (the engine calls it whenever the weights may have changed: version
counters moved, or the rollout loop's ``clear``), so a GRPO policy that trains between rollouts is never
sampled from stale packs. A CPU without oneDNN's bf16 products (AVX2 only) packs fp32 layers only: a bf16
model's layers stay plain there. The packs hold a second copy of the weights (270 MB for SmolLM2 in bf16, 540 MB in fp32).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# bf16: F.linear runs oneDNN too and the packed product is bit-identical; fp32: F.linear runs MKL's sgemm,
# the packed product agrees to float rounding (summation order) and is 2-4x faster at decode sizes;
# float16 stays plain (no packed kernel measured here)
PACKED_DTYPES = (torch.bfloat16, torch.float32)


def packing_available() -> bool:
    """Whether this torch build has oneDNN's packed linear ops (CPU builds with mkldnn)."""
    return bool(torch.backends.mkldnn.is_available()) and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def packed_dtypes() -> tuple[torch.dtype, ...]:
    """The dtypes this CPU packs: fp32 always, bf16 only where oneDNN runs bf16 products (AVX-512 or
    AVX-NE-CONVERT; not on an AVX2-only CPU, nor under ``ONEDNN_MAX_CPU_ISA=AVX2``, where packing a bf16
    weight raises); empty without the packed ops."""
    if not packing_available():
        return ()
    bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return tuple(d for d in PACKED_DTYPES if d is not torch.bfloat16 or bf16)


def packable(model: Any) -> bool:
    """A model on CPU whose dtype this CPU packs (``packed_dtypes``)."""
    try:
        weight = next(model.parameters())
    except StopIteration:
        return False
    return weight.device.type == "cpu" and weight.dtype in packed_dtypes()


class PackedLinears:
    """The packed weights of a model's linear layers, and the switch that routes their forward to them."""

    def __init__(self, model: Any) -> None:
        dtypes = packed_dtypes()
        self.linears = [m for m in model.modules() if type(m) is nn.Linear and m.weight.dtype in dtypes]
        self.packs: dict[int, Tensor] = {}  # id(module) -> its packed weight
        self.depth = 0

    def forget(self) -> None:
        """Drop every pack (made again on the next use, from the weights as they are then)."""
        self.packs.clear()

    def _pack(self, module: nn.Linear) -> Tensor:
        pack = self.packs.get(id(module))
        if pack is None:
            with torch.no_grad():
                pack = torch.ops.mkldnn._reorder_linear_weight(module.weight.detach(), None)
            self.packs[id(module)] = pack
        return pack

    def _forward(self, module: nn.Linear) -> Any:
        def forward(x: Tensor) -> Tensor:
            if torch.is_grad_enabled() or x.dtype != module.weight.dtype or x.device.type != "cpu":
                return F.linear(x, module.weight, module.bias)
            return torch.ops.mkldnn._linear_pointwise(x, self._pack(module), module.bias, "none", [], "")

        return forward

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Within: the linear layers multiply with packed weights (re-entrant)."""
        if self.depth:
            self.depth += 1
            try:
                yield
            finally:
                self.depth -= 1
            return
        for module in self.linears:
            module.forward = self._forward(module)  # type: ignore[method-assign]
        self.depth = 1
        try:
            yield
        finally:
            self.depth = 0
            for module in self.linears:
                del module.forward  # back to the class's forward
