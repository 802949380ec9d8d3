"""Instruction-set caps (``toolmaster.cpu_isa``): what they switch off, in child processes that really run
under them, and the benchmarks' ``--cpu-isa``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from toolmaster import cpu_isa
from toolmaster.bench.rollout import main as rollout_bench
from toolmaster.errors import ConfigError
from toolmaster.models import loading
from toolmaster.samplers.packed_linear import packing_available

AVX2 = cpu_isa.LEVELS["avx2"]
# the caps are x86 instruction sets; the child-process tests need an AVX2 CPU and oneDNN's packed ops


def _host_has(level: str) -> bool:
    try:
        cpu_isa.check_host(level)
    except ConfigError:
        return False
    return True


on_avx2_x86 = pytest.mark.skipif(
    not (_host_has("avx2") and packing_available()),
    reason="needs an x86 CPU with AVX2 and a torch build with oneDNN",
)


@pytest.mark.parametrize(
    ("cap", "capped"),
    [
        ("AVX2", True),
        ("avx2", True),
        ("AVX512_CORE", True),
        ("AVX512_CORE_VNNI", True),
        ("AVX512_CORE_BF16", False),
        ("AVX2_VNNI_2", True),
        ("AVX512_CORE_AMX", False),
        ("AVX10_1_512", False),
        ("ALL", False),
        ("DEFAULT", False),
        ("AVX512", False),  # not a oneDNN name: oneDNN ignores it, so nothing is capped
        ("", False),
    ],
)
def test_a_onednn_cap_below_native_bf16_counts_as_no_bf16(cap, capped):
    assert cpu_isa.bf16_capped({"ONEDNN_MAX_CPU_ISA": cap}) is capped


def test_the_older_dnnl_name_caps_too_and_the_onednn_name_wins():
    assert cpu_isa.bf16_capped({"DNNL_MAX_CPU_ISA": "AVX2"})
    assert not cpu_isa.bf16_capped({"DNNL_MAX_CPU_ISA": "AVX2", "ONEDNN_MAX_CPU_ISA": "ALL"})


def test_a_cap_above_the_cpu_is_refused_in_one_line():
    """ATen runs ``ATEN_CPU_CAPABILITY`` as given, so an AVX-512 level on an AVX2 CPU would crash the child."""
    avx2_host = "flags\t\t: fpu sse2 avx avx2 fma\n"
    cpu_isa.check_host("avx2", avx2_host)
    with pytest.raises(
        ConfigError, match=r"^--cpu-isa avx512_core: this CPU lacks avx512f, avx512bw, avx512vl, avx512dq;"
    ):
        cpu_isa.check_host("avx512_core", avx2_host)
    with pytest.raises(ConfigError, match="this CPU lacks avx2, fma"):
        cpu_isa.check_host("avx2", "flags : fp asimd\n")  # an ARM CPU


def test_auto_dtype_is_fp32_under_a_cap_without_bf16(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert not loading.cpu_has_fast_bf16()
    assert loading.resolve_dtype("auto", "cpu") is torch.float32
    assert loading.resolve_dtype("auto", "cuda") is torch.bfloat16


def test_levels_are_checked_by_name():
    assert cpu_isa.is_applied("avx2", AVX2)
    assert not cpu_isa.is_applied("avx2", {**AVX2, "ATEN_CPU_CAPABILITY": "avx512"})
    with pytest.raises(ConfigError, match="unknown --cpu-isa 'sse2'; known: native, avx2, avx512_core"):
        cpu_isa.is_applied("sse2")


CHILD = """
import torch
from toolmaster import cpu_isa
from toolmaster.models import load_model
from toolmaster.samplers.hf import HFEngine
from toolmaster.samplers.packed_linear import packed_dtypes

print(cpu_isa.describe())
print("packed dtypes:", [str(d) for d in packed_dtypes()])
for dtype in ("bfloat16", "float32"):
    lm = load_model(source="tiny", dtype=dtype, device="cpu", seed=0)
    engine = HFEngine(lm.model, lm.tokenizer)
    with engine._packed(), torch.inference_mode():
        logits = lm.model(torch.tensor([[5, 6, 7]])).logits
    packs = 0 if engine._packs is None else len(engine._packs.packs)
    print(dtype, "packs", packs, "finite", bool(torch.isfinite(logits).all()))
"""


@on_avx2_x86
def test_an_avx2_cap_runs_bf16_models_on_plain_linears_and_packs_fp32_ones():
    """Under AVX2 oneDNN refuses to pack bf16 weights (it raised inside the engine before): the engine
    leaves a bf16 model's layers plain there and still packs an fp32 model's."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD], env={**os.environ, **AVX2}, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert (
        "cpu isa: ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2" in lines[0]
    )
    assert lines[0].endswith("(ATen kernels: AVX2)")
    assert lines[1] == "packed dtypes: ['torch.float32']"
    assert lines[2] == "bfloat16 packs 0 finite True"
    fp32 = lines[3].split()
    assert fp32[:2] == ["float32", "packs"] and int(fp32[2]) > 0 and fp32[-1] == "True"


@pytest.mark.slow
@on_avx2_x86
def test_rollout_bench_reruns_itself_under_the_cap_and_says_so(capfd):
    args = ["--random-shape", "smollm2-135m", "--batch", "2", "--episodes", "2", "--repeats", "1",
            "--max-turns", "1", "--max-new-tokens", "4", "--dtype", "bfloat16"]  # fmt: skip
    rollout_bench([*args, "--cpu-isa", "avx2"])
    capped = capfd.readouterr().out
    assert "(ATen kernels: AVX2)" in capped and "ONEDNN_MAX_CPU_ISA=AVX2" in capped
    assert "plain linears" in capped and "ratio (sampler / generate)" in capped
    if not any(os.environ.get(name) for name in cpu_isa.CAP_VARIABLES):
        rollout_bench(args)
        native = capfd.readouterr().out
        assert "cpu isa: native" in native and "ratio (sampler / generate)" in native


@on_avx2_x86
def test_the_capped_child_s_failure_is_the_bench_s_exit_status_in_one_line(capfd):
    """The parent does not load the model; the capped child does, fails in one line, and its status is the
    bench's."""
    with pytest.raises(SystemExit) as exited:
        rollout_bench(["--cpu-isa", "avx2", "--model-path", "/nonexistent/checkpoint"])
    assert exited.value.code == 1
    err = capfd.readouterr().err.strip().splitlines()
    assert err[-1].startswith(
        "toolmaster.bench.rollout: error: model.path='/nonexistent/checkpoint': no such"
    )
    assert not any("Traceback" in line for line in err)


@pytest.mark.parametrize("bench", ["rollout", "grpo_vs_trl"])
def test_the_benches_refuse_a_cap_above_the_cpu_in_one_line(monkeypatch, capsys, bench):
    import importlib

    main = importlib.import_module(f"toolmaster.bench.{bench}").main
    monkeypatch.setitem(cpu_isa._HOST_FLAGS, "avx512_core", ("avx512_no_such_flag",))
    with pytest.raises(SystemExit) as exited:
        main(["--cpu-isa", "avx512_core"])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith(
        "error: --cpu-isa avx512_core: this CPU lacks avx512_no_such_flag; a cap can only go below what the CPU has"
    )
