"""``python -m toolmaster +experiment=ablation`` as typed, on the tiny model with smaller sizes: synthesize ->
SFT -> the GRPO sweep (a Hydra multirun, 2 x 2 or 2 x 1 points) -> the aggregated table and plot.

Also: the study killed (its whole process group) after the first sweep job finished, then run again with the same
run dir, repeats none of the finished work and ends with the complete table; and ``hydra/launcher=slurm`` given to
the study reaches its sweep step's command line, where Hydra composes the SLURM launcher from it.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from toolmaster.cli import command_line_overrides, precheck, sweep_variants

REPO = Path(__file__).resolve().parents[2]
TINY_STUDY = [
    "+experiment=ablation",
    "model=tiny",
    "ablation.sft_steps=2",
    "ablation.grpo.steps=1",
    "ablation.grpo.tasks_per_step=1",
    "ablation.grpo.group_size=2",
    "data.eval_limit=1",
    "data.train_limit=8",
    "sampler.max_turns=2",
    "sampler.max_new_tokens=16",
    "sampler.max_total_tokens=1024",
]
SPLITS = {"test_seen", "test_unseen", "test_evolved"}
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _study(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "toolmaster", *TINY_STUDY, *extra, f"hydra.run.dir={run_dir}"]


def _progress(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if re.match(r"\[\d/\d\] ", line)]


def _check_png(path: Path) -> None:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 300


@pytest.mark.slow  # five Python processes that import torch + Lightning: about 2 minutes on 2 busy cores
def test_the_study_as_typed_ends_with_table_and_plot(tmp_path):
    pytest.importorskip("matplotlib")
    run = tmp_path / "study"
    command = _study(run, "ablation.trial_budgets=[0,1]", "ablation.rewards=[outcome,shaped]")
    result = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    progress = _progress(result.stdout)
    assert [line.split(":")[0] for line in progress if ": done in " in line] == [
        "[1/4] synthesize",
        "[2/4] sft",
        "[3/4] sweep",
        "[4/4] aggregate",
    ]

    # the SFT export was made here and every sweep job started from it
    assert (run / "sft" / "hf" / "config.json").exists()
    jobs = sorted(p for p in (run / "sweep").iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [p.name for p in jobs] == [
        "0_trial_budget=0,reward=outcome",
        "1_trial_budget=0,reward=shaped",
        "2_trial_budget=1,reward=outcome",
        "3_trial_budget=1,reward=shaped",
    ]
    for job in jobs:
        assert set(json.loads((job / "metrics.json").read_text())) == SPLITS
        assert json.loads((job / "grpo_summary.json").read_text())["grpo_steps"] == 1
        assert f"model.path={run}/sft/hf" in (job / ".hydra" / "overrides.yaml").read_text()
        assert (job / ".done").exists()

    rows = list(csv.DictReader((run / "sweep.csv").open()))
    assert [(r["tools.trial_budget"], r["reward"], r["status"]) for r in rows] == [
        ("0", "outcome", "ok"),
        ("1", "outcome", "ok"),
        ("0", "shaped", "ok"),
        ("1", "shaped", "ok"),
    ]
    assert all(r[f"success/{s}"] != "" for r in rows for s in SPLITS)
    markdown = (run / "sweep.md").read_text()
    assert "#### success, test_unseen: rows reward, columns tools.trial_budget" in markdown
    assert "| 0_trial_budget=0,reward=outcome | 0 | outcome |" in markdown  # the per-job table follows
    _check_png(run / "sweep.png")
    # the console ends with the short table (reward x trial budget) and the paths written
    assert "| reward \\ tools.trial_budget | 0 | 1 |" in result.stdout
    assert f"wrote {run}/sweep.md, {run}/sweep.csv, {run}/sweep.png" in result.stdout


@pytest.mark.slow
def test_a_study_killed_in_its_sweep_resumes_without_repeating_finished_jobs(tmp_path):
    pytest.importorskip("matplotlib")
    run = tmp_path / "study"
    command = _study(run, "ablation.trial_budgets=[0,1]", "ablation.rewards=[outcome]")
    first = run / "sweep" / "0_trial_budget=0,reward=outcome"
    with open(tmp_path / "first.log", "wb") as log:  # a file, not a pipe: a full pipe would stall the run
        proc = subprocess.Popen(
            command, cwd=REPO, env=ENV, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and proc.poll() is None and not (first / ".done").exists():
                time.sleep(0.05)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # the pipeline, its sweep step and anything they started
            proc.wait()
    assert (first / ".done").exists(), (tmp_path / "first.log").read_text()[-3000:]
    assert not (run / "sweep" / ".done").exists()  # killed inside the sweep
    kept = ["metrics.json", ".done", "grpo_summary.json", "checkpoints/last.ckpt", "trajectories/train.jsonl"]
    mtimes = {name: (first / name).stat().st_mtime_ns for name in kept}

    result = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    progress = _progress(result.stdout)
    assert progress[0].startswith("[1/4] synthesize: finished earlier") and progress[0].endswith("skipped")
    assert progress[1].startswith("[2/4] sft: finished earlier") and progress[1].endswith("skipped")
    assert any(line.startswith("[3/4] sweep: done in ") for line in progress)

    # the finished job returned at once: none of its files was written again
    assert {name: (first / name).stat().st_mtime_ns for name in kept} == mtimes
    rerun_log = (run / "sweep" / "step.log").read_text().split("==== ")[-1]
    assert f"grpo: {first} finished earlier with this config (.done), skipped" in rerun_log
    assert rerun_log.count("finished earlier with this config") == 1  # the other job did run
    rows = list(csv.DictReader((run / "sweep.csv").open()))
    assert [(r["tools.trial_budget"], r["status"]) for r in rows] == [("0", "ok"), ("1", "ok")]
    _check_png(run / "sweep.png")


def test_slurm_launcher_override_reaches_the_sweep_step(tmp_path):
    run = tmp_path / "study"
    launcher = ["hydra/launcher=slurm", "hydra.launcher.partition=gpu"]
    dry = subprocess.run(
        [
            sys.executable,
            "-m",
            "toolmaster",
            "+experiment=ablation",
            *launcher,
            "stage.dry_run=true",
            f"hydra.run.dir={run}",
        ],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert dry.returncode == 0, dry.stderr[-3000:]
    (line,) = [line for line in dry.stdout.splitlines() if line.startswith("[3/4] sweep: would run: ")]
    argv = shlex.split(line.split(": would run: ", 1)[1])
    assert argv[1:4] == ["-m", "toolmaster", "-m"]
    assert argv[-3:] == [*launcher, f"hydra.sweep.dir={run}/sweep"]
    assert not (run / "sweep").exists()  # a dry run runs nothing

    overrides = command_line_overrides(argv[3:])
    assert precheck(argv[3:]) is None  # the entry point's pre-check accepts the sweep command line
    job = sweep_variants(overrides)[0]  # one point: Hydra prints --cfg for a single run, not a sweep
    shown = subprocess.run(
        [sys.executable, "-m", "toolmaster", *job, "--cfg", "hydra"],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert "_target_: hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher" in shown.stdout
    assert "partition: gpu" in shown.stdout and "requeue: true" in shown.stdout
    assert f"dir: {run}/sweep" in shown.stdout


def test_a_finished_grpo_job_returns_at_once_and_a_changed_one_resumes(tmp_path, capsys):
    """What makes a resumed sweep skip its finished jobs: ``stage=grpo``'s ``.done`` (config hash + result)."""
    from toolmaster.cli import compose
    from toolmaster.run import run

    job = [
        "stage=grpo",
        "model=tiny",
        f"output_dir={tmp_path}",
        "stage.tasks_per_step=1",
        "stage.group_size=2",
        "stage.val_every_n_steps=50",
        "stage.export=false",
        "data.train_limit=2",
        "data.eval_splits=[test_seen]",
        "data.eval_limit=1",
        "sampler.max_turns=2",
        "sampler.max_new_tokens=8",
        "trainer.enable_progress_bar=false",
    ]
    result = run(compose([*job, "trainer.max_steps=1"]))
    assert json.loads((tmp_path / ".done").read_text())["result"] == result
    written = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    capsys.readouterr()

    assert run(compose([*job, "trainer.max_steps=1"])) == result  # the same job again: nothing runs
    assert "finished earlier with this config (.done), skipped" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == written

    run(compose([*job, "trainer.max_steps=2"]))  # another config: it resumes from its checkpoint
    summary = json.loads((tmp_path / "grpo_summary.json").read_text())
    assert summary["grpo_steps"] == 2 and summary["resumed_from"] == str(
        tmp_path / "checkpoints" / "last.ckpt"
    )
