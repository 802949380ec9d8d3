"""``stage=pipeline`` runner: command lines, ordering, resume by ``.done`` markers, failures, comparison table.

Steps here are real subprocesses of a small Python script (instead of ``python -m toolmaster``) that records
its call and exits as told, so the runner's process handling is exercised in milliseconds per step. The
comparison reads ``metrics.json`` files written by the eval stage's own code from scripted rollouts on the
real toolworld. The full pipeline through ``python -m toolmaster`` is tests/integration/test_pipeline.py.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from toolmaster.errors import ConfigError, ToolMasterError
from toolmaster.evaluation import evaluate_splits
from toolmaster.protocol import get_chat_format
from toolmaster.samplers.loop import RolloutConfig
from toolmaster.samplers.scripted import ScriptedEngine
from toolmaster.settings import PipelineSettings
from toolmaster.stages.evaluate import write_eval_outputs
from toolmaster.stages.pipeline import (
    DONE,
    LOG,
    SUMMARY,
    compare,
    comparison_markdown,
    error_line,
    launcher_overrides,
    needed_steps,
    run_pipeline,
    step_command,
)
from toolmaster.worlds.toolworld import build_toolworld

FAKE_STEP = """
import sys
from pathlib import Path

args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
run_dir = Path(args.get("hydra.run.dir") or args["hydra.sweep.dir"])
run_dir.mkdir(parents=True, exist_ok=True)
with open(Path(args["calls"]), "a") as handle:
    handle.write(run_dir.name + "\\n")
(run_dir / "argv.txt").write_text("\\n".join(sys.argv[1:]))
print("working in", run_dir)
if "fail" in args:
    print("toolmaster: error: " + args["fail"], file=sys.stderr)
    print("Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.", file=sys.stderr)
    sys.exit(1)
