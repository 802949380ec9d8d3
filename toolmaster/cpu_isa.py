"""Cap the CPU instruction set the math libraries use, to measure how this code runs on an older host.

Hosts differ: some x86 CPUs have AVX512-BF16 (bf16 matrix products in hardware), some AVX-512 without it,
some only AVX2 (e.g. AMD EPYC Zen 2/3). The three libraries behind torch's CPU kernels each read an
environment variable when they first run, and run no instruction above it:

- oneDNN (bf16 and packed linear layers, convolutions): ``ONEDNN_MAX_CPU_ISA`` (older name
  ``DNNL_MAX_CPU_ISA``);
- ATen's own vectorised kernels (element-wise ops, reductions, softmax): ``ATEN_CPU_CAPABILITY``;
- MKL (fp32 ``F.linear`` on plain weights): ``MKL_ENABLE_INSTRUCTIONS``.

oneDNN and MKL take the lower of the cap and what the CPU has; ATen takes ``ATEN_CPU_CAPABILITY`` as given, so a
level above the CPU would run instructions it lacks: :func:`check_host` refuses that. ``LEVELS`` names the caps
this project measures under; ``--cpu-isa LEVEL`` of the benchmarks re-runs the benchmark in a child process
with those variables set (they must be set before the libraries start), and :func:`describe` says in one line
what the running process is capped to. An emulated host has the
instructions of the older one but this machine's caches, memory bandwidth and clock, so it predicts the
kernels' cost, not the other host's wall clock.

A oneDNN cap below ``AVX512_CORE_BF16`` also makes :func:`bf16_capped` true, which
``toolmaster.models.loading.cpu_has_fast_bf16`` reads, so ``model.dtype=auto`` picks fp32 as it would there.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

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

# Every variable that caps one of the libraries (what describe() reports).
CAP_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")

# The x86 CPU flags (``/proc/cpuinfo``) each level needs.
_HOST_FLAGS: dict[str, tuple[str, ...]] = {
    "avx2": ("avx2", "fma"),
    "avx512_core": ("avx512f", "avx512bw", "avx512vl", "avx512dq"),
}

# oneDNN's ISA names below native bf16 dot products (AVX2_VNNI_2 converts bf16 but has no bf16 dot product).
# oneDNN ignores a name it does not know, so an unknown value caps nothing and is not in this list.
_ONEDNN_WITHOUT_BF16 = frozenset(
    {
        "SSE41",
        "AVX",
        "AVX2",
        "AVX2_VNNI",
        "AVX2_VNNI_2",
        "AVX512_CORE",
        "AVX512_CORE_VNNI",
        "AVX512_MIC",
        "AVX512_MIC_4OPS",
    }
)


def bf16_capped(environ: Mapping[str, str] | None = None) -> bool:
    """True when oneDNN's ISA cap (``ONEDNN_MAX_CPU_ISA``, else ``DNNL_MAX_CPU_ISA``) is below native bf16."""
    env = os.environ if environ is None else environ
    cap = env.get("ONEDNN_MAX_CPU_ISA") or env.get("DNNL_MAX_CPU_ISA") or ""
    return cap.strip().upper() in _ONEDNN_WITHOUT_BF16


def describe() -> str:
    """One line: the caps set in this process (or ``native``) and the kernel level ATen dispatches to."""
    import torch

    caps = [f"{name}={os.environ[name]}" for name in CAP_VARIABLES if os.environ.get(name)]
    aten = torch.backends.cpu.get_cpu_capability()
    return f"cpu isa: {' '.join(caps) if caps else 'native'} (ATen kernels: {aten})"


def is_applied(level: str, environ: Mapping[str, str] | None = None) -> bool:
    """True when every variable of ``level`` is already set to its value."""
    env = os.environ if environ is None else environ
    return all(env.get(name) == value for name, value in _level(level).items())


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags as ``/proc/cpuinfo`` lists them (or as ``cpuinfo`` does); empty where unreadable."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    return {flag for line in cpuinfo.splitlines() if line.startswith("flags") for flag in line.split()}


def check_host(level: str, cpuinfo: str | None = None) -> None:
    """Raise a ``ConfigError`` unless this CPU has every instruction of ``level`` (a cap only goes down)."""
    flags = cpu_flags(cpuinfo)
    if missing := [flag for flag in _HOST_FLAGS[_checked(level)] if flag not in flags]:
        raise ConfigError(
            f"--cpu-isa {level}: this CPU lacks {', '.join(missing)}; a cap can only go below what the CPU has"
        )


def add_argument(parser: argparse.ArgumentParser) -> None:
    """A benchmark's ``--cpu-isa`` (``native`` or a level of ``LEVELS``); :func:`rerun_if_capped` acts on it."""
    parser.add_argument(
        "--cpu-isa",
        default="native",
        choices=["native", *LEVELS],
        help="run under this instruction-set cap (toolmaster.cpu_isa): emulates an older host's kernels",
    )


def rerun_if_capped(
    parser: argparse.ArgumentParser, args: argparse.Namespace, module: str, argv: list[str] | None
) -> int | None:
    """None when the benchmark runs in this process (``--cpu-isa native``, or the caps already set); else
    it ran as ``python -m module`` under the caps (:func:`rerun_capped`) and this is its exit status. A level
    above the CPU is the parser's one-line error."""
    if args.cpu_isa == "native" or is_applied(args.cpu_isa):
        return None
    try:
        return rerun_capped(args.cpu_isa, module, sys.argv[1:] if argv is None else argv)
    except ConfigError as exc:
        parser.error(str(exc))


def rerun_capped(level: str, module: str, argv: list[str]) -> int:
    """Run ``python -m module *argv`` in a child process under ``level``'s caps; its exit status.

    The child inherits stdout and stderr, so its report prints where this process's would have; a child
    killed by signal N exits this process with 128 + N, as a shell reports it.
    """
    check_host(level)
    env = {**os.environ, **_level(level)}
    status = subprocess.call([sys.executable, "-m", module, *argv], env=env)
    return 128 - status if status < 0 else status


def _checked(level: str) -> str:
    if level not in LEVELS:
        raise ConfigError(f"unknown --cpu-isa {level!r}; known: native, {', '.join(LEVELS)}")
    return level


def _level(level: str) -> dict[str, str]:
    return LEVELS[_checked(level)]
