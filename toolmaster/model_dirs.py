"""What a local ``model.path`` directory must hold, checked without importing torch or transformers.

``python -m toolmaster`` runs ``model_path_problem`` in its pre-check, before any model code is imported, and
``toolmaster.models.loading`` runs it again before ``from_pretrained`` (for pipeline steps, whose directories
appear only when an earlier step has run). A missing directory is named together with how to make one; a
directory without weights, config or tokenizer names the missing files. Only a ``namespace/name`` path that does
not exist locally is left to the loader as a possible hub id, so a hub-style error is never shown for a path
that can only be local.
"""

from __future__ import annotations

import re
from pathlib import Path

CONFIG = "config.json"
WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TOKENIZER = ("tokenizer.json", "tokenizer.model", "vocab.json")
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
HOW_TO_MAKE = "stage=sft (or stage=grpo) exports one to <run dir>/hf when it finishes"


def could_be_hub_id(path: str) -> bool:
    """``namespace/name`` with nothing that marks a local path (leading ``/``, ``.``, ``~``; more slashes)."""
    return re.fullmatch(r"[A-Za-z0-9][\w\-]*(?:\.[\w\-]+)*/[\w\-.]+", path) is not None


def _missing_files(directory: Path) -> list[str]:
    names = {p.name for p in directory.iterdir()}
    if ADAPTER_CONFIG in names:  # a LoRA adapter export: the base model is named inside it
        return [] if names & set(ADAPTER_WEIGHTS) else [f"adapter weights ({' or '.join(ADAPTER_WEIGHTS)})"]
    missing = []
    if CONFIG not in names:
        missing.append(CONFIG)
    if not names & set(WEIGHTS) and not any(n.endswith(".safetensors") for n in names):
        missing.append(f"weights ({' or '.join(WEIGHTS[::2])})")
    if not names & set(TOKENIZER):
        missing.append(f"tokenizer ({' or '.join(TOKENIZER[:2])})")
    return missing


def model_path_problem(path: str | None, source: str = "hf") -> str | None:
    """One line saying why ``model.path`` cannot be a model directory, or None (fine, or maybe a hub id)."""
    if path is None:
        return None
    location = Path(str(path)).expanduser()
    if not location.exists():
        if source == "hf" and could_be_hub_id(str(path)):
            return None
        return f"model.path={path!r}: no such directory ({location.absolute()}); {HOW_TO_MAKE}, or set model.path to such an exported <run>/hf directory"
    if not location.is_dir():
        return f"model.path={path!r} is a file; give the model's directory (e.g. an exported <run>/hf)"
    missing = _missing_files(location)
    if not missing:
        return None
    hint = f"; did you mean {location / 'hf'}?" if (location / "hf").is_dir() else f"; {HOW_TO_MAKE}"
    return f"model.path={path!r} is not a model directory: no {', no '.join(missing)}{hint}"
