"""Export a trained model in Hugging Face format, so any stage loads it with ``model.path=<dir>``.

``export_hf`` writes ``save_pretrained`` of the model and the tokenizer plus ``toolmaster_export.json``
(what was exported, from which run and step). With a LoRA (peft) model, ``merge=True`` merges the adapter
into the base weights and saves a plain model; ``merge=False`` saves only the adapter directory
(``adapter_config.json`` + weights), which transformers loads on top of the base model named in
``base_model_name_or_path``. Weights are saved in the dtype they were trained in.

The directory is written under a temporary name next to the target and renamed into place; an existing
export is first renamed aside and removed after the swap. A crash can therefore leave a stray hidden
temporary directory, never a half-written export under the final name.

Not in the paper (which publishes its checkpoints but not how they were written): the export format, the
LoRA merge and the metadata file are this implementation's.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

EXPORT_INFO = "toolmaster_export.json"


def is_peft_model(model: Any) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "merge_and_unload")


def replace_dir_atomically(final: str | Path, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` on a fresh sibling temporary directory, then swap it in as ``final``."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; an export is an ordinary directory
    old: Path | None = None
    try:
        write(tmp)
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            if old.exists():
                shutil.rmtree(old)
            final.rename(old)
        tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists():
            shutil.rmtree(old, ignore_errors=True)
    return final


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

    path = replace_dir_atomically(out_dir, write)
    log.info("exported %s to %s", record["format"] + (" (LoRA merged)" if merged else ""), path)
    return path


EXPORT_DIR = "hf"


def export_final(
    model: Any, tokenizer: Any, output_dir: str | Path, merge: bool, info: dict[str, Any]
) -> str:
    """The training stages' last step: the trained model in eval mode to ``<output_dir>/hf`` (rank 0 calls
    it), with a line saying how to load it; returns the export directory."""
    model.eval()
    export_dir = export_hf(
        model, tokenizer, Path(output_dir) / EXPORT_DIR, merge=merge, inplace=True, info=info
    )
    print(f"exported the model to {export_dir} (load it with model=hf model.path={export_dir})")
    return str(export_dir)
