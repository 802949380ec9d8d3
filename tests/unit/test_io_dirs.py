"""``toolmaster.io.write_dir_atomic``: the one writer of whole directories (model exports, the SmolLM2 cache)."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolmaster.io import write_dir_atomic


def _writes(text: str):
    def write(tmp: Path) -> None:
        (tmp / "config.json").write_text(text)

    return write


def test_replace_swaps_in_the_new_directory_and_leaves_no_sibling(tmp_path):
    target = tmp_path / "hf"
    write_dir_atomic(target, _writes("old"))
    assert write_dir_atomic(target, _writes("new")) == target
    assert (target / "config.json").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]


def test_without_replace_an_existing_directory_wins(tmp_path):
    target = tmp_path / "cache"
    write_dir_atomic(target, _writes("first"), replace=False)
    write_dir_atomic(target, _writes("second"), replace=False)
    assert (target / "config.json").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]


def test_a_failed_write_keeps_the_previous_directory(tmp_path):
    target = tmp_path / "hf"
    write_dir_atomic(target, _writes("old"))

    def broken(tmp: Path) -> None:
        (tmp / "config.json").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_dir_atomic(target, broken)
    assert (target / "config.json").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]
