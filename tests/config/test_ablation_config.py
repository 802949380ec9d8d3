"""``+experiment=ablation`` (the whole study, a pipeline) and ``+experiment=ablation_sweep`` (its GRPO sweep on its
own) describe the same sweep jobs; ``+experiment=ablation_gpu`` only resizes them."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from toolmaster.cli import compose, precheck, sweep_variants
from toolmaster.config import validate
from toolmaster.settings import PipelineSettings
from toolmaster.stages.pipeline import needed_steps, step_kind, step_overrides

RUN_DIR = "/tmp/tm-ablation"


def _pipeline(*overrides: str) -> PipelineSettings:
    stage = OmegaConf.to_container(compose(["output_dir=/tmp/x", *overrides]).stage, resolve=True)
    stage.pop("_target_")
    return PipelineSettings(**stage)


def _sweep_jobs(settings: PipelineSettings, model: str = "smollm2_135m") -> list[list[str]]:
    overrides = step_overrides(settings, "sweep", {"model": model, "run_dir": RUN_DIR})
    return sweep_variants(overrides)


def test_the_study_makes_its_sft_export_then_sweeps_and_aggregates():
    settings = _pipeline("+experiment=ablation")
    assert list(settings.steps) == ["synthesize", "sft", "sweep", "aggregate"]
    assert [step_kind(settings, n) for n in settings.steps] == ["run", "run", "multirun", "report"]
    assert needed_steps(settings, {}) == set(settings.steps)
    overrides = step_overrides(settings, "sweep", {"model": "smollm2_135m", "run_dir": RUN_DIR})
    assert f"model.path={RUN_DIR}/sft/hf" in overrides
    assert "tools.trial_budget=0,1,2,4" in overrides and "reward=outcome,outcome_format,shaped" in overrides
    assert (
        len(_sweep_jobs(settings)) == 1 + 3 + 2
    )  # every value of each sweep is checked (cli.sweep_variants)
    for name in settings.steps:
        assert precheck(step_overrides(settings, name, {"model": "smollm2_135m", "run_dir": RUN_DIR})) is None


def test_a_given_sft_export_skips_synthesis_and_sft():
    settings = _pipeline("+experiment=ablation", "ablation.sft_path=/models/sft/hf")
    assert needed_steps(settings, {}) == {"sweep", "aggregate"}
    assert "model.path=/models/sft/hf" in step_overrides(settings, "sweep", {"model": "tiny"})


@pytest.mark.parametrize("budget,reward", [(0, "outcome"), (4, "shaped")])
def test_a_sweep_job_of_the_study_equals_the_sweep_only_form(budget, reward):
    """The pipeline passes its shared sizes and GRPO knobs explicitly; with the defaults they must give exactly
    the job that ``-m +experiment=ablation_sweep model.path=...`` runs."""
    settings = _pipeline("+experiment=ablation")
    overrides = step_overrides(settings, "sweep", {"model": "smollm2_135m", "run_dir": RUN_DIR})
    point = [f"tools.trial_budget={budget}", f"reward={reward}"]
    fixed = [o for o in overrides if not o.startswith(("tools.trial_budget=", "reward="))] + point
    from_study = compose(["output_dir=/tmp/x", *fixed])
    alone = compose(
        ["output_dir=/tmp/x", "+experiment=ablation_sweep", f"model.path={RUN_DIR}/sft/hf", *point]
    )
    validate(from_study)
    assert OmegaConf.to_container(from_study, resolve=True) == OmegaConf.to_container(alone, resolve=True)
    assert from_study.stage.name == "grpo" and from_study.tools.trial_budget == budget


def test_the_sweep_only_form_sweeps_the_same_points():
    cfg = compose(["output_dir=/tmp/x", "+experiment=ablation"])
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.types import RunMode

    from toolmaster.cli import CONF_DIR

    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(CONF_DIR))
    alone = loader.load_configuration(
        "train", ["+experiment=ablation_sweep", "model.path=/x"], run_mode=RunMode.MULTIRUN, from_shell=False
    )
    params = alone.hydra.sweeper.params
    assert params["tools.trial_budget"] == ",".join(str(b) for b in cfg.ablation.trial_budgets)
    assert params["reward"] == ",".join(cfg.ablation.rewards)


def test_the_gpu_study_resizes_the_same_steps():
    cpu, gpu = _pipeline("+experiment=ablation"), _pipeline("+experiment=ablation_gpu")
    assert list(gpu.steps) == list(cpu.steps)
    (job, *_) = _sweep_jobs(gpu)
    cfg = compose(["output_dir=/tmp/x", *job])
    validate(cfg)
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.devices == 1 and cfg.trainer.strategy == "auto"
    assert cfg.trainer.max_steps == 100 and cfg.stage.tasks_per_step == 4 and cfg.stage.group_size == 8
    assert cfg.data.eval_limit == 30 and cfg.stage.checkpoint_every_n_steps == 25
