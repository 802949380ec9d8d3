"""A real single-node Slurm cluster on loopback, for the tests (and by hand: ``python -m helpers.slurm_cluster``).

``SlurmCluster(root).start()`` writes ``slurm.conf`` and a MUNGE key into ``root``, then starts, as root,

- ``munged`` on a private socket (``root/munge/munge.socket``) with its own key, so a host's MUNGE is untouched;
- ``slurmctld`` and ``slurmd`` on two free loopback ports, for one node named after the host
  (``NodeAddr=127.0.0.1``) with ``max(2, nproc)`` CPUs (``SlurmdParameters=config_overrides``: the declared
  CPUs are trusted, so two 1-CPU jobs run at once on a 1-core machine too);

and waits until ``sinfo`` reports the node idle. No cgroups and no accounting: ``proctrack/linuxproc``,
``task/none``, ``jobacct_gather/none``, ``accounting_storage/none``. State, spool and logs live under ``root``
(``root/log/slurmctld.log``, ``slurmd.log``, ``munged.log``); clients find the cluster through
``SLURM_CONF=root/slurm.conf`` (``cluster.env``). ``stop()`` ends the three daemons it started.

The Debian packages are ``slurm-wlm`` and ``munge`` (``make slurm`` installs them); ``missing_binaries()`` names
what is absent so a caller can skip with that reason.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sinfo", "squeue", "sbatch", "srun", "scontrol", "scancel")
# slurmd and slurmctld live in /usr/sbin, which a non-login PATH may lack
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin"])


def which(name: str) -> str | None:
    return shutil.which(name, path=SEARCH_PATH)


def missing_binaries() -> list[str]:
    return [name for name in BINARIES if which(name) is None]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _node_name() -> str:
    """The host's short name when it resolves (the jobs' processes find each other by it), else localhost."""
    name = socket.gethostname().split(".")[0]
    try:
        socket.gethostbyname(name)
    except OSError:
        return "localhost"
    return name or "localhost"


class ClusterError(RuntimeError):
    """The daemons did not come up (the message carries the tail of their logs)."""


@dataclass
class SlurmCluster:
    root: Path
    cpus: int = field(default_factory=lambda: max(2, os.cpu_count() or 1))
    node: str = field(default_factory=lambda: _node_name())
    partition: str = "debug"
    _procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    # ---------------------------------------------------------------------------------------- paths
    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def munge_socket(self) -> Path:
        return self.root / "munge" / "munge.socket"

    @property
    def env(self) -> dict[str, str]:
        """The current environment plus what Slurm's clients need to reach this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf), "PATH": SEARCH_PATH}

    # ------------------------------------------------------------------------------------- config
    def write_config(self) -> None:
        for sub in ("munge", "state", "spool", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root / "munge", 0o755)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        lines = {
            "ClusterName": "toolmaster",
            "SlurmctldHost": f"{self.node}(127.0.0.1)",
            "SlurmctldPort": _free_port(),
            "SlurmdPort": _free_port(),
            "SlurmUser": "root",
            "SlurmdUser": "root",
            "AuthType": "auth/munge",
            "CredType": "cred/munge",
            # cred_expire is also how long a requeued job waits before it may start again (default 120 s)
            "AuthInfo": f"socket={self.munge_socket},cred_expire=10",
            "StateSaveLocation": self.root / "state",
            "SlurmdSpoolDir": self.root / "spool",
            "SlurmctldPidFile": self.root / "slurmctld.pid",
            "SlurmdPidFile": self.root / "slurmd.pid",
            "SlurmctldLogFile": self.log_dir / "slurmctld.log",
            "SlurmdLogFile": self.log_dir / "slurmd.log",
            "SlurmctldDebug": "info",
            "SlurmdDebug": "info",
            "ProctrackType": "proctrack/linuxproc",
            "TaskPlugin": "task/none",
            "JobAcctGatherType": "jobacct_gather/none",
            "AccountingStorageType": "accounting_storage/none",
            "JobCompType": "jobcomp/none",
            "MpiDefault": "none",
            "SwitchType": "switch/none",
            "SchedulerType": "sched/backfill",
            "SelectType": "select/cons_tres",
            "SelectTypeParameters": "CR_CPU",
            "SlurmdParameters": "config_overrides",
            "ReturnToService": 2,
            "JobRequeue": 1,
            "KillWait": 5,
            "MinJobAge": 600,  # finished jobs stay visible to `scontrol show job` (there is no accounting)
            "SlurmdTimeout": 60,
            "InactiveLimit": 0,
            "SchedulerParameters": "sched_interval=2,bf_interval=2",  # a requeued job starts within seconds
        }
        text = "".join(f"{k}={v}\n" for k, v in lines.items())
        text += f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} State=UNKNOWN\n"
        text += f"PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP\n"
        self.conf.write_text(text)

    # ------------------------------------------------------------------------------------ daemons
    def _spawn(self, name: str, command: list[str]) -> None:
        log = open(self.log_dir / f"{name}.out", "ab")  # noqa: SIM115 - owned by the daemon
        proc = subprocess.Popen(
            command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._procs[name] = proc

    def start(self, timeout: float = 60.0) -> SlurmCluster:
        self.write_config()
        munge_dir = self.root / "munge"
        self._spawn(
            "munged",
            [
                str(which("munged")),
                "--foreground",
                "--force",
                f"--socket={self.munge_socket}",
                f"--key-file={munge_dir / 'munge.key'}",
                f"--pid-file={munge_dir / 'munged.pid'}",
                f"--seed-file={munge_dir / 'munged.seed'}",
                f"--log-file={self.log_dir / 'munged.log'}",
            ],
        )
        self._wait(lambda: self.munge_socket.exists(), 20, "munged did not create its socket")
        conf = ["-f", str(self.conf)]
        self._spawn("slurmctld", [str(which("slurmctld")), "-D", "-i", *conf])
        self._spawn("slurmd", [str(which("slurmd")), "-D", "-N", self.node, *conf])
        self._wait(self.node_idle, timeout, f"node {self.node} not idle in sinfo within {timeout:.0f} s")
        return self

    def node_idle(self) -> bool:
        result = subprocess.run(
            [str(which("sinfo")), "-h", "-N", "-o", "%N %t"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=20,
        )
        return result.returncode == 0 and f"{self.node} idle" in result.stdout

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [name for name, proc in self._procs.items() if proc.poll() is not None]
            if dead:
                raise ClusterError(f"{', '.join(dead)} exited during start-up\n{self.log_tail()}")
            if ready():
                return
            time.sleep(0.5)
        raise ClusterError(f"{what}\n{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        out = []
        for path in sorted(self.log_dir.glob("*")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(out)

    def cancel_jobs(self, timeout: float = 20.0) -> None:
        """Cancels every job of this cluster and waits for them to leave the node (a job's processes belong to
        slurmstepd, not slurmd: stopping the daemons alone would leave a running job's processes behind)."""
        squeue = [str(which("squeue")), "-h", "-o", "%i"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            listed = subprocess.run(squeue, env=self.env, capture_output=True, text=True, timeout=20)
            jobs = listed.stdout.split() if listed.returncode == 0 else []
            if not jobs:
                return
            subprocess.run(
                [str(which("scancel")), "--full", *jobs], env=self.env, capture_output=True, timeout=20
            )
            time.sleep(1)

    def stop(self) -> None:
        """Cancels the jobs, then SIGTERM to the Slurm daemons this object started, then to munged (they need
        it to shut down); SIGKILL to any still alive after 15 s."""
        if all(
            name in self._procs and self._procs[name].poll() is None
            for name in ("slurmctld", "slurmd", "munged")
        ):
            self.cancel_jobs()
        for group in (("slurmd", "slurmctld"), ("munged",)):
            procs = [self._procs.pop(name) for name in group if name in self._procs]
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def main() -> None:
    """``python tests/helpers/slurm_cluster.py DIR``: start a cluster in DIR and keep it up until Ctrl-C."""
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/toolmaster-slurm").resolve()
    missing = missing_binaries()
    if missing:
        raise SystemExit(
            f"slurm_cluster: missing {', '.join(missing)} (make slurm installs slurm-wlm + munge)"
        )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # `kill` stops the daemons too
    cluster = SlurmCluster(root)
    try:
        cluster.start()
    except ClusterError as exc:
        cluster.stop()
        raise SystemExit(f"slurm_cluster: {exc}") from None
    print(f"cluster up; in another shell: export SLURM_CONF={cluster.conf}; sinfo", flush=True)
    try:
        signal.pause()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
