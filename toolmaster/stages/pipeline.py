"""``stage=pipeline``: run stages one after another (synthesize -> SFT -> GRPO -> eval ...) and compare them.

Each step of ``stage.steps`` runs as its own process, so a step frees its memory when it ends, may launch its
own DDP processes (``trainer=ddp_cpu``) and cannot take the others down with it. A step's ``kind`` says which:

- ``run`` (default): ``python -m toolmaster <stage.common_overrides> <step overrides> hydra.run.dir=<run
  dir>/<step>``, one job;
- ``multirun``: ``python -m toolmaster -m <common> <step overrides> <params> <launcher> hydra.sweep.dir=<run
  dir>/<step>``, a Hydra sweep whose jobs go through the configured launcher. ``params`` (config key -> list of
  values) become sweep overrides (``tools.trial_budget=0,1,2,4``). ``<launcher>`` is every ``hydra/launcher=``
  / ``hydra.launcher.*`` override of the pipeline's own command line, so ``python -m toolmaster
  +experiment=ablation hydra/launcher=slurm hydra.launcher.partition=gpu`` runs the pipeline where it was typed
  and its sweep jobs on SLURM (the pipeline itself, a single run, has no use for a launcher);
- ``report``: ``python -m <module> <args>`` (e.g. ``toolmaster.sweep {run_dir}/sweep``), a cheap summary that
  runs every time the pipeline does (it only reads what earlier steps wrote) and streams to the console.

In overrides and args, ``{run_dir}`` is the pipeline's output directory (``data.sft_path={run_dir}/
synthesize/data.jsonl``, ``model.path={run_dir}/sft/hf``) and ``{model}`` the pipeline's own ``model``
choice, so ``python -m toolmaster +experiment=quickstart model=tiny`` runs the same pipeline from the tiny model.
A step with ``on_demand: true`` runs only when a later step that runs names its folder (``{run_dir}/<step>``):
``+experiment=ablation ablation.sft_path=<an SFT export>`` points the sweep elsewhere, so the synthesize and
SFT steps it would have read are skipped.

An override on the pipeline's own command line must reach a step (through ``{model}`` or an interpolation the
step overrides read); one that would change only the pipeline's config is refused in one line
(``unforwarded_overrides``) instead of being silently ignored.

Before the first step runs, every step's command line is composed and validated, so a typo in the last step
fails at once; ``stage.dry_run=true`` prints the command lines and runs nothing. Each step's stdout and stderr
go to ``<run dir>/<step>/step.log`` (``stage.echo=true`` also streams them to the console); the console gets
one line per step with its wall time. A run or multirun step that exits 0 writes ``<step>/.done`` (its
overrides and wall time); running the pipeline again with the same ``hydra.run.dir`` skips finished steps and
resumes at the first unfinished one (the training stages resume from their own checkpoints, synthesis from its
JSONL, a sweep skips its finished jobs: ``stage=grpo`` returns at once from a job whose ``.done`` matches its
config). A finished step whose overrides have changed since is an error, not a silent reuse. A failing step
stops the pipeline with one line naming the step, the last line of its output and its log file. Steps die with
the pipeline (Linux: parent-death signal), so a killed pipeline leaves no step running.

At the end, ``stage.compare`` (row label -> the steps behind the row, ending with an eval step) becomes a table
of success per eval split plus the row's wall time (the sum over its steps), printed and written to
``comparison.md`` and ``comparison.json``; ``pipeline_summary.json`` records every step's status and wall time.
A step's wall time is that of the run that finished it (a resumed step counts its last run only).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from toolmaster.build import build_settings
from toolmaster.cli import precheck
from toolmaster.errors import ConfigError, ToolMasterError
from toolmaster.io import write_json_atomic, write_text_atomic
from toolmaster.settings import PipelineSettings

DONE = ".done"
LOG = "step.log"
SUMMARY = "pipeline_summary.json"
TOOLMASTER = (sys.executable, "-m", "toolmaster")


def expand(override: str, placeholders: dict[str, str]) -> str:
    """Replace ``{name}`` for each known placeholder; other braces (Hydra dict values) are left alone."""
    for key, value in placeholders.items():
        override = override.replace("{" + key + "}", value)
    return override


def step_kind(settings: PipelineSettings, name: str) -> str:
    return str(settings.steps[name].get("kind", "run"))


def _sweep_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def step_overrides(settings: PipelineSettings, name: str, placeholders: dict[str, str]) -> list[str]:
    """A step's overrides as its command line gets them: the common ones first, so the step's own win; a
    multirun step's ``params`` last, as sweeps (``key=v1,v2``). A report step has none."""
    step = settings.steps[name]
    if step_kind(settings, name) == "report":
        return []
    params = [
        f"{key}={','.join(_sweep_value(v) for v in values)}" for key, values in step.get("params", {}).items()
    ]
    overrides = [*settings.common_overrides, *step["overrides"], *params]
    return [expand(o, placeholders) for o in overrides]


