"""``stage=pipeline`` end to end through ``python -m toolmaster +experiment=pipeline_smoke`` (tiny model):
eval -> synthesize -> SFT -> eval -> GRPO -> eval, each step its own process, then the comparison table.

The pipeline is SIGKILLed while its second step runs; the step must die with it (no orphan left writing into
the run dir), and running the same command again must skip the finished first step, redo the killed one and
finish with the table base / sft / sft_grpo on test_seen / test_unseen / test_evolved.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STEPS = ["eval_base", "synthesize", "sft", "eval_sft", "grpo", "eval_grpo"]


def _command(run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "toolmaster", "+experiment=pipeline_smoke", f"hydra.run.dir={run_dir}"]


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the step process")
def test_killed_pipeline_resumes_and_ends_with_the_comparison(tmp_path):
    run_dir = tmp_path / "run"
    with open(tmp_path / "first.log", "wb") as log:  # a file, not a pipe: a full pipe would stall the run
        proc = subprocess.Popen(_command(run_dir), cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        step = None
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and proc.poll() is None:
                if (run_dir / "eval_base" / ".done").exists() and (
                    run_dir / "synthesize" / "step.log"
                ).exists():
                    step = next(iter(_children(proc.pid)), None)
                    if step is not None:
                        break
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    assert step is not None, (tmp_path / "first.log").read_text()[-3000:]
    deadline = time.monotonic() + 60
    while _alive(step) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(step), "the running step outlived the killed pipeline"
    assert not (run_dir / "synthesize" / ".done").exists()
    first_done = (run_dir / "eval_base" / ".done").read_text()
    first_metrics = (run_dir / "eval_base" / "metrics.json").stat().st_mtime_ns

    result = subprocess.run(
        _command(run_dir), cwd=REPO, capture_output=True, text=True, timeout=900, env={**os.environ}
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    progress = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert progress[0].startswith("[1/6] eval_base: finished earlier") and progress[0].endswith("skipped")
    assert [line.split(":")[0] for line in progress if ": done in " in line] == [
        f"[{i}/6] {name}" for i, name in enumerate(STEPS, 1) if name != "eval_base"
    ]
    # the finished step was not run again; the killed one ran a second time into the same log
    assert (run_dir / "eval_base" / ".done").read_text() == first_done
    assert (run_dir / "eval_base" / "metrics.json").stat().st_mtime_ns == first_metrics
    assert (run_dir / "eval_base" / "step.log").read_text().count("==== ") == 1
    assert (run_dir / "synthesize" / "step.log").read_text().count("==== ") == 2
    assert (run_dir / "sft" / "hf").is_dir() and (run_dir / "grpo" / "hf").is_dir()

    summary = json.loads((run_dir / "pipeline_summary.json").read_text())
    assert {n: s["status"] for n, s in summary["steps"].items()} == {
        n: "skipped" if n == "eval_base" else "done" for n in STEPS
    }
    comparison = json.loads((run_dir / "comparison.json").read_text())
    assert comparison["splits"] == ["test_seen", "test_unseen", "test_evolved"]
    assert [row["label"] for row in comparison["rows"]] == ["base", "sft", "sft_grpo"]
    walls = {n: s["wall_s"] for n, s in summary["steps"].items()}
    sft_grpo = comparison["rows"][2]
    assert sft_grpo["wall_s"] == pytest.approx(
        sum(walls[n] for n in ("synthesize", "sft", "grpo", "eval_grpo"))
    )
    for row in comparison["rows"]:
        assert set(row["success"]) == set(comparison["splits"])
        assert all(0.0 <= v <= 1.0 for v in row["success"].values())
    table = (run_dir / "comparison.md").read_text()
    assert "| arm | test_seen | test_unseen | test_evolved | wall s |" in table
    assert [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ")][1:] == [
        "base",
        "sft",
        "sft_grpo",
    ]
    assert table in result.stdout  # the table is printed too
