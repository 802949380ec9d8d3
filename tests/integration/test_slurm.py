"""A real single-node Slurm cluster (``helpers.slurm_cluster``: munged + slurmctld + slurmd on loopback, started
once for this module) running the project's jobs end to end, model=tiny:

(a) a 2-point sweep through ``hydra/launcher=slurm`` (hydra-submitit-launcher, one sbatch job per point), both
    jobs finishing, then ``python -m toolmaster.sweep`` aggregating their metrics;
(b) one SFT job with 2 tasks started by ``srun`` (Lightning's SLURMEnvironment takes rank and world size from
    SLURM_PROCID / SLURM_NTASKS), ending with the same weights as the same run under Lightning's own 2-process
    launcher;
(c) preemption: a running SFT job sent SIGUSR1 (``scancel --signal=USR1 --batch``) saves ``hpc_ckpt_1.ckpt`` at
    a step boundary, requeues itself (``scontrol requeue``), starts again under the same job id, resumes from
    that checkpoint and ends with the same weights as an uninterrupted run.

Skipped only when the Slurm / MUNGE binaries are absent (``make slurm`` installs Debian's slurm-wlm and munge);
when they are present, a cluster that does not come up fails the tests.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from helpers.commands import TINY_ABLATION, tiny_sft_command
from helpers.sft_conversations import write_dataset
from helpers.slurm_cluster import SlurmCluster, missing_binaries, which
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
MISSING = missing_binaries()
pytestmark = [
    pytest.mark.slow,  # each job starts Python + torch + Lightning: a minute or two per test on 2 busy cores
    pytest.mark.skipif(
        bool(MISSING), reason=f"Slurm not installed (no {', '.join(MISSING)}; `make slurm` installs it)"
    ),
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    if os.geteuid() != 0:  # like a missing package: `make slurm` cannot install it either
        pytest.skip("the test cluster runs its daemons as root: run the Slurm tests as root (CI does)")
    root = Path(tmp_path_factory.mktemp("slurm", numbered=True))
    cluster = SlurmCluster(root)
    try:
        cluster.start(timeout=90)  # raises (the test errors, never skips) if the node is not idle in time
        yield cluster
    finally:
        cluster.stop()


def _env(cluster: SlurmCluster) -> dict[str, str]:
    return {
        **cluster.env,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",
    }


def _slurm(cluster: SlurmCluster, *args: str, timeout: float = 30) -> str:
    result = subprocess.run(
        [str(which(args[0])), *args[1:]], env=_env(cluster), capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{' '.join(args)}: {result.stderr}\n{cluster.log_tail()}"
    return result.stdout


def _job(cluster: SlurmCluster, job_id: str) -> dict[str, str]:
    text = _slurm(cluster, "scontrol", "show", "job", "-o", job_id)
    return dict(re.findall(r"(\w+)=(\S*)", text))


def _wait_job(cluster: SlurmCluster, job_id: str, timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = _job(cluster, job_id)
        if info["JobState"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
            return info
        time.sleep(1)
    _slurm(cluster, "scancel", job_id)
    raise AssertionError(f"job {job_id} not finished in {timeout:.0f} s: {_job(cluster, job_id)}")


def _sbatch(cluster: SlurmCluster, script: Path, *options: str) -> str:
    out = _slurm(cluster, "sbatch", "--parsable", f"--chdir={REPO}", *options, str(script))
    return out.strip().split(";")[0]


def _script(path: Path, command: list[str]) -> Path:
    path.write_text("#!/bin/bash\nexec " + shlex.join(command) + "\n")
    path.chmod(0o755)
    return path


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "hf" / "model.safetensors"))


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], atol=1e-5, rtol=1e-4, msg=name)


def _sft(run_dir: Path, data: Path, *overrides: str) -> list[str]:
    return tiny_sft_command(run_dir, data, *overrides, val_fraction=0)


# ------------------------------------------------------------------------------------------------- (a)
def test_sweep_through_the_slurm_launcher_then_aggregate(cluster: SlurmCluster, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    sweep_dir = tmp_path / "sweep"
    command = [
        sys.executable,
        "-m",
        "toolmaster",
        "-m",
        *TINY_ABLATION,
        "tools.trial_budget=0,2",
        "reward=outcome_format",
        "hydra/launcher=slurm",
        "hydra.launcher.gpus_per_node=0",  # the test node has 2 CPUs and no GPU or declared memory
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=null",
        "hydra.launcher.timeout_min=10",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    result = subprocess.run(command, cwd=REPO, env=_env(cluster), capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:] + "\n" + cluster.log_tail()
    assert "Submitit 'slurm' sweep output dir" in output

    logs = sorted((sweep_dir / ".submitit").glob("*/*_log.out"))
    assert len(logs) == 2  # one Slurm job per sweep point; the job ids are the folder names
    job_ids = sorted(p.parent.name for p in logs)
    for job_id in job_ids:
        # submitit returns once the job's result file exists, a moment before Slurm marks the job COMPLETED
        info = _wait_job(cluster, job_id, timeout=60)
        assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", info
        assert info["BatchHost"] == cluster.node

    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [p.name for p in jobs] == [
        "0_trial_budget=0,reward=outcome_format",
        "1_trial_budget=2,reward=outcome_format",
    ]
    for job in jobs:
        metrics = json.loads((job / "metrics.json").read_text())
        assert set(metrics) == {"test_seen", "test_unseen"}
        assert json.loads((job / "grpo_summary.json").read_text())["grpo_steps"] == 1

    aggregate = subprocess.run(
        [sys.executable, "-m", "toolmaster.sweep", str(sweep_dir)],
        cwd=REPO,
        env=_env(cluster),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert aggregate.returncode == 0, aggregate.stderr
    rows = list(csv.DictReader((sweep_dir / "sweep.csv").open()))
    assert [(r["tools.trial_budget"], r["status"]) for r in rows] == [("0", "ok"), ("2", "ok")]
    assert all(r["success/test_seen"] != "" and r["success/mean"] != "" for r in rows)


# ------------------------------------------------------------------------------------------------- (b)
def test_srun_two_task_ddp_matches_lightnings_own_launcher(cluster: SlurmCluster, tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data.jsonl", 12)
    overrides = ("trainer=ddp_cpu", "trainer.max_steps=4")
    srun_dir, local_dir = tmp_path / "srun", tmp_path / "local"
    # srun starts both processes; --label prefixes each output line with its task number
    script = _script(tmp_path / "ddp.sh", ["srun", "--label", *_sft(srun_dir, data, *overrides)])
    job_id = _sbatch(
        cluster,
        script,
        "--ntasks=2",
        "--ntasks-per-node=2",
        "--cpus-per-task=1",
        f"--output={tmp_path / 'ddp-%j.out'}",
    )
    # the reference meanwhile: the same command outside Slurm, Lightning starting the second process itself
    local_env = {k: v for k, v in _env(cluster).items() if not k.startswith("SLURM_")}
    local = subprocess.run(
        _sft(local_dir, data, *overrides),
        cwd=REPO,
        env=local_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert local.returncode == 0, (local.stdout + local.stderr)[-3000:]
    info = _wait_job(cluster, job_id, timeout=600)
    output = (tmp_path / f"ddp-{job_id}.out").read_text()
    assert info["JobState"] == "COMPLETED", output[-3000:] + "\n" + cluster.log_tail()

    # task 1 of srun is global rank 1 of a world of 2: the ranks came from Slurm, not from Lightning's launcher
    assert re.search(r"^1: Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2", output, re.M), output[
        -3000:
    ]
    assert re.search(r"^0: Initializing distributed: GLOBAL_RANK: 0, MEMBER: 1/2", output, re.M)
    assert json.loads((srun_dir / "sft_summary.json").read_text())["global_step"] == 4
    _assert_same_weights(srun_dir, local_dir)


# ------------------------------------------------------------------------------------------------- (c)
def test_preempted_job_requeues_and_resumes_to_the_same_weights(
    cluster: SlurmCluster, tmp_path: Path
) -> None:
    data = write_dataset(tmp_path / "data.jsonl", 16)
    overrides = ("trainer.max_steps=16", "stage.checkpoint_every_n_steps=4")
    run_dir, ref_dir = tmp_path / "run", tmp_path / "ref"
    options = ("--ntasks=1", "--cpus-per-task=1", "--open-mode=append")
    job_id = _sbatch(
        cluster,
        _script(tmp_path / "run.sh", _sft(run_dir, data, *overrides)),
        *options,
        f"--output={tmp_path}/run.out",
    )
    ref_id = _sbatch(
        cluster,
        _script(tmp_path / "ref.sh", _sft(ref_dir, data, *overrides)),
        *options,
        f"--output={tmp_path}/ref.out",
    )

    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not last.exists():  # written at step 4
        state = _job(cluster, job_id)["JobState"]
        assert state in ("PENDING", "RUNNING") and time.monotonic() < deadline, (
            f"{state}: {(tmp_path / 'run.out').read_text()[-3000:]}"
        )
        time.sleep(0.3)
    assert _job(cluster, job_id)["JobState"] == "RUNNING"  # step 4 of 16 saved: the run is well under way
    _slurm(cluster, "scancel", "--signal=USR1", "--batch", job_id)

    info = _wait_job(cluster, job_id, timeout=600)
    log = (tmp_path / "run.out").read_text()
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", log[-3000:]
    assert _wait_job(cluster, ref_id, timeout=300)["JobState"] == "COMPLETED"

    hpc = run_dir / "hpc_ckpt_1.ckpt"
    saved_at = int(torch.load(hpc, map_location="cpu", weights_only=False)["global_step"])
    assert 4 <= saved_at < 16
    assert f"saved {hpc} at step {saved_at} and requeued Slurm job {job_id}" in log
    assert f"resuming from {hpc}" in log  # the restarted job picked the newer hpc checkpoint over last.ckpt
    assert json.loads((run_dir / "sft_summary.json").read_text())["resumed_from"] == str(hpc)
    assert json.loads((ref_dir / "sft_summary.json").read_text())["resumed_from"] is None
    _assert_same_weights(run_dir, ref_dir)
