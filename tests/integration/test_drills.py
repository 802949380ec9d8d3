"""The bad-input drills of issue 19, run as a user runs them: ``python -m toolmaster ...`` in a subprocess.

Every error is exactly one line on stderr with exit code 2 (config errors, including those found while the
job builds its parts) or 1; Ctrl-C (SIGINT to the whole process group, as a terminal sends it) during the
work phase of eval, SFT and a pipeline is one line saying what was saved and the command that resumes, exit
130. A resumed SFT run keeps the metrics rows logged before the interrupt. All with the tiny model.
"""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers.sft_conversations import write_dataset

REPO = Path(__file__).resolve().parents[2]
TOOLMASTER = [sys.executable, "-m", "toolmaster"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": ""}


PROGRESS_BAR = re.compile(r"\d+%\|.*\| *\d+/\d+ \[")  # tqdm's, on stderr while a run works


def _lines(text: str) -> list[str]:
    """Non-empty stderr lines, progress-bar redraws left out (they are output of the work, not of its end)."""
    return [line for line in text.splitlines() if line.strip() and not PROGRESS_BAR.search(line)]


def _one_line(result: subprocess.CompletedProcess | tuple[int, str], code: int) -> str:
    returncode, stderr = result if isinstance(result, tuple) else (result.returncode, result.stderr)
    lines = _lines(stderr)
    assert returncode == code and len(lines) == 1, f"exit {returncode}, stderr:\n{stderr[-3000:]}"
    assert "Traceback" not in stderr and "Error executing job" not in stderr
    return lines[0]


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*TOOLMASTER, *args, f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "args,needle",
    [
        (
            ["stage=sft", "model=tiny", "data.sft_path=x.jsonl", "trainer.max_steps=-5"],
            "config error: bad value trainer.max_steps=-5; expected an integer >= 1 or -1",
        ),
        (
            ["model=tiny", "model.dtype=float8"],
            "config error: bad value model.dtype='float8'; expected one of 'auto', 'bfloat16', 'float32'",
        ),
        (
            ["model=tiny", "+foo=bar"],
            "config error: unknown top-level key 'foo': nothing reads it; top-level keys: data, logger, model,",
        ),
        (
            ["model=hf", "model.path=no/such/checkpoint"],
            "config error: model.path='no/such/checkpoint': no such directory (",
        ),
    ],
)
def test_config_drills_are_one_line_exit_2(tmp_path, args, needle):
    line = _one_line(_run(tmp_path, *args), 2)
    assert line.startswith("toolmaster: ") and needle in line, line
    if "model.path" in needle:
        assert "stage=sft" in line and "<run>/hf" in line and "Repo id" not in line


def test_model_directory_without_weights_or_tokenizer_names_the_missing_files(tmp_path):
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    line = _one_line(_run(tmp_path, "model=hf", f"model.path={checkpoint}"), 2)
    assert line == (
        f"toolmaster: config error: model.path='{checkpoint}' is not a model directory: no weights "
        "(model.safetensors or pytorch_model.bin), no tokenizer (tokenizer.json or tokenizer.model); "
        "stage=sft (or stage=grpo) exports one to <run dir>/hf when it finishes"
    )


def test_errors_raised_while_hydra_instantiates_are_unwrapped(tmp_path):
    """A custom world's spec error and a model that fails to load arrive inside Hydra's InstantiationException."""
    spec = tmp_path / "world.yaml"
    spec.write_text("name: library\nbogus: 1\n")
    line = _one_line(_run(tmp_path, "model=tiny", "tools=custom", f"tools.world.path={spec}"), 2)
    assert line == (
        f"toolmaster: config error: {spec}: unknown key(s) ['bogus']; accepted: name, module, tools, tasks, "
        "tasks_file"
    )
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (broken / name).write_text("{}")
    line = _one_line(_run(tmp_path, "model=hf", f"model.path={broken}", "data.eval_limit=1"), 2)
    assert line == f"toolmaster: config error: cannot load model from {broken}: KeyError: 'added_tokens'"