def step_args(settings: PipelineSettings, name: str, placeholders: dict[str, str]) -> list[str]:
    """A report step's arguments, placeholders filled."""
    return [expand(a, placeholders) for a in settings.steps[name].get("args", [])]


def step_command(
    settings: PipelineSettings,
    name: str,
    run_dir: Path,
    placeholders: dict[str, str],
    command: Sequence[str] = TOOLMASTER,
    launcher: Sequence[str] = (),
) -> list[str]:
    """The step's command line; ``launcher``: the ``hydra/launcher`` overrides a multirun step gets last."""
    filled = {**placeholders, "run_dir": str(run_dir)}
    kind = step_kind(settings, name)
    if kind == "report":
        return [sys.executable, "-m", settings.steps[name]["module"], *step_args(settings, name, filled)]
    overrides = step_overrides(settings, name, filled)
    if kind == "multirun":
        return [*command, "-m", *overrides, *launcher, f"hydra.sweep.dir={run_dir / name}"]
    return [*command, *overrides, f"hydra.run.dir={run_dir / name}"]


def _names_folder(text: str, name: str) -> bool:
    return re.search(r"\{run_dir\}/" + re.escape(name) + r"(?![A-Za-z0-9_.-])", text) is not None


def needed_steps(settings: PipelineSettings, placeholders: dict[str, str]) -> set[str]:
    """The steps that run: every step not ``on_demand``, and an ``on_demand`` one when a later step that runs
    names its folder (``{run_dir}/<step>``) in its overrides or args."""
    needed: set[str] = set()
    for name in reversed(list(settings.steps)):
        texts = [
            text
            for later in needed
            for text in [
                *step_overrides(settings, later, placeholders),
                *step_args(settings, later, placeholders),
            ]
        ]
        if not settings.steps[name].get("on_demand", False) or any(_names_folder(t, name) for t in texts):
            needed.add(name)
    return needed


def launcher_overrides(hydra_overrides: Sequence[str]) -> list[str]:
    """The ``hydra/launcher=...`` and ``hydra.launcher.*=...`` overrides of a command line, in order."""
    keep = []
    for override in hydra_overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key == "hydra/launcher" or key.startswith("hydra.launcher."):
            keep.append(override)
    return keep


_REFERENCE = re.compile(r"\$\{([^}:]+)\}")
# keys of the pipeline's command line that are about the pipeline itself, not its steps
_PIPELINE_ONLY = ("stage", "output_dir", "experiment", "hydra")


def unforwarded_overrides(task_overrides: Sequence[str], cfg: DictConfig) -> list[str]:
    """The pipeline's own command-line overrides that no step would see.

    A step's command line is ``stage.common_overrides`` plus its own overrides, so an override typed after
    ``+experiment=...`` reaches the steps only if those read it: through ``{model}``, or an interpolation
    (``data.eval_limit=${data.eval_limit}``), directly or through a key they read (``${ablation.params}``
    reading ``${ablation.trial_budgets}``). Anything else (``tools.world.variants=per_family`` on a pipeline
    that does not forward it) would change the pipeline's config and none of its steps: silently ignored.
    """
    from omegaconf import OmegaConf

    raw = OmegaConf.to_container(cfg, resolve=False)

    def subtree(key: str) -> Any:
        node: Any = raw
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    stage_text = json.dumps(raw.get("stage", {}))
    seen: set[str] = set()
    pending = set(_REFERENCE.findall(stage_text))
    while pending:
        key = pending.pop()
        if key not in seen:
            seen.add(key)
            pending |= set(_REFERENCE.findall(json.dumps(subtree(key))))
    missing = []
    for override in task_overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        root = re.split(r"[./]", key, maxsplit=1)[0]
        if root in _PIPELINE_ONLY or (key == "model" and "{model}" in stage_text):
            continue
        parts = key.split(".")
        prefixes = {".".join(parts[:n]) for n in range(1, len(parts) + 1)}
        if prefixes & seen or any(ref.startswith(key + ".") for ref in seen):
            continue
        missing.append(override)
    return missing


def _die_with_parent(parent: int) -> Callable[[], None]:
    """preexec_fn: the step gets SIGTERM when the pipeline process dies, however it dies (Linux only)."""

    def setup() -> None:
        if sys.platform.startswith("linux"):
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
            if os.getppid() != parent:  # the pipeline died before prctl took effect
                os._exit(1)

    return setup


