"""``+experiment=paper_7b`` and the sharded trainers compose, bind and say what the paper's setting needs."""

from __future__ import annotations

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from toolmaster.cli import CONF_DIR, precheck
from toolmaster.config import validate
from toolmaster.settings import PipelineSettings
from toolmaster.stages.pipeline import step_overrides

STRATEGY = "toolmaster.training.sharding.FSDP2Strategy"


def compose_cfg(overrides: list[str]):
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return compose("train", overrides=["output_dir=/tmp/tm-test", *overrides])
    finally:
        GlobalHydra.instance().clear()


def _steps():
    cfg = compose_cfg(["+experiment=paper_7b"])
    validate(cfg)
    stage = OmegaConf.to_container(cfg.stage, resolve=True)
    stage.pop("_target_")
    settings = PipelineSettings(**stage)
    placeholders = {"model": "qwen2_5_7b", "run_dir": "/tmp/tm-run"}
    return {name: step_overrides(settings, name, placeholders) for name in settings.steps}


def test_paper_7b_top_level_is_the_papers_student_sharded_with_vllm_sleep_mode():
    cfg = compose_cfg(["+experiment=paper_7b"])
    validate(cfg)
    assert cfg.model.path == "Qwen/Qwen2.5-7B-Instruct" and cfg.model.lora is None
    assert cfg.trainer.strategy._target_ == STRATEGY and cfg.trainer.devices == 8
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "32-true"
    assert cfg.trainer.strategy.param_dtype == "bfloat16" and cfg.trainer.strategy.activation_checkpointing
    assert cfg.sampler.engine.enable_sleep_mode is True


def test_paper_7b_training_steps_bind_full_finetuning_under_fsdp():
    steps = _steps()
    assert list(steps)[:3] == ["eval_base", "synthesize", "sft"]
    for name, overrides in steps.items():
        assert precheck(overrides) is None, (name, precheck(overrides))
        cfg = compose_cfg(overrides)
        validate(cfg)
        if name in ("sft", "grpo"):
            assert cfg.stage.name == name
            assert cfg.trainer.strategy._target_ == STRATEGY and cfg.trainer.devices == 8
            assert cfg.model.lora is None  # full fine-tuning, as in the paper
        if name == "grpo":
            assert cfg.sampler.engine._target_.endswith("VLLMEngine")
            assert cfg.sampler.engine.enable_sleep_mode is True
            assert cfg.model.path == "/tmp/tm-run/sft/hf"


def test_sharded_trainers_bind():
    for trainer, devices in (("fsdp_cpu", 2), ("fsdp_gpu", -1)):
        cfg = compose_cfg([f"trainer={trainer}"])
        validate(cfg)
        assert cfg.trainer.strategy._target_ == STRATEGY and cfg.trainer.devices == devices
