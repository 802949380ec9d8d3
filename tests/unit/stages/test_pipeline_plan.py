"""``stage=pipeline`` runner: command lines, ordering, resume by ``.done`` markers, failures, comparison table.

Steps here are real subprocesses of a small Python script (instead of ``python -m toolmaster``) that records
its call and exits as told, so the runner's process handling is exercised in milliseconds per step. The
comparison reads ``metrics.json`` files written by the eval stage's own code from scripted rollouts on the
real toolworld. The full pipeline through ``python -m toolmaster`` is tests/integration/test_pipeline.py.
"""

from __future__ import annotations

import json
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
    run_pipeline,
    step_command,
)
from toolmaster.worlds.toolworld import build_toolworld

FAKE_STEP = """
import sys
from pathlib import Path

args = dict(a.split("=", 1) for a in sys.argv[1:])
run_dir = Path(args["hydra.run.dir"])
run_dir.mkdir(parents=True, exist_ok=True)
with open(Path(args["calls"]), "a") as handle:
    handle.write(run_dir.name + "\\n")
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
        ({"steps": {"a": ["stage=eval"]}}, "stage.steps.a must be a mapping with one key, overrides"),
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


def test_comparison_reads_eval_metrics_and_sums_wall_times(smollm2_tokenizer, tmp_path):
    world = build_toolworld(seed=0, n_train=0, n_test=4)
    seen = {t.id for t in world.tasks("test_seen")}
    half_unseen = {t.id for t in world.tasks("test_unseen")[:2]}
    _eval_metrics(smollm2_tokenizer, tmp_path, "eval_base", set())
    _eval_metrics(smollm2_tokenizer, tmp_path, "eval_sft", seen | half_unseen)
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
