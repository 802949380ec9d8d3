"""A pipeline's command-line overrides reach its steps, or the pipeline refuses them in one line.

Found the hard way: ``+experiment=paper_small tools.world.variants=per_family`` (the static-tools control) used to
run every step on the per-task world, because no step override read ``tools.world.variants``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from toolmaster.cli import compose
from toolmaster.settings import PipelineSettings
from toolmaster.stages.pipeline import step_overrides, unforwarded_overrides

REPO = Path(__file__).resolve().parents[2]

DOCUMENTED = [
    ["+experiment=quickstart", "model=tiny", "data.eval_limit=20", "seed=3"],
    ["+experiment=ablation", "ablation.sft_path=/x/hf", "ablation.trial_budgets=[0,2]", "stage.dry_run=true"],
    ["+experiment=ablation", "ablation.rewards=[outcome,shaped]", "ablation.grpo.group_size=2", "model=tiny"],
    ["+experiment=paper_small", "seed=1", "tools.world.variants=per_family", "data.eval_limit=15"],
    ["+experiment=paper_small_slips", "tools.world.variants=per_family"],
    ["+experiment=paper_small_grpo_group8", "seed=2", "tools.world.variants=per_family"],
    ["+experiment=paper_small_trial_mix", "seed=1", "tools.world.variants=per_family"],
]


@pytest.mark.parametrize("overrides", DOCUMENTED, ids=lambda o: " ".join(o))
def test_documented_pipeline_overrides_all_reach_the_steps(overrides):
    cfg = compose(["output_dir=/tmp/x", *overrides])
    assert unforwarded_overrides(overrides, cfg) == []


def test_the_static_control_runs_every_step_on_the_per_family_world():
    overrides = ["+experiment=paper_small", "tools.world.variants=per_family"]
    stage = OmegaConf.to_container(compose(["output_dir=/tmp/x", *overrides]).stage, resolve=True)
    stage.pop("_target_")
    settings = PipelineSettings(**stage)
    for step in settings.steps:
        assert "tools.world.variants=per_family" in step_overrides(
            settings, step, {"model": "m", "run_dir": "/r"}
        )


def test_an_override_no_step_reads_is_reported():
    overrides = ["+experiment=quickstart", "tools.trial_budget=4", "model.path=/x", "stage.echo=true"]
    cfg = compose(["output_dir=/tmp/x", *overrides])
    assert unforwarded_overrides(overrides, cfg) == ["tools.trial_budget=4", "model.path=/x"]


def test_the_cli_refuses_it_in_one_line_before_any_step(tmp_path):
    command = [sys.executable, "-m", "toolmaster", "+experiment=quickstart", "tools.trial_budget=4"]
    done = subprocess.run(
        [*command, f"hydra.run.dir={tmp_path}"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode != 0
    assert "'tools.trial_budget=4' would change the pipeline's config but none of its steps" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "eval_base").exists()
