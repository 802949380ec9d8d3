"""The paper's benchmarks end to end through ``python -m toolmaster``: a tiny-model eval on each world (ToolHop from
its file, StableToolBench against a loopback virtual API server, RestBench live against a loopback REST API and
replayed offline from a recording), no key or token in anything the runs write, and the one-line errors (exit 2)
for a missing data file, server, key or recording. Real processes, tiny random model: seconds each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.benchmark_servers import RestServer, VirtualApiServer
from helpers.restbench_fixtures import TABLE, write_recording, write_restbench
from helpers.stabletoolbench_fixtures import RESPONSES, write_stabletoolbench
from helpers.toolhop_fixtures import write_toolhop

REPO = Path(__file__).resolve().parents[2]
TINY = ["stage=eval", "model=tiny", "sampler.max_turns=3", "sampler.max_new_tokens=24"]
KEY = "tbk-integration-key-9f8e7d"
TOKEN = "tmdb-integration-token-1a2b3c"


def _run(run_dir: Path, *overrides: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "toolmaster", f"hydra.run.dir={run_dir}", *overrides]
    full_env = {k: v for k, v in os.environ.items() if k not in ("TOOLBENCH_KEY", "TMDB_ACCESS_TOKEN")}
    full_env.update(env or {})
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO, env=full_env)


def _metrics(run_dir: Path, splits: dict[str, int]) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for split, episodes in splits.items():
        assert metrics[split]["episodes"] == episodes, (split, metrics[split])
        assert (run_dir / "trajectories" / f"{split}.jsonl").exists()
    return metrics


def _nothing_mentions(run_dir: Path, secret: str, result: subprocess.CompletedProcess) -> None:
    assert secret not in result.stdout + result.stderr
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert secret not in path.read_text(errors="replace"), path


def test_tiny_model_eval_on_toolhop(tmp_path: Path) -> None:
    data = write_toolhop(tmp_path / "ToolHop.json")
    result = _run(
        tmp_path / "run",
        "tools=toolhop",
        "data=toolhop",
        f"tools.world.path={data}",
        "data.eval_splits=[all]",
        *TINY,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = _metrics(tmp_path / "run", {"all": 6})
    assert {"all/2_hops", "all/3_hops"} <= set(metrics)  # one row per hop count
    assert "| all |" in result.stdout


def test_tiny_model_eval_on_stabletoolbench(tmp_path: Path) -> None:
    tools_dir, queries_dir = write_stabletoolbench(tmp_path / "stb")
    with VirtualApiServer(RESPONSES, key=KEY) as server:
        result = _run(
            tmp_path / "run",
            "tools=stabletoolbench",
            "data=stabletoolbench",
            f"tools.world.tools_dir={tools_dir}",
            f"tools.world.queries_dir={queries_dir}",
            f"tools.world.server_url={server.virtual_url}",
            "data.eval_splits=[G1_instruction,G1_tool]",
            *TINY,
            env={"TOOLBENCH_KEY": KEY},
        )
    assert result.returncode == 0, result.stderr[-2000:]
    _metrics(tmp_path / "run", {"G1_instruction": 2, "G1_tool": 1})
    _nothing_mentions(tmp_path / "run", KEY, result)


def test_tiny_model_eval_on_restbench_live_and_replayed(tmp_path: Path) -> None:
    queries, spec = write_restbench(tmp_path / "rb")
    files = [f"tools.world.queries={queries}", f"tools.world.spec={spec}"]
    with RestServer(TABLE, token=TOKEN) as server:
        result = _run(
            tmp_path / "live",
            "tools=restbench",
            "data=restbench",
            *files,
            f"tools.world.base_url={server.url}",
            *TINY,
            env={"TMDB_ACCESS_TOKEN": TOKEN},
        )
    assert result.returncode == 0, result.stderr[-2000:]
    _metrics(tmp_path / "live", {"test": 3})
    _nothing_mentions(tmp_path / "live", TOKEN, result)
    recording = write_recording(tmp_path / "rb" / "recording.jsonl")
    result = _run(
        tmp_path / "replay",
        "tools=restbench",
        "data=restbench",
        *files,
        "tools.world.mode=replay",
        f"tools.world.recording={recording}",
        *TINY,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    _metrics(tmp_path / "replay", {"test": 3})


@pytest.mark.parametrize(
    "world,needle",
    [
        ("toolhop", "tools.world.path="),
        ("stabletoolbench", "no virtual API server there"),
        ("restbench", "environment variable TMDB_ACCESS_TOKEN is not set"),
        ("restbench_replay", "tools.world.recording is not set"),
    ],
)
def test_missing_data_server_key_or_recording_is_one_line_exit_2(
    tmp_path: Path, world: str, needle: str
) -> None:
    if world == "toolhop":
        overrides = ["tools=toolhop", "data=toolhop", f"tools.world.path={tmp_path / 'ToolHop.json'}"]
    elif world == "stabletoolbench":
        tools_dir, queries_dir = write_stabletoolbench(tmp_path / "stb")
        overrides = [
            "tools=stabletoolbench",
            "data=stabletoolbench",
            f"tools.world.tools_dir={tools_dir}",
            f"tools.world.queries_dir={queries_dir}",
            "tools.world.server_url=http://127.0.0.1:9/virtual",
            "tools.world.key_env=null",
        ]
    else:
        queries, spec = write_restbench(tmp_path / "rb")
        overrides = [
            "tools=restbench",
            "data=restbench",
            f"tools.world.queries={queries}",
            f"tools.world.spec={spec}",
        ]
        if world == "restbench_replay":
            overrides.append("tools.world.mode=replay")
    result = _run(tmp_path / "run", *overrides, "model=tiny")
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr
    assert lines[-1].startswith("toolmaster: config error: ") and needle in lines[-1], lines