def error_line(log: Path) -> str:
    """The line of a failed step's log that says what went wrong: toolmaster's own one-line error if there
    is one, else the last line naming an error (Hydra's stack-trace hint skipped), else the last line."""
    try:
        with open(log, "rb") as handle:
            handle.seek(max(0, log.stat().st_size - 16384))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    lines = [line for line in lines if "HYDRA_FULL_ERROR" not in line]
    own = [line for line in lines if line.startswith("toolmaster:")]
    named = [line for line in lines if "error" in line.lower()]
    return (own or named or lines or [""])[-1]


def _run_step(command: list[str], log: Path, echo: bool) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "ab") as handle:
        handle.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n".encode())
        handle.flush()
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE if echo else handle,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_die_with_parent(os.getpid()),
        )
        try:
            if echo:
                assert proc.stdout is not None
                while chunk := os.read(proc.stdout.fileno(), 65536):
                    handle.write(chunk)
                    handle.flush()
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()
            return proc.wait()
        except BaseException:  # Ctrl-C and the like: take the step down too, then stop
            proc.terminate()
            proc.wait()
            raise


def _check_steps(
    settings: PipelineSettings,
    names: Sequence[str],
    placeholders: dict[str, str],
    check: Callable[[list[str]], str | None],
    launcher: Sequence[str],
) -> None:
    for name in names:
        if step_kind(settings, name) == "report":
            module = settings.steps[name]["module"]
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                raise ConfigError(f"pipeline step {name!r}: no Python module {module!r} to run")
            continue
        overrides = step_overrides(settings, name, placeholders)
        if step_kind(settings, name) == "multirun":
            overrides = [*overrides, *launcher]
        problem = check(overrides)
        if problem is not None:
            raise ConfigError(f"pipeline step {name!r}: {problem}")


def run_pipeline(
    settings: PipelineSettings,
    run_dir: Path,
    placeholders: dict[str, str] | None = None,
    command: Sequence[str] = TOOLMASTER,
    check: Callable[[list[str]], str | None] | None = None,
    out: Callable[[str], None] = print,
    launcher: Sequence[str] = (),
) -> dict[str, Any]:
    """Run (or resume) every step, then write the comparison; return the summary record.

    ``command`` is what run and multirun steps run (``python -m toolmaster``); ``check(overrides)`` returns a
    one-line problem with a step's overrides, or None, and runs on every step that will run before the first
    one starts; ``launcher``: overrides that every multirun step gets (see ``launcher_overrides``).
    """
    if not settings.steps:
        raise ConfigError("stage.steps is empty: a pipeline needs steps (see +experiment=quickstart)")
    run_dir = Path(run_dir)
    placeholders = dict(placeholders or {})
    names = list(settings.steps)
    needed = needed_steps(settings, placeholders)
    if check is not None:
        filled = {**placeholders, "run_dir": str(run_dir)}
        _check_steps(settings, [n for n in names if n in needed], filled, check, launcher)

    steps: dict[str, dict[str, Any]] = {n: {"status": "pending", "wall_s": None} for n in names}
    summary: dict[str, Any] = {"run_dir": str(run_dir), "steps": steps}
    started = time.perf_counter()
    for i, name in enumerate(names, 1):
        step_dir = run_dir / name
        log = step_dir / LOG
        kind = step_kind(settings, name)
        argv = step_command(settings, name, run_dir, placeholders, command, launcher)
        recorded = step_overrides(
            settings, name, placeholders
        )  # {run_dir} kept: a moved run dir still resumes
        prefix = f"[{i}/{len(names)}] {name}"
        done = step_dir / DONE
        if name not in needed:
            steps[name] = {"status": "not needed", "wall_s": None}
            out(f"{prefix}: not needed (no later step reads {{run_dir}}/{name}), skipped")
            continue
        if kind != "report" and done.exists():
            record = json.loads(done.read_text())
            if record.get("overrides") != recorded:
                raise ConfigError(
                    f"pipeline step {name!r} finished earlier with other overrides ({record.get('overrides')}); "
                    f"delete {step_dir} to run it again, or use a new hydra.run.dir"
                )
            steps[name] = {"status": "skipped", "wall_s": record["wall_s"], "log": str(log)}
            out(f"{prefix}: finished earlier ({record['wall_s']:.0f} s), skipped")
            continue
        if settings.dry_run:
            steps[name] = {"status": "dry run", "wall_s": None, "command": argv}
            out(f"{prefix}: would run: {shlex.join(argv)}")
            continue
        out(f"{prefix}: running (log: {log})")
        t0 = time.perf_counter()
        code = _run_step(argv, log, settings.echo or kind == "report")
        wall = time.perf_counter() - t0
        if code != 0:
            steps[name] = {"status": "failed", "wall_s": wall, "log": str(log), "exit_code": code}
            summary["wall_s"] = time.perf_counter() - started
            write_json_atomic(run_dir / SUMMARY, summary)
            last = error_line(log)
            raise ToolMasterError(
                f"pipeline step {name!r} failed with exit code {code} after {wall:.0f} s"
                + (f": {last}" if last else "")
                + f" (log: {log})"
            )
        if kind != "report":
            write_json_atomic(done, {"overrides": recorded, "wall_s": wall, "finished": time.time()})
        steps[name] = {"status": "done", "wall_s": wall, "log": str(log)}
        write_json_atomic(run_dir / SUMMARY, {**summary, "wall_s": time.perf_counter() - started})
        out(f"{prefix}: done in {wall:.0f} s")
    summary["wall_s"] = time.perf_counter() - started
    if settings.dry_run:
        return summary
    write_json_atomic(run_dir / SUMMARY, summary)
    if settings.compare:
        comparison = compare(settings.compare, run_dir, {n: s["wall_s"] for n, s in steps.items()})
        table = comparison_markdown(comparison)
        write_json_atomic(run_dir / "comparison.json", comparison)
        write_text_atomic(run_dir / "comparison.md", table)
        summary["comparison"] = comparison
        out("\n" + table)
        out(f"wrote {run_dir / 'comparison.md'}, {run_dir / 'comparison.json'}, {run_dir / SUMMARY}")
    return summary


