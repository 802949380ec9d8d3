"""The scripted GRPO set-up shared by the unit tests of the update and the integration tests of the stage.

A tiny model, a one-tool suite (``zq_add``) and scripted replies (``cycle_replies``: right, wrong or cut-off
answers) give deterministic rewards at no generation cost; ``TINY_RUN`` is the smallest ``stage=grpo`` command
line on toolworld.
"""

from __future__ import annotations

import csv
import gc
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from peft import LoraConfig

from toolmaster.algorithms.packing import PackedBatch
from toolmaster.cli import CONF_DIR
from toolmaster.envs import Task, Tool, ToolSuite
from toolmaster.protocol import get_chat_format
from toolmaster.rewards import build_reward_group
from toolmaster.samplers.loop import RolloutConfig
from toolmaster.samplers.scripted import ScriptedEngine
from toolmaster.settings import GRPOSettings
from toolmaster.stages.grpo.data import GRPODataModule
from toolmaster.stages.grpo.module import GRPOModule
from toolmaster.trajectory import Trajectory

FMT = get_chat_format("chatml")
OUTCOME = {"outcome": {"_target_": "toolmaster.rewards.components.Outcome", "weight": 1.0}}
LORA = LoraConfig(
    r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"
)
TRAIN_METRICS = [
    "train/reward/total",
    "train/success",
    "train/trial_calls",
    "train/execution_calls",
    "train/tool_error_rate",
    "train/response_tokens",
    "train/kl",
    "train/clip_fraction",
    "train/entropy",
    "train/loss",
    "train/time/rollout",
    "train/time/score",
    "train/time/update",
]


def scripted_suite() -> ToolSuite:
    def zq_add(a: int, b: int) -> int:
        return a + b

    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    }
    return ToolSuite.of([Tool("zq_add", "Adds.", schema, zq_add)])


def add_tasks(n: int = 4) -> list[Task]:
    return [
        Task(id=f"t{i}", query=f"Add {i} and 2.", answer=str(i + 2), tool_names=["zq_add"]) for i in range(n)
    ]


def cycle_replies(*kinds: str) -> Callable[[str], Any]:
    """Replies cycling over kinds per generated turn: ``right``, ``wrong`` or ``cut`` (hits max_new_tokens)."""
    counter = [0]

    def respond(prompt: str) -> Any:
        kind = kinds[counter[0] % len(kinds)]
        counter[0] += 1
        task = int(prompt.split("Add ", 1)[1].split(" ", 1)[0])
        if kind == "cut":
            return "<think>let me think about this for a very long", "length"
        call = json.dumps({"name": "zq_add", "arguments": {"a": task, "b": 2}})
        if "<|im_start|>tool" not in prompt:  # first turn: a call, so episodes hold an observation
            return f"<call>{call}</call>"
        return f"<answer>{task + 2 if kind == 'right' else 'no idea'}</answer>"

    return respond


def scripted_module(
    loaded: Any,
    respond: Callable[[str], Any] | None,
    settings: GRPOSettings,
    engine: Any = None,
    **kwargs: Any,
) -> GRPOModule:
    """A GRPO module on the one-tool suite, rolling out with ``engine`` (default: scripted ``respond``)."""
    return GRPOModule(
        loaded.model,
        loaded.tokenizer,
        FMT,
        scripted_suite(),
        build_reward_group(OUTCOME),
        RolloutConfig(max_turns=3, max_new_tokens=48, temperature=1.0),
        settings,
        engine=engine if engine is not None else ScriptedEngine(loaded.tokenizer, respond),
        max_grad_norm=1.0,
        **kwargs,
    )


def grpo_settings(**overrides: Any) -> GRPOSettings:
    base = {
        "tasks_per_step": 2,
        "group_size": 4,
        "lr": 1e-3,
        "micro_batch_size": 3,
        "log_trajectories_every": 0,
    }
    return GRPOSettings(**{**base, **overrides})


def fit_module(
    module: GRPOModule,
    steps: int = 1,
    precision: str = "32-true",
    datamodule: GRPODataModule | None = None,
) -> pl.Trainer:
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        precision=precision,
        max_steps=steps * module.settings.mu,
        max_epochs=None,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    if datamodule is None:
        datamodule = GRPODataModule(add_tasks(), module.settings.tasks_per_step, module.settings.seed)
    trainer.fit(module, datamodule=datamodule)
    return trainer


def record_steps(module: GRPOModule) -> dict[str, list]:
    """Keep every step's trajectories and packed batch."""
    seen: dict[str, list] = {"trajectories": [], "packed": []}
    rollout_tasks, pack = module.rollout_tasks, module.pack

    def recording_rollout(tasks: list[Task], step: int, round_: int = 0) -> list[Trajectory]:
        seen["trajectories"].append(rollout_tasks(tasks, step, round_))
        return seen["trajectories"][-1]

    def recording_pack(trajectories: list[Trajectory], advantages: torch.Tensor) -> PackedBatch:
        seen["packed"].append(pack(trajectories, advantages))
        return seen["packed"][-1]

    module.rollout_tasks = recording_rollout  # type: ignore[method-assign]
    module.pack = recording_pack  # type: ignore[method-assign]
    return seen


def snapshot_weights(model: Any) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def models_alive() -> int:
    from transformers import LlamaForCausalLM

    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, LlamaForCausalLM))


def metric(trainer: pl.Trainer, name: str) -> float:
    return float(trainer.callback_metrics[name])


# ------------------------------------------------------------------------------------ the runner, CSV log
def compose_run(tmp_path: Path, *overrides: str) -> Any:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return compose("train", overrides=[f"output_dir={tmp_path}", *overrides])
    finally:
        GlobalHydra.instance().clear()


TINY_RUN = [
    "stage=grpo",
    "model=tiny",
    "reward=shaped",
    "data.train_limit=6",
    "data.eval_splits=[test_seen]",
    "data.eval_limit=1",
    "sampler.max_turns=1",
    "sampler.max_new_tokens=8",
    "stage.tasks_per_step=1",
    "stage.group_size=2",
    "stage.lr=1e-3",
    "stage.log_trajectories_every=1",
    "trainer.enable_progress_bar=false",
]


def metrics_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "logs" / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))
