"""Every config option and experiment composes and binds; bad command lines fail with one clear line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from toolmaster.cli import CONF_DIR, command_line_overrides, precheck, sweep_variants
from toolmaster.config import validate
from toolmaster.errors import ConfigError
from toolmaster.settings import PipelineSettings
from toolmaster.stages.pipeline import step_overrides

GROUPS = ["stage", "model", "tools", "reward", "sampler", "data", "trainer", "logger"]
REQUIRED = {  # options with a mandatory (???) value and what to give them in tests
    ("model", "hf"): ["model.path=/tmp/some-checkpoint"],
    ("tools", "custom"): ["tools.world.path=examples/custom_tools/weather.yaml"],
    ("tools", "toolhop"): ["tools.world.path=/data/ToolHop.json"],
    ("tools", "stabletoolbench"): [
        "tools.world.tools_dir=/data/tools",
        "tools.world.queries_dir=/data/queries",
    ],
    ("tools", "restbench"): ["tools.world.queries=/data/tmdb.json", "tools.world.spec=/data/tmdb_oas.json"],
    ("experiment", "ablation_sweep"): ["model.path=/tmp/some-checkpoint"],
}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


def compose_cfg(overrides: list[str], hydra_cfg: bool = False):
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return compose(
                "train", overrides=["output_dir=/tmp/tm-test", *overrides], return_hydra_config=hydra_cfg
            )
    finally:
        GlobalHydra.instance().clear()


def test_every_group_has_options_with_a_header_comment():
    for group in [*GROUPS, "experiment", "hydra/launcher"]:
        found = options(group)
        assert found, group
        for name in found:
            first = (Path(CONF_DIR) / group / f"{name}.yaml").read_text().splitlines()[0]
            if group == "experiment":
                assert first == "# @package _global_", name
            else:
                assert first.startswith("# ") and len(first) > 10, f"{group}/{name}"


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_binds(group, option):
    cfg = compose_cfg([f"{group}={option}", *REQUIRED.get((group, option), [])])
    validate(cfg)


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes_and_binds(experiment):
    """Each experiment file starts with its hypothesis (or, for a smoke test, what it checks) and names the
    command that runs it; that command line passes the entry point's check."""
    lines = (Path(CONF_DIR) / "experiment" / f"{experiment}.yaml").read_text().splitlines()
    assert lines[0] == "# @package _global_"
    assert lines[1].startswith("# Hypothesis"), lines[1]
    runs = [re.match(r"# Run:\s*python -m toolmaster ([^(#]*)", line) for line in lines]
    commands = [m.group(1).split() for m in runs if m]
    assert commands, "no '# Run: python -m toolmaster ...' line"
    for argv in commands:
        assert f"+experiment={experiment}" in argv
        assert precheck(argv) is None, (argv, precheck(argv))
    validate(compose_cfg([f"+experiment={experiment}", *REQUIRED.get(("experiment", experiment), [])]))


PIPELINES = [
    e
    for e in options("experiment")
    if "override /stage: pipeline" in (Path(CONF_DIR) / "experiment" / f"{e}.yaml").read_text()
]


@pytest.mark.parametrize("experiment", PIPELINES)
def test_every_pipeline_step_composes_and_binds(experiment):
    """Each step's own command line passes the entry point's check, as the pipeline checks it before running."""
    cfg = compose_cfg([f"+experiment={experiment}"])
    stage = OmegaConf.to_container(cfg.stage, resolve=True)
    stage.pop("_target_")
    settings = PipelineSettings(**stage)
    assert settings.steps and (
        settings.compare or any(s.get("kind") == "report" for s in settings.steps.values())
    )
    for name in settings.steps:
        overrides = step_overrides(settings, name, {"model": "smollm2_135m", "run_dir": "/tmp/tm-run"})
        assert precheck(overrides) is None, (name, precheck(overrides))


@pytest.mark.parametrize("launcher", options("hydra/launcher") + ["submitit_local"])
def test_launchers_compose(launcher):
    cfg = compose_cfg([f"hydra/launcher={launcher}"], hydra_cfg=True)
    assert "_target_" in cfg.hydra.launcher
    if launcher == "slurm":
        assert cfg.hydra.launcher.additional_parameters.requeue is True
        assert cfg.hydra.launcher.gpus_per_node == 1