def compare(spec: dict[str, Any], run_dir: Path, walls: dict[str, float | None]) -> dict[str, Any]:
    """Rows (label -> steps, the last an eval step) read from each eval step's ``metrics.json``."""
    rows, splits = [], []
    for label, names in spec.items():
        names = [names] if isinstance(names, str) else list(names)
        path = Path(run_dir) / names[-1] / "metrics.json"
        if not path.exists():
            raise ConfigError(
                f"stage.compare.{label}: {path} does not exist (is {names[-1]!r} a stage=eval step?)"
            )
        metrics: dict[str, dict[str, float]] = json.loads(path.read_text())
        splits += [s for s in metrics if s not in splits]
        rows.append(
            {
                "label": label,
                "steps": names,
                "success": {s: m["success"] for s, m in metrics.items()},
                "episodes": {s: int(m["episodes"]) for s, m in metrics.items()},
                "wall_s": sum(walls.get(n) or 0.0 for n in names),
            }
        )
    return {"splits": splits, "rows": rows}


def comparison_markdown(comparison: dict[str, Any]) -> str:
    splits = comparison["splits"]
    lines = [
        "| arm | " + " | ".join(splits) + " | wall s |",
        "|---" * (len(splits) + 2) + "|",
    ]
    for row in comparison["rows"]:
        cells = [f"{row['success'][s]:.3f}" if s in row["success"] else "-" for s in splits]
        lines.append(f"| {row['label']} | " + " | ".join(cells) + f" | {row['wall_s']:.0f} |")
    episodes = sorted({n for row in comparison["rows"] for n in row["episodes"].values()})
    note = "Success rate per eval split (episodes per split: " + ", ".join(map(str, episodes)) + ")."
    return note + " Wall s: the row's steps together.\n\n" + "\n".join(lines) + "\n"


def run(cfg: DictConfig) -> float | None:
    """``stage=pipeline`` from the Hydra config; returns the mean success of the last comparison row."""
    from hydra.core.hydra_config import HydraConfig

    stage: PipelineSettings = build_settings(cfg.stage)
    placeholders = {}
    launcher: list[str] = []
    if HydraConfig.initialized():
        model = HydraConfig.get().runtime.choices.get("model")
        if model:
            placeholders["model"] = str(model)
        launcher = launcher_overrides(list(HydraConfig.get().overrides.hydra))
        ignored = unforwarded_overrides(list(HydraConfig.get().overrides.task), cfg)
        if ignored:
            raise ConfigError(
                f"{ignored[0]!r} would change the pipeline's config but none of its steps (no step override "
                "reads it): add it to the experiment's stage.common_overrides or to a step's overrides"
            )
    run_dir = Path(cfg.output_dir)

    def check(overrides: list[str]) -> str | None:
        missing = [o for o in overrides if "{model}" in o]
        if missing:
            return f"{missing[0]!r}: no model choice to fill {{model}} with"
        return precheck(overrides)

    summary = run_pipeline(stage, run_dir, placeholders, check=check, launcher=launcher)
    rows = summary.get("comparison", {}).get("rows", [])
    if not rows:
        return None
    success = rows[-1]["success"]
    return sum(success.values()) / max(len(success), 1)