"""


@pytest.fixture
def fake(tmp_path: Path) -> tuple[list[str], Path]:
    script = tmp_path / "fake_step.py"
    script.write_text(FAKE_STEP)
    return [sys.executable, str(script)], tmp_path / "calls.txt"


def _settings(calls: Path, **steps: list[str]) -> PipelineSettings:
    return PipelineSettings(
        steps={name: {"overrides": overrides} for name, overrides in steps.items()},
        common_overrides=[f"calls={calls}", "model={model}"],
    )


def _calls(calls: Path) -> list[str]:
    return calls.read_text().split() if calls.exists() else []


def test_step_command_fills_placeholders_and_puts_the_step_overrides_last(tmp_path):
    settings = PipelineSettings(
        steps={
            "sft": {
                "overrides": [
                    "stage=sft",
                    "model=hf",
                    "data.sft_path={run_dir}/synthesize/data.jsonl",
                    "+extra={a: 1}",
                ]
            }
        },
        common_overrides=["model={model}", "seed=3"],
    )
    command = step_command(settings, "sft", tmp_path / "run", {"model": "tiny"}, command=["tm"])
    assert command == [
        "tm",
        "model=tiny",
        "seed=3",
        "stage=sft",
        "model=hf",  # after the common model=tiny: Hydra's last override wins
        f"data.sft_path={tmp_path}/run/synthesize/data.jsonl",
        "+extra={a: 1}",  # braces that are not placeholders stay
        f"hydra.run.dir={tmp_path}/run/sft",
    ]


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"steps": {"a/b": {"overrides": []}}}, "bad step name 'a/b'"),
        ({"steps": {"a": ["stage=eval"]}}, "stage.steps.a must be a mapping (overrides: [...], kind: ...)"),
        (
            {"steps": {"a": {"overrides": [], "kind": "sweep"}}},
            "stage.steps.a.kind must be one of run, multirun",
        ),
        ({"steps": {"a": {"overrides": [], "params": {}}}}, "unknown key 'params' for a run step"),
        ({"steps": {"a": {"kind": "report"}}}, "stage.steps.a.module must name a Python module"),
        (
            {"steps": {"a": {"kind": "report", "module": "m", "args": "x"}}},
            "stage.steps.a.args must be a list",
        ),
        ({"steps": {"a": {"kind": "multirun", "overrides": [], "params": {"x": []}}}}, "non-empty lists"),
        (
            {"steps": {"a": {"overrides": [], "on_demand": "yes"}}},
            "stage.steps.a.on_demand must be true or false",
        ),
        ({"steps": {"a": {"overrides": "stage=eval"}}}, "stage.steps.a.overrides must be a list of strings"),
        ({"steps": {"a": {"overrides": ["stage"]}}}, "'stage' is not a key=value override"),
        ({"steps": {"a": {"overrides": ["hydra.run.dir=x"]}}}, "sets each step's run dir itself"),
        (
            {"steps": {"a": {"overrides": []}}, "compare": {"row": ["a", "b"]}},
            "stage.compare.row: unknown step 'b'",
        ),
    ],
)
def test_bad_pipeline_settings_fail_with_one_line(kwargs, needle):
    with pytest.raises(ValueError) as err:
        PipelineSettings(**kwargs)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_runs_steps_in_order_then_skips_finished_ones(fake, tmp_path):
    command, calls = fake
    settings = _settings(calls, first=["x=1"], second=["x=2"], third=["x=3"])
    run_dir = tmp_path / "run"
    lines: list[str] = []
    summary = run_pipeline(settings, run_dir, {"model": "tiny"}, command=command, out=lines.append)
    assert _calls(calls) == ["first", "second", "third"]
    assert [s["status"] for s in summary["steps"].values()] == ["done"] * 3
    for name, own in {"first": "x=1", "second": "x=2", "third": "x=3"}.items():
        done = json.loads((run_dir / name / DONE).read_text())
        assert done["overrides"] == [f"calls={calls}", "model=tiny", own]
        assert done["wall_s"] > 0
        assert f"working in {run_dir / name}" in (run_dir / name / LOG).read_text()
    assert lines[1].startswith("[1/3] first: done in ") and lines[-1].startswith("[3/3] third: done in ")
    assert json.loads((run_dir / SUMMARY).read_text())["steps"]["third"]["status"] == "done"

    lines.clear()
    again = run_pipeline(settings, run_dir, {"model": "tiny"}, command=command, out=lines.append)
    assert _calls(calls) == ["first", "second", "third"]  # nothing ran twice
    assert [s["status"] for s in again["steps"].values()] == ["skipped"] * 3
    assert all("skipped" in line for line in lines)
    assert again["steps"]["second"]["wall_s"] == summary["steps"]["second"]["wall_s"]


def test_a_failing_step_stops_the_pipeline_with_one_line_and_a_rerun_resumes_there(fake, tmp_path):
    command, calls = fake
    run_dir = tmp_path / "run"
    broken = _settings(calls, first=["x=1"], second=["fail=no such file data.jsonl"], third=["x=3"])
    with pytest.raises(ToolMasterError) as err:
        run_pipeline(broken, run_dir, {"model": "tiny"}, command=command, out=lambda _: None)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("pipeline step 'second' failed with exit code 1 after ")
    assert "toolmaster: error: no such file data.jsonl" in message  # the step's own error, not Hydra's hint
    assert f"(log: {run_dir / 'second' / LOG})" in message
    assert _calls(calls) == ["first", "second"]  # the third step never started
    summary = json.loads((run_dir / SUMMARY).read_text())
    assert [s["status"] for s in summary["steps"].values()] == ["done", "failed", "pending"]
    assert summary["steps"]["second"]["exit_code"] == 1
    assert not (run_dir / "second" / DONE).exists()

    fixed = _settings(calls, first=["x=1"], second=["x=2"], third=["x=3"])
    summary = run_pipeline(fixed, run_dir, {"model": "tiny"}, command=command, out=lambda _: None)
    assert _calls(calls) == ["first", "second", "second", "third"]
    assert [s["status"] for s in summary["steps"].values()] == ["skipped", "done", "done"]
    assert (run_dir / "second" / LOG).read_text().count("==== ") == 2  # both attempts kept in the log


def test_a_finished_step_whose_overrides_changed_is_an_error(fake, tmp_path):
    command, calls = fake
    run_dir = tmp_path / "run"
    run_pipeline(
        _settings(calls, first=["x=1"]), run_dir, {"model": "tiny"}, command=command, out=lambda _: None
    )
    with pytest.raises(
        ConfigError, match=r"pipeline step 'first' finished earlier with other overrides .*delete"
    ):
        run_pipeline(
            _settings(calls, first=["x=2"]), run_dir, {"model": "tiny"}, command=command, out=lambda _: None
        )
    assert _calls(calls) == ["first"]


def test_every_step_is_checked_before_the_first_one_runs(fake, tmp_path):
    command, calls = fake
    settings = _settings(calls, first=["x=1"], second=["sampler.tempurature=1"])

    def check(overrides: list[str]) -> str | None:
        bad = [o for o in overrides if o.startswith("sampler.tempurature")]
        return f"unknown config key {bad[0].split('=')[0]!r}" if bad else None

    with pytest.raises(ConfigError, match="pipeline step 'second': unknown config key 'sampler.tempurature'"):
        run_pipeline(settings, tmp_path / "run", {"model": "tiny"}, command=command, check=check, out=print)
    assert _calls(calls) == []


def test_empty_pipeline_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="stage.steps is empty"):
        run_pipeline(PipelineSettings(), tmp_path)


def test_error_line_prefers_the_tools_own_error(tmp_path):
    log = tmp_path / "step.log"
    log.write_text(
        "loading\nError in call to target 'x':\nValueError('bad')\nfull_key: model\n\nSet HYDRA_FULL_ERROR=1\n"
    )
    assert error_line(log) == "ValueError('bad')"
    log.write_text("toolmaster: error: data.jsonl: line 3 is not JSON\nTraceback noise\n")
    assert error_line(log) == "toolmaster: error: data.jsonl: line 3 is not JSON"
    assert error_line(tmp_path / "missing.log") == ""


# ------------------------------------------------------------------------------------- comparison table
def _eval_metrics(tokenizer, run_dir: Path, step: str, right: set[str]) -> dict:
    """Real eval-stage metrics: a scripted policy that answers the tasks in ``right`` correctly."""
    world = build_toolworld(seed=0, n_train=0, n_test=4)
    tasks = [t for split in ("test_seen", "test_unseen", "test_evolved") for t in world.tasks(split)]

    def respond(prompt: str) -> str:
        task = next(t for t in tasks if t.query in prompt)
        return f"<answer>{task.answer if task.id in right else 'no idea'}</answer>"

    engine = ScriptedEngine(tokenizer, respond)
    config = RolloutConfig(max_turns=2, max_new_tokens=32, max_total_tokens=2048, temperature=0.0)
    metrics, trajectories = evaluate_splits(
        engine,
        tokenizer,
        get_chat_format("chatml"),
        world,
        ["test_seen", "test_unseen", "test_evolved"],
        4,
        config,
        show_progress=False,
    )
    write_eval_outputs(run_dir / step, metrics, trajectories, step, write_trajectories=False)
    return metrics


def test_comparison_reads_eval_metrics_and_sums_wall_times(tiny_tokenizer, tmp_path):
    world = build_toolworld(seed=0, n_train=0, n_test=4)
    seen = {t.id for t in world.tasks("test_seen")}
    half_unseen = {t.id for t in world.tasks("test_unseen")[:2]}
    _eval_metrics(tiny_tokenizer, tmp_path, "eval_base", set())
    _eval_metrics(tiny_tokenizer, tmp_path, "eval_sft", seen | half_unseen)
    walls = {"eval_base": 3.0, "synthesize": 10.0, "sft": 100.0, "eval_sft": 4.0}
    spec = {"base": "eval_base", "sft": ["synthesize", "sft", "eval_sft"]}

    comparison = compare(spec, tmp_path, walls)
    assert comparison["splits"] == ["test_seen", "test_unseen", "test_evolved"]
    base, sft = comparison["rows"]
    assert base["label"] == "base" and base["steps"] == ["eval_base"] and base["wall_s"] == 3.0
    assert base["success"] == {"test_seen": 0.0, "test_unseen": 0.0, "test_evolved": 0.0}
    assert sft["success"] == {"test_seen": 1.0, "test_unseen": 0.5, "test_evolved": 0.0}
    assert sft["episodes"] == {"test_seen": 4, "test_unseen": 4, "test_evolved": 4}
    assert sft["wall_s"] == 114.0

    table = comparison_markdown(comparison).splitlines()
    assert "episodes per split: 4" in table[0]
    assert table[2] == "| arm | test_seen | test_unseen | test_evolved | wall s |"
    assert table[4] == "| base | 0.000 | 0.000 | 0.000 | 3 |"
    assert table[5] == "| sft | 1.000 | 0.500 | 0.000 | 114 |"

    with pytest.raises(ConfigError, match=r"stage.compare.grpo: .*eval_grpo/metrics.json does not exist"):
        compare({"grpo": ["eval_grpo"]}, tmp_path, walls)


# ------------------------------------------------------------------------------ step kinds and on-demand steps
STUDY = {  # the shape of +experiment=ablation
    "synthesize": {"on_demand": True, "overrides": ["stage=synthesize"]},
    "sft": {"on_demand": True, "overrides": ["stage=sft", "data.sft_path={run_dir}/synthesize/data.jsonl"]},
    "sweep": {
        "kind": "multirun",
        "overrides": ["+experiment=ablation_sweep", "model.path={run_dir}/sft/hf"],
        "params": {"tools.trial_budget": [0, 2], "reward": ["outcome", "shaped"]},
    },
    "aggregate": {
        "kind": "report",
        "module": "toolmaster.sweep",
        "args": ["{run_dir}/sweep", "--out", "{run_dir}"],
    },
}


def test_multirun_and_report_command_lines(tmp_path):
    settings = PipelineSettings(steps=STUDY, common_overrides=["model={model}"])
    run = tmp_path / "run"
    launcher = ["hydra/launcher=slurm", "hydra.launcher.partition=gpu"]
    assert step_command(settings, "sweep", run, {"model": "tiny"}, ["tm"], launcher) == [
        "tm",
        "-m",
        "model=tiny",
        "+experiment=ablation_sweep",
        f"model.path={run}/sft/hf",
        "tools.trial_budget=0,2",  # params become sweeps
        "reward=outcome,shaped",
        "hydra/launcher=slurm",  # the pipeline's own launcher overrides, last
        "hydra.launcher.partition=gpu",
        f"hydra.sweep.dir={run}/sweep",
    ]
    assert step_command(settings, "aggregate", run, {"model": "tiny"}, ["tm"], launcher) == [
        sys.executable,
        "-m",
        "toolmaster.sweep",
        f"{run}/sweep",
        "--out",
        str(run),
    ]
    # a run step ignores the launcher
    assert (
        step_command(settings, "sft", run, {"model": "tiny"}, ["tm"], launcher)[-1]
        == f"hydra.run.dir={run}/sft"
    )


def test_on_demand_steps_run_only_when_a_later_running_step_names_their_folder():
    assert needed_steps(PipelineSettings(steps=STUDY), {}) == {"synthesize", "sft", "sweep", "aggregate"}
    elsewhere = {**STUDY, "sweep": {**STUDY["sweep"], "overrides": ["model.path=/models/sft/hf"]}}
    assert needed_steps(PipelineSettings(steps=elsewhere), {}) == {
        "sweep",
        "aggregate",
    }  # sft unused: so is its input
    # {run_dir}/sft_old is another folder, not sft's
    other = {**STUDY, "sweep": {**STUDY["sweep"], "overrides": ["model.path={run_dir}/sft_old/hf"]}}
    assert needed_steps(PipelineSettings(steps=other), {}) == {"sweep", "aggregate"}
    # a step that is not on demand always runs, and what it names runs too
    plain_sft = {**elsewhere, "sft": {k: v for k, v in STUDY["sft"].items() if k != "on_demand"}}
    assert needed_steps(PipelineSettings(steps=plain_sft), {}) == {"synthesize", "sft", "sweep", "aggregate"}


def test_launcher_overrides_keep_only_the_launcher():
    hydra_overrides = [
        "hydra.run.dir=/tmp/run",
        "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu",
        "+hydra.launcher.additional_parameters.x=1",
        "hydra.job.chdir=false",
    ]
    assert launcher_overrides(hydra_overrides) == [
        "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu",
        "+hydra.launcher.additional_parameters.x=1",
    ]


def test_study_skips_unneeded_steps_runs_the_sweep_and_reports_every_time(fake, tmp_path, capfd, monkeypatch):
    command, calls = fake
    (tmp_path / "report_step.py").write_text(
        "import sys\nprint('report of', sys.argv[1])\n"
    )  # a report module
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    steps = {
        **STUDY,
        "sweep": {**STUDY["sweep"], "overrides": [f"calls={calls}", "model.path=/models/sft/hf"]},
        "aggregate": {"kind": "report", "module": "report_step", "args": ["{run_dir}/sweep"]},
    }
    settings = PipelineSettings(steps=steps)
    run_dir = tmp_path / "run"
    lines: list[str] = []
    summary = run_pipeline(
        settings, run_dir, {}, command=command, out=lines.append, launcher=["hydra/launcher=x"]
    )
    assert _calls(calls) == ["sweep"]
    assert [s["status"] for s in summary["steps"].values()] == ["not needed", "not needed", "done", "done"]
    assert lines[0] == "[1/4] synthesize: not needed (no later step reads {run_dir}/synthesize), skipped"
    argv = (run_dir / "sweep" / "argv.txt").read_text().splitlines()
    assert argv[0] == "-m" and "tools.trial_budget=0,2" in argv and argv[-2] == "hydra/launcher=x"
    assert (run_dir / "sweep" / DONE).exists() and not (run_dir / "aggregate" / DONE).exists()
    assert f"report of {run_dir}/sweep" in capfd.readouterr().out  # a report step streams to the console

    lines.clear()
    again = run_pipeline(settings, run_dir, {}, command=command, out=lines.append)
    assert _calls(calls) == ["sweep"]  # the finished sweep is not repeated ...
    assert [s["status"] for s in again["steps"].values()] == ["not needed", "not needed", "skipped", "done"]
    assert f"report of {run_dir}/sweep" in capfd.readouterr().out  # ... the report runs again


def test_dry_run_prints_command_lines_and_runs_nothing(fake, tmp_path):
    command, calls = fake
    settings = PipelineSettings(steps=STUDY, common_overrides=[f"calls={calls}"], dry_run=True)
    lines: list[str] = []
    summary = run_pipeline(settings, tmp_path / "run", {}, command=command, out=lines.append)
    assert _calls(calls) == [] and not (tmp_path / "run").exists()
    assert [s["status"] for s in summary["steps"].values()] == ["dry run"] * 4
    assert lines[2].startswith("[3/4] sweep: would run: ") and "-m" in lines[2].split()
    assert summary["steps"]["sweep"]["command"][-1] == f"hydra.sweep.dir={tmp_path / 'run' / 'sweep'}"


def test_a_report_module_that_does_not_exist_fails_before_any_step(fake, tmp_path):
    command, calls = fake
    steps = {
        "first": {"overrides": [f"calls={calls}"]},
        "table": {"kind": "report", "module": "no_such_module_x"},
    }
    with pytest.raises(ConfigError, match="pipeline step 'table': no Python module 'no_such_module_x'"):
        run_pipeline(
            PipelineSettings(steps=steps), tmp_path / "run", {}, command=command, check=lambda o: None
        )
    assert _calls(calls) == []
