"""Export a trained model in Hugging Face format, so any stage loads it with ``model.path=<dir>``.

``export_hf`` writes ``save_pretrained`` of the model and the tokenizer plus ``toolmaster_export.json``
(what was exported, from which run and step). With a LoRA (peft) model, ``merge=True`` merges the adapter
into the base weights and saves a plain model; ``merge=False`` saves only the adapter directory
(``adapter_config.json`` + weights), which transformers loads on top of the base model named in
``base_model_name_or_path``. Weights are saved in the dtype they were trained in.

The directory is written under a temporary name next to the target and renamed into place; an existing
export is first renamed aside and removed after the swap (``toolmaster.io.write_dir_atomic``). A crash can therefore leave a stray hidden
temporary directory, never a half-written export under the final name.

Sharded models (``trainer=fsdp_*``): every rank first calls ``toolmaster.training.sharding.full_state_dict``,
which gathers the full weights on rank 0 in CPU memory one tensor at a time (no second copy on a GPU); rank 0
then writes them through a meta-device skeleton of the model's class (``save_pretrained`` of the real
classes: names, tied embeddings and config as for an unsharded model). A LoRA merge is computed from the
gathered tensors (``W + scaling * B @ A`` per adapted layer, in fp32, cast back to W's dtype).

Not in the paper (which publishes its checkpoints but not how they were written): the export format, the
LoRA merge and the metadata file are this implementation's.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

from toolmaster.io import write_dir_atomic

log = logging.getLogger(__name__)

EXPORT_INFO = "toolmaster_export.json"


def is_peft_model(model: Any) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "merge_and_unload")


def export_hf(
    model: Any,
    tokenizer: Any,
    out_dir: str | Path,
    merge: bool = True,
    inplace: bool = False,
    info: dict[str, Any] | None = None,
) -> Path:
    """Save ``model`` + ``tokenizer`` to ``out_dir`` (atomically); return the directory.

    ``inplace=True`` lets a LoRA merge modify ``model`` itself (no copy of the weights; use it when the
    model is not needed afterwards); by default the merge runs on a deep copy.
    """
    peft = is_peft_model(model)
    merged = peft and merge
    record = {"format": "peft-adapter" if peft and not merge else "hf", "lora_merged": merged, **(info or {})}

    def write(tmp: Path) -> None:
        target = model
        if merged:
            target = (model if inplace else copy.deepcopy(model)).merge_and_unload()
        target.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        (tmp / EXPORT_INFO).write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")

    path = write_dir_atomic(out_dir, write)
    log.info("exported %s to %s", record["format"] + (" (LoRA merged)" if merged else ""), path)
    return path


PEFT_PREFIX = "base_model.model."


def lora_scalings(model: Any) -> dict[str, tuple[str, float]]:
    """``{module name: (active adapter, scaling)}`` of every LoRA layer of a peft model."""
    found = {}
    for name, module in model.named_modules():
        scaling = getattr(module, "scaling", None)
        if isinstance(scaling, dict) and hasattr(module, "lora_A"):
            adapters = list(getattr(module, "active_adapters", None) or scaling)
            if len(adapters) != 1:
                raise ValueError(
                    f"{name}: exporting a merge needs exactly one active adapter, got {adapters}"
                )
            found[name] = (adapters[0], float(scaling[adapters[0]]))
    return found


def merge_lora_state(model: Any, state: dict[str, Any]) -> dict[str, Any]:
    """A peft model's full state dict (``model.state_dict()`` names) as the merged base model's state dict."""
    merged: dict[str, Any] = {}
    for name, (adapter, scaling) in lora_scalings(model).items():
        weight = state[f"{name}.base_layer.weight"]
        a = state[f"{name}.lora_A.{adapter}.weight"].float()
        b = state[f"{name}.lora_B.{adapter}.weight"].float()
        out = name.removeprefix(PEFT_PREFIX)
        merged[f"{out}.weight"] = (weight.float() + scaling * (b @ a)).to(weight.dtype)
        if f"{name}.base_layer.bias" in state:
            merged[f"{out}.bias"] = state[f"{name}.base_layer.bias"]
    for key, tensor in state.items():
        if "lora_" in key or ".base_layer." in key:
            continue
        merged.setdefault(key.removeprefix(PEFT_PREFIX), tensor)
    return merged


def save_state_as(model: Any, state: dict[str, Any], directory: Path) -> None:
    """``save_pretrained`` of ``model``'s class and config with the weights in ``state`` (CPU tensors), through
    a skeleton on the meta device (no memory for its own weights)."""
    import torch

    with torch.device("meta"):
        skeleton = type(model)(copy.deepcopy(model.config))
    missing, unexpected = skeleton.load_state_dict(state, strict=False, assign=True)
    skeleton.tie_weights()
    still_meta = [n for n, p in skeleton.named_parameters() if p.is_meta]
    if unexpected or still_meta:
        raise RuntimeError(
            f"export: state does not fit the model (missing {still_meta[:3]}, unexpected "
            f"{list(unexpected)[:3]})"
        )
    if getattr(model, "generation_config", None) is not None:
        skeleton.generation_config = model.generation_config
    skeleton.save_pretrained(str(directory))


def export_gathered(
    model: Any,
    state: dict[str, Any],
    tokenizer: Any,
    out_dir: str | Path,
    merge: bool = True,
    info: dict[str, Any] | None = None,
) -> Path:
    """``export_hf`` for a sharded model whose full weights ``state`` were gathered on this rank (rank 0)."""
    peft = is_peft_model(model)
    merged = peft and merge
    record = {"format": "peft-adapter" if peft and not merge else "hf", "lora_merged": merged, **(info or {})}

    def write(tmp: Path) -> None:
        if peft and not merge:
            model.save_pretrained(str(tmp), state_dict=state)  # peft keeps the adapter tensors only
        elif peft:
            save_state_as(model.get_base_model(), merge_lora_state(model, state), tmp)
        else:
            save_state_as(model, state, tmp)
        tokenizer.save_pretrained(str(tmp))
        (tmp / EXPORT_INFO).write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")

    path = write_dir_atomic(out_dir, write)
    log.info("exported gathered %s to %s", record["format"] + (" (LoRA merged)" if merged else ""), path)
    return path


EXPORT_DIR = "hf"


def export_final(
    model: Any,
    tokenizer: Any,
    output_dir: str | Path,
    merge: bool,
    info: dict[str, Any],
    gathered_state: dict[str, Any] | None = None,
) -> str:
    """The training stages' last step: the trained model in eval mode to ``<output_dir>/hf`` (rank 0 calls
    it), with a line saying how to load it; returns the export directory. ``gathered_state``: the full
    weights of a sharded model (``sharding.full_state_dict``, gathered by every rank beforehand)."""
    model.eval()
    target = Path(output_dir) / EXPORT_DIR
    if gathered_state is not None:
        export_dir = export_gathered(model, gathered_state, tokenizer, target, merge=merge, info=info)
    else:
        export_dir = export_hf(model, tokenizer, target, merge=merge, inplace=True, info=info)
    print(f"exported the model to {export_dir} (load it with model=hf model.path={export_dir})")
    return str(export_dir)