@pytest.mark.parametrize(
    "override,expected",
    [
        ("sampler.temperature=hot", "sampler.temperature"),
        ("sampler.top_p=2.0", "sampler.top_p must be in (0, 1]"),
        ("sampler.engine._target_=toolmaster.samplers.tgi.TGIEngine", "sampler.engine._target_"),
        ("+sampler.engine.max_lora=8", "unknown key sampler.engine.max_lora"),
        ("tools.trial_budget=-1", "tools.trial_budget must be >= 0"),
        ("model.dtype=int8", "bad value model.dtype='int8'; expected one of 'auto', 'bfloat16'"),
        ("trainer.max_steps=-5", "bad value trainer.max_steps=-5; expected an integer >= 1 or -1"),
        ("stage.name=train", "one of 'eval'"),
        ("trainer.precision=bogus", "one of 'auto', 64, 32, 16, "),  # Lightning's values + ours
        ("trainer.precision=auto", None),  # resolved by toolmaster.training.precision
    ],
)
def test_bad_values_raise_config_errors(override, expected):
    cfg = compose_cfg([override])
    if expected is None:
        validate(cfg)
        return
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_engine_and_lora_nodes_bind_against_their_classes():
    """``sampler.engine`` and ``model.lora`` are real ``_target_`` nodes: a typo in a key is an error naming it."""
    cfg = compose_cfg(["sampler=vllm"])
    assert cfg.sampler.engine._target_ == "toolmaster.samplers.vllm_engine.VLLMEngine"
    assert cfg.sampler.engine.seed == cfg.sampler.seed  # the engine's seed follows sampler.seed
    validate(cfg)
    for overrides, expected in [
        (["sampler=vllm", "+sampler.engine.max_lora=8"], "unknown key sampler.engine.max_lora"),
        (
            ["sampler=vllm", "sampler.engine.gpu_memory_utilization=lots"],
            "sampler.engine.gpu_memory_utilization",
        ),
        (["model/lora=enabled", "+model.lora.rank=8"], "unknown key model.lora.rank"),
    ]:
        with pytest.raises(ConfigError, match=expected.replace(".", r"\.")):
            validate(compose_cfg(overrides))
    assert compose_cfg([]).model.lora is None  # LoRA is off by default
    lora = compose_cfg(["model/lora=enabled", "model.lora.r=8"]).model.lora
    assert lora._target_ == "peft.LoraConfig" and lora.r == 8
    assert precheck(["model.lora.rank=8"]) is not None  # no lora node by default: an unknown key


def test_override_parsing_helpers():
    argv = [
        "-m",
        "--cfg",
        "job",
        "sampler.temperature=0.5,1.0",
        "+experiment=smoke",
        "hydra/launcher=submitit_local",
    ]
    overrides = command_line_overrides(argv)
    assert overrides == ["sampler.temperature=0.5,1.0", "+experiment=smoke", "hydra/launcher=submitit_local"]
    assert sweep_variants(overrides)[0][0] == "sampler.temperature=0.5"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "toolmaster", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "args,needle",
    [
        (
            ["model=gpt5"],
            "no option 'gpt5' in config group 'model'; available: hf, qwen2_5_7b, smollm2_135m, tiny",
        ),
        (["+experiment=nope"], "no option 'nope' in config group 'experiment'"),
        (
            ["sampler.tempurature=0.3"],
            "unknown config key 'sampler.tempurature'; keys under sampler: engine, temperature",
        ),
        (["sampler.top_p=7"], "sampler.top_p must be in (0, 1]"),
        (
            ["tools.world.n_trian=3"],
            "unknown config key 'tools.world.n_trian'; keys under tools.world: seed, n_train",
        ),
        (["+tools.world.n_trian=3"], "unknown key tools.world.n_trian; allowed keys: seed, n_train, n_test"),
        (["sampler.temperature=0.1,x", "-m"], "sampler.temperature"),
    ],
)
def test_cli_reports_one_line_and_exit_2(args, needle):
    result = _cli(*args, "--cfg", "job")
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_cli_prints_resolved_config():
    result = _cli("--cfg", "job", "model=tiny", "sampler.max_turns=3")
    assert result.returncode == 0, result.stderr
    assert "source: tiny" in result.stdout and "max_turns: 3" in result.stdout


def test_ablation_sweeps_trial_budget_by_reward_shape():
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = compose_cfg(["+experiment=ablation_sweep"], hydra_cfg=True)
    params = cfg.hydra.sweeper.params
    assert dict(params) == {"tools.trial_budget": "0,1,2,4", "reward": "outcome,outcome_format,shaped"}
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    (points,) = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    assert len(points) == 12
    assert {tuple(p) for p in points} == {
        (f"tools.trial_budget={b}", f"reward={r}")
        for b in (0, 1, 2, 4)
        for r in ("outcome", "outcome_format", "shaped")
    }
    for point in points:  # every sweep point composes and binds, and runs GRPO from the SFT export
        job = compose_cfg(["+experiment=ablation_sweep", "model.path=/tmp/sft/hf", *point])
        validate(job)
        assert job.stage.name == "grpo" and job.model.source == "hf" and job.model.path == "/tmp/sft/hf"
        assert job.stage.val_every_n_steps  # each run ends with an evaluation (its metrics.json)
    assert (
        compose_cfg(
            ["+experiment=ablation_sweep", "model.path=/tmp/sft/hf", "reward=outcome_format"]
        ).reward.components.format.weight
        == 0.1
    )


