"""The package installs non-editable and runs from another directory: its Hydra configuration ships inside it.

A fresh venv gets the project built from a copy of its sources (``pip install --no-deps --no-build-isolation``,
nothing downloaded); the dependencies are this interpreter's, reached through a ``.pth`` file. Then
``python -m toolmaster --cfg job`` runs in an empty directory and must print the resolved config.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{cmd}: {result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return result


@pytest.mark.slow
def test_non_editable_install_runs_from_another_directory(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(
        ROOT / "toolmaster", source / "toolmaster", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, dict(os.environ))
    python = venv / "bin" / "python"
    purelib = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    deps = [*site.getsitepackages(), sysconfig.get_paths()["purelib"]]
    (purelib / "_toolmaster_test_deps.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_NO_INDEX"] = "1"
    _run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(purelib),
            str(source),
        ],
        tmp_path,
        env,
    )
    shutil.rmtree(source)  # the installed copy must stand alone

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run([str(python), "-c", "import toolmaster; print(toolmaster.__file__)"], elsewhere, env)
    assert where.stdout.strip().startswith(str(purelib)), where.stdout
    result = _run([str(python), "-m", "toolmaster", "--cfg", "job"], elsewhere, env)
    for line in ("stage:", "name: eval", "model:", "sampler:", "_target_: toolmaster.samplers.hf.HFEngine"):
        assert line in result.stdout, result.stdout[-2000:]
    assert not (elsewhere / "outputs").exists()  # --cfg job prints and runs nothing
