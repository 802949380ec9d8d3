"""Reading a user's benchmark files (ToolHop, StableToolBench, RestBench) with one-line errors.

Paths may be relative to the directory the command was launched from (Hydra may have moved the working
directory). A missing file or folder is a ``ConfigError`` (exit 2) that names the config key and says where the
file comes from; a file that is not valid JSON is a ``DataError`` (exit 1) naming the file and the line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from toolmaster.errors import ConfigError, DataError


def resolve_path(path: str | Path) -> Path:
    """``path`` as given, or relative to the launch directory when Hydra changed the working directory."""
    given = Path(path).expanduser()
    if given.exists() or given.is_absolute():
        return given.resolve() if given.exists() else given
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.utils import get_original_cwd

        if HydraConfig.initialized():
            candidate = Path(get_original_cwd()) / given
            if candidate.exists():
                return candidate.resolve()
    except (ImportError, ValueError):
        pass
    return given


def existing_file(path: str | Path | None, key: str, what: str, hint: str) -> Path:
    """The resolved path of an existing file, else a one-line ConfigError naming ``key`` and ``hint``."""
    if path is None or not str(path).strip():
        raise ConfigError(f"{key} is not set: pass {key}=/path/to/{what} ({hint})")
    resolved = resolve_path(path)
    if not resolved.is_file():
        state = "is a directory, not a file" if resolved.is_dir() else "not found"
        raise ConfigError(f"{key}={path}: {what} {state} ({hint})")
    return resolved


def existing_dir(path: str | Path | None, key: str, what: str, hint: str) -> Path:
    """The resolved path of an existing directory, else a one-line ConfigError naming ``key`` and ``hint``."""
    if path is None or not str(path).strip():
        raise ConfigError(f"{key} is not set: pass {key}=/path/to/{what} ({hint})")
    resolved = resolve_path(path)
    if not resolved.is_dir():
        state = "is a file, not a directory" if resolved.is_file() else "not found"
        raise ConfigError(f"{key}={path}: {what} {state} ({hint})")
    return resolved


def read_json(path: Path) -> Any:
    """One JSON document; a DataError naming the file, line and column when it is not valid JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from None


def read_json_records(path: Path) -> list[Any]:
    """A JSON array of records, or JSONL (one record per line); a DataError for anything else."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from None
    if text.lstrip().startswith("["):
        return list(read_json(path))
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno}); expected a JSON array of "
                "records or one JSON record per line"
            ) from None
    if not records:
        raise DataError(f"{path}: no records; expected a JSON array of records or one JSON record per line")
    return records
