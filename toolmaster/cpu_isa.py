"""Cap the CPU instruction set the math libraries use, to measure how this code runs on an older host.

Hosts differ: some x86 CPUs have AVX512-BF16 (bf16 matrix products in hardware), some AVX-512 without it,
some only AVX2 (e.g. AMD EPYC Zen 2/3). The three libraries behind torch's CPU kernels each read an
environment variable when they first run, and run no instruction above it:

- oneDNN (bf16 and packed linear layers, convolutions): ``ONEDNN_MAX_CPU_ISA``;
- ATen's own vectorised kernels (element-wise ops, reductions, softmax): ``ATEN_CPU_CAPABILITY``;
- MKL (fp32 ``F.linear`` on plain weights): ``MKL_ENABLE_INSTRUCTIONS``.

``LEVELS`` names the caps this project measures under; ``--cpu-isa LEVEL`` of the benchmarks re-runs the
benchmark in a child process with those variables set (they must be set before the libraries start), and
:func:`describe` says in one line what the running process is capped to. An emulated host has the
instructions of the older one but this machine's caches, memory bandwidth and clock, so it predicts the
kernels' cost, not the other host's wall clock.

``ONEDNN_MAX_CPU_ISA`` below ``AVX512_CORE_BF16`` also makes :func:`bf16_capped` true, which
``toolmaster.models.loading.cpu_has_fast_bf16`` reads, so ``model.dtype=auto`` picks fp32 as it would there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping

from toolmaster.errors import ConfigError

# Each cap: the three variables. avx512_core is AVX-512 without its bf16 extension (Intel Skylake-X to Ice
# Lake); avx2 is a CPU without AVX-512 at all.
LEVELS: dict[str, dict[str, str]] = {
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "avx512_core": {
        "ONEDNN_MAX_CPU_ISA": "AVX512_CORE",
        "ATEN_CPU_CAPABILITY": "avx512",
        "MKL_ENABLE_INSTRUCTIONS": "AVX512",
    },
}

# oneDNN's ISA names that still include native bf16 dot products (AVX512_CORE_BF16 and everything above it).
_ONEDNN_WITH_BF16 = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX10", "ALL", "DEFAULT")


def bf16_capped(environ: Mapping[str, str] | None = None) -> bool:
    """True when ``ONEDNN_MAX_CPU_ISA`` keeps oneDNN below native bf16 (so bf16 products are emulated)."""
    cap = (os.environ if environ is None else environ).get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    return bool(cap) and not cap.startswith(_ONEDNN_WITH_BF16)


def describe() -> str:
    """One line: the caps set in this process (or ``native``) and the kernel level ATen dispatches to."""
    import torch

    caps = [f"{name}={os.environ[name]}" for name in LEVELS["avx2"] if os.environ.get(name)]
    aten = torch.backends.cpu.get_cpu_capability()
    return f"cpu isa: {' '.join(caps) if caps else 'native'} (ATen kernels: {aten})"


def is_applied(level: str, environ: Mapping[str, str] | None = None) -> bool:
    """True when every variable of ``level`` is already set to its value."""
    env = os.environ if environ is None else environ
    return all(env.get(name) == value for name, value in _level(level).items())


def rerun_capped(level: str, module: str, argv: list[str]) -> int:
    """Run ``python -m module *argv`` in a child process under ``level``'s caps; its exit status.

    The child inherits stdout and stderr, so its report prints where this process's would have.
    """
    env = {**os.environ, **_level(level)}
    return subprocess.call([sys.executable, "-m", module, *argv], env=env)


def _level(level: str) -> dict[str, str]:
    if level not in LEVELS:
        raise ConfigError(f"unknown --cpu-isa {level!r}; known: native, {', '.join(LEVELS)}")
    return LEVELS[level]
