"""Crash-safe file writing: whole files and directories via temp + rename, JSONL appends line by line with
fsync.

A reader skips a trailing partial line (what a killed writer can leave), so a killed run never leaves a
record that later breaks loading. A directory (a model export, the converted SmolLM2 cache) is written under a
hidden temporary sibling and renamed into place, so a crash leaves at most a stray temporary directory, never
a half-written one under the final name.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from toolmaster.errors import DataError


def write_text_atomic(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_dir_atomic(final: str | Path, write: Callable[[Path], None], replace: bool = True) -> Path:
    """Run ``write(tmp)`` on a fresh hidden sibling directory, then rename it to ``final``; return ``final``.

    ``replace=True``: an existing ``final`` is renamed aside first and removed after the swap (an export
    replaces the previous one). ``replace=False``: an existing ``final`` is kept and the new copy dropped (a
    cache that another process filled first: losing that race is fine).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the result is an ordinary directory
    old: Path | None = None
    try:
        write(tmp)
        if replace and final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            if old.exists():
                shutil.rmtree(old)
            final.rename(old)
        try:
            tmp.rename(final)
        except OSError:
            if replace or not final.exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists():
            shutil.rmtree(old, ignore_errors=True)
    return final


def write_json_atomic(path: str | Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_jsonl_atomic(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def append_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Append complete lines and fsync; a crash can only leave a partial *last* line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def repair_jsonl(path: str | Path) -> int:
    """Cut a torn final line (left by a killed writer) so appends start on a clean line; return bytes cut."""
    path = Path(path)
    if not path.exists():
        return 0
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return 0
    keep = data.rfind(b"\n") + 1
    with open(path, "r+b") as handle:
        handle.truncate(keep)
    return len(data) - keep


def read_jsonl(path: str | Path, allow_partial_tail: bool = True) -> Iterator[dict[str, Any]]:
    """Yield records; a malformed line raises DataError naming file:line, except a torn final line."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    with open(path, encoding="utf-8") as handle:
        lines = handle.readlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if allow_partial_tail and number == len(lines) and not line.endswith("\n"):
                return  # torn last line of a killed writer
            raise DataError(f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        yield record