def test_sft_compare_steps_are_paper_small_steps():
    """A run dir of sft_compare resumes into paper_small: the shared steps must be composed identically (the
    pipeline refuses a finished step whose overrides changed)."""
    sft = compose_cfg(["+experiment=sft_compare"])
    paper = compose_cfg(["+experiment=paper_small"])
    assert sft.stage.common_overrides == paper.stage.common_overrides
    assert set(sft.stage.steps) < set(paper.stage.steps)
    for name, step in sft.stage.steps.items():
        assert step == paper.stage.steps[name], name
    for key in ("data", "sampler"):
        assert sft[key] == paper[key], key
    for row, steps in sft.stage.compare.items():
        assert paper.stage.compare[row] == steps, row


def test_grpo_group8_lever_changes_only_the_toolmaster_grpo_group_and_steps():
    """Lever 4 of issue 14 compares against paper_small's ToolMaster arm: one thing may differ, its GRPO step's
    group size and step count; the SFT start, the evals and the shared limits are paper_small's."""
    lever = compose_cfg(["+experiment=paper_small_grpo_group8"])
    paper = compose_cfg(["+experiment=paper_small"])
    assert lever.stage.common_overrides == paper.stage.common_overrides
    for key in ("data", "sampler"):
        assert lever[key] == paper[key], key
    for name in ("toolmaster_synthesize", "toolmaster_sft", "eval_toolmaster_sft", "eval_toolmaster_grpo"):
        assert lever.stage.steps[name] == paper.stage.steps[name], name
    grpo, paper_grpo = lever.stage.steps.toolmaster_grpo, paper.stage.steps.toolmaster_grpo
    changed = set(grpo.overrides) ^ set(paper_grpo.overrides)
    assert changed == {f"stage.group_size={g}" for g in (4, 8)} | {f"trainer.max_steps={n}" for n in (8, 12)}
    for row, steps in lever.stage.compare.items():
        assert paper.stage.compare[row] == steps, row


def test_trial_mix_lever_changes_only_the_oracle_mix_of_the_toolmaster_sft_arm():
    """Lever 5 of issue 14: paper_small's ToolMaster SFT arm with one thing changed, the teacher's
    ``teacher.trials=when_needed``; the SFT step, its eval and the shared limits are paper_small's."""
    lever = compose_cfg(["+experiment=paper_small_trial_mix"])
    paper = compose_cfg(["+experiment=paper_small"])
    assert lever.stage.common_overrides == paper.stage.common_overrides
    for key in ("data", "sampler"):
        assert lever[key] == paper[key], key
    assert list(lever.stage.steps) == ["toolmaster_synthesize", "toolmaster_sft", "eval_toolmaster_sft"]
    for name in ("toolmaster_sft", "eval_toolmaster_sft"):
        assert lever.stage.steps[name] == paper.stage.steps[name], name
    synthesize, paper_synthesize = (
        lever.stage.steps.toolmaster_synthesize,
        paper.stage.steps.toolmaster_synthesize,
    )
    assert set(synthesize.overrides) ^ set(paper_synthesize.overrides) == {"teacher.trials=when_needed"}
    assert dict(lever.stage.compare) == {"toolmaster_sft_trial_mix": list(paper.stage.compare.toolmaster_sft)}


def test_paper_cpu_passrate_changes_only_the_filter_and_the_step_count_of_paper_cpus_grpo():
    """Issue 30's lever after paper_cpu's GRPO: the same GRPO steps (from paper_cpu's SFT checkpoints), with the
    pass-rate filter and 32 steps; the evals and shared limits are paper_cpu's."""
    lever = compose_cfg(["+experiment=paper_cpu_passrate", "paper_cpu.sft_run=/runs/paper_cpu/seed0"])
    paper = compose_cfg(["+experiment=paper_cpu"])
    assert lever.stage.common_overrides == paper.stage.common_overrides
    for key in ("data", "sampler", "model", "tools"):
        assert lever[key] == paper[key], key
    for arm in ("toolmaster", "direct"):
        grpo, paper_grpo = lever.stage.steps[f"{arm}_grpo"], paper.stage.steps[f"{arm}_grpo"]
        changed = set(grpo.overrides) ^ set(paper_grpo.overrides)
        assert changed == {
            f"model.path=/runs/paper_cpu/seed0/{arm}_sft/hf",
            f"model.path={{run_dir}}/{arm}_sft/hf",
            "stage.pass_rate_samples=4",
            "stage.pass_rate_candidates=200",
            "trainer.max_steps=32",
            "trainer.max_steps=16",
        }, arm
        assert lever.stage.steps[f"eval_{arm}_grpo"] == paper.stage.steps[f"eval_{arm}_grpo"]
