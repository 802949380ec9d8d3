"""``stage.resume``: auto, an explicit checkpoint path, or a fresh start."""

from __future__ import annotations

import pytest

from toolmaster.errors import ConfigError
from toolmaster.training.checkpoints import resolve_resume


def test_resume_argument(tmp_path):
    assert resolve_resume(None, tmp_path) is None and resolve_resume("auto", tmp_path) is None
    (tmp_path / "last.ckpt").write_bytes(b"x")
    assert resolve_resume("auto", tmp_path) == tmp_path / "last.ckpt"
    assert resolve_resume(str(tmp_path / "last.ckpt"), tmp_path) == tmp_path / "last.ckpt"
    with pytest.raises(ConfigError, match="stage.resume"):
        resolve_resume(str(tmp_path / "nope.ckpt"), tmp_path)