# ------------------------------------------------------------------------------------------------- Ctrl-C
def _interrupt_when(command: list[str], cwd: Path, ready, timeout: float = 240) -> tuple[int, str, str]:
    """Start ``command`` in its own process group, send SIGINT to the group once ``ready()`` holds (the run is
    in its work phase), and return its exit code, stdout and what it wrote to stderr after the SIGINT (the
    libraries' start-up notices before it are not the interrupt's output)."""
    out, err = cwd / "stdout.txt", cwd / "stderr.txt"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        proc = subprocess.Popen(
            command, cwd=cwd, env=_env(), stdout=stdout, stderr=stderr, start_new_session=True
        )
        try:
            deadline = time.monotonic() + timeout
            while proc.poll() is None and time.monotonic() < deadline and not ready():
                time.sleep(0.05)
            assert proc.poll() is None, "the run ended before the interrupt:\n" + err.read_text()[-3000:]
            stderr.flush()
            offset = err.stat().st_size
            os.killpg(proc.pid, signal.SIGINT)
            code = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return code, out.read_text(), err.read_bytes()[offset:].decode(errors="replace")


def test_ctrl_c_during_eval_is_one_line_exit_130(tmp_path):
    run_dir = tmp_path / "run"
    command = [*TOOLMASTER, "stage=eval", "model=tiny", f"hydra.run.dir={run_dir}"]
    code, stdout, stderr = _interrupt_when(command, tmp_path, lambda: "loaded tiny-llama" in _read(tmp_path))
    line = _one_line((code, stderr), 130)
    assert line == (
        "toolmaster: interrupted stage=eval: nothing saved (stage=eval writes its results when every episode "
        f"is done); rerun with: python -m toolmaster stage=eval model=tiny hydra.run.dir={run_dir}"
    )


def _read(tmp_path: Path) -> str:
    return (tmp_path / "stdout.txt").read_text(errors="replace") + (tmp_path / "stderr.txt").read_text(
        errors="replace"
    )


def _steps(run_dir: Path) -> list[int]:
    with open(run_dir / "logs" / "metrics.csv", newline="") as handle:
        return [int(row["step"]) for row in csv.DictReader(handle) if row.get("train/loss")]


def test_ctrl_c_during_sft_names_the_checkpoint_and_the_resume_keeps_the_metrics_history(tmp_path):
    data = write_dataset(tmp_path / "data.jsonl", 12)
    run_dir = tmp_path / "run"
    args = [
        "stage=sft",
        "model=tiny",
        f"data.sft_path={data}",
        "stage.batch_size=2",
        "stage.max_length=512",
        "stage.val_fraction=0",
        "stage.checkpoint_every_n_steps=1",
        "stage.export=false",
        "trainer.enable_progress_bar=false",
    ]
    last = run_dir / "checkpoints" / "last.ckpt"

    def two_steps_saved() -> bool:
        return last.exists() and (run_dir / "logs" / "metrics.csv").exists() and len(_steps(run_dir)) >= 2

    command = [*TOOLMASTER, *args, "trainer.max_steps=1000", f"hydra.run.dir={run_dir}"]
    code, _, stderr = _interrupt_when(command, tmp_path, two_steps_saved)
    line = _one_line((code, stderr), 130)
    assert line.startswith(
        f"toolmaster: interrupted stage=sft: saved checkpoint {last}; the run resumes from it; "
    )
    assert line.endswith(f"resume with: python -m toolmaster {' '.join(command[3:])}")

    step = int(torch.load(last, map_location="cpu", weights_only=False)["global_step"])
    before = _steps(run_dir)
    resumed = _run(tmp_path, *args, f"trainer.max_steps={step + 2}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = _steps(run_dir)
    assert after[: len(before)] == before and before[0] == 0  # the history before the resume is kept
    assert after[len(before) :] == [step, step + 1]  # and the resumed run appended its steps


def test_ctrl_c_during_a_pipeline_is_one_line_and_takes_the_step_down(tmp_path):
    run_dir = tmp_path / "run"
    step_log = run_dir / "eval_base" / "step.log"
    command = [*TOOLMASTER, "+experiment=pipeline_smoke", "model=tiny", f"hydra.run.dir={run_dir}"]

    def step_working() -> bool:
        return step_log.exists() and "loaded tiny-llama" in step_log.read_text(errors="replace")

    code, stdout, stderr = _interrupt_when(command, tmp_path, step_working)
    line = _one_line((code, stderr), 130)
    assert line == (
        "toolmaster: interrupted stage=pipeline: no step finished (each step's log is <run dir>/<step>/step.log); "
        f"rerun with: python -m toolmaster +experiment=pipeline_smoke model=tiny hydra.run.dir={run_dir}"
    )
    log = step_log.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
