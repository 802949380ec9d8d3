"""Hostile tools through the stages: ``stage=synthesize``, ``stage=eval`` (model=tiny) and one GRPO step.

The world (tests/helpers/hostile_world.py) is a user's custom world loaded through the documented YAML path;
its "reserve" tasks call every breaking tool (os._exit, sys.exit, KeyboardInterrupt, segfault, an
unprintable value, a busy loop) and then the real ``reserve``, whose gold ticket R001 holds only when no trial
and no other episode leaked into the episode's module globals. Every record must be written, every failure
must be an error observation naming what happened, and the run must exit 0.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
from helpers.hostile_world import HOSTILE, write_hostile_world
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from toolmaster.cli import CONF_DIR
from toolmaster.io import read_jsonl
from toolmaster.models import load_model
from toolmaster.protocol import get_chat_format
from toolmaster.rewards import build_reward_group
from toolmaster.run import run
from toolmaster.samplers.loop import RolloutConfig
from toolmaster.samplers.scripted import ScriptedEngine
from toolmaster.settings import GRPOSettings
from toolmaster.stages.grpo.data import GRPODataModule
from toolmaster.stages.grpo.module import GRPOModule
from toolmaster.trajectory import Trajectory
from toolmaster.worlds.custom import load_custom_world

FMT = get_chat_format("chatml")
OUTCOME = {"outcome": {"_target_": "toolmaster.rewards.components.Outcome", "weight": 1.0}}


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    return write_hostile_world(tmp_path / "world")


def _world_overrides(spec: Path) -> list[str]:
    return ["tools=custom", f"tools.world.path={spec}", "tools.isolation=process"]


def test_synthesize_writes_every_record_through_hostile_tools(tmp_path: Path, spec: Path) -> None:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose(
                "train",
                overrides=[
                    f"output_dir={tmp_path}",
                    "stage=synthesize",
                    "teacher=direct",
                    "stage.keep=all",
                    *_world_overrides(spec),
                ],
            )
    finally:
        GlobalHydra.instance().clear()
    run(cfg)
    summary = json.loads((tmp_path / "data.summary.json").read_text())
    records = list(read_jsonl(tmp_path / "data.jsonl"))
    assert summary["tasks"] == summary["kept"] == len(records) == 4
    reserve = [r for r in records if r["calls"] and r["calls"][-1]["name"] == "reserve"]
    assert len(reserve) == 3
    for record in reserve:
        calls = record["calls"]
        assert [c["error"] for c in calls[:-1]] == list(HOSTILE.values())
        for call in calls[:-1]:
            assert call["observation"].startswith(f"Error ({call['error']}): {call['name']}")
        # fresh module state in every episode: each one's reservation is the first
        assert calls[-1]["ok"] and calls[-1]["observation"] == "R001"
        assert record["correct"]


def test_eval_with_tiny_model_on_the_hostile_world(tmp_path: Path, spec: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "toolmaster",
        f"hydra.run.dir={tmp_path}",
        "+experiment=smoke",
        "data.eval_splits=[test]",
        "data.eval_limit=null",
        *_world_overrides(spec),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test"]["episodes"] == 4
    trajectories = [Trajectory.from_dict(r) for r in read_jsonl(tmp_path / "trajectories" / "test.jsonl")]
    assert len(trajectories) == 4 and all(t.turns >= 1 for t in trajectories)


def _hostile_player() -> Any:
    """Trial ``reserve``, one breaking tool (cycling), the real ``reserve``, then answer the last ticket seen."""
    names = list(HOSTILE)
    counter = [0]

    def respond(prompt: str) -> str:
        done = prompt.count("<|im_start|>assistant") - 1
        reserve = json.dumps({"name": "reserve", "arguments": {"title": "dune"}})
        if done == 0:
            return f"<trial>{reserve}</trial>"
        if done == 1:
            name = names[counter[0] % len(names)]
            counter[0] += 1
            return f"<call>{json.dumps({'name': name, 'arguments': {}})}</call>"
        if done == 2:
            return f"<call>{reserve}</call>"
        ticket = re.findall(r"R\d{3}", prompt)[-1]
        return f"<answer>{ticket}</answer>"

    return respond


def test_grpo_step_through_hostile_tools(spec: Path) -> None:
    world = load_custom_world(spec)
    tasks = [t for t in world.tasks("train") if t.answer == "R001"]
    loaded = load_model(source="tiny", dtype="float32", device="cpu")
    settings = GRPOSettings(
        tasks_per_step=2, group_size=4, lr=1e-3, micro_batch_size=4, log_trajectories_every=0
    )
    module = GRPOModule(
        loaded.model,
        loaded.tokenizer,
        FMT,
        world.suite,
        build_reward_group(OUTCOME),
        RolloutConfig(max_turns=5, max_new_tokens=64, temperature=1.0, batch_size=8),
        settings,
        engine=ScriptedEngine(loaded.tokenizer, _hostile_player()),
        max_grad_norm=1.0,
    )
    seen: list[list[Trajectory]] = []
    rollout_tasks = module.rollout_tasks

    def recording(batch: list, step: int, round_: int = 0) -> list[Trajectory]:
        seen.append(rollout_tasks(batch, step, round_))
        return seen[-1]

    module.rollout_tasks = recording  # type: ignore[method-assign]
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=1,
        max_epochs=None,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(module, datamodule=GRPODataModule(tasks, settings.tasks_per_step, settings.seed))
    (trajectories,) = seen
    assert len(trajectories) == 8
    errors = set()
    for t in trajectories:
        trial, hostile, real = t.calls
        assert trial["phase"] == "trial" and trial["observation"] == "R001"
        assert not hostile["ok"] and hostile["error"] == HOSTILE[hostile["name"]]
        errors.add(hostile["error"])
        assert real["observation"] == "R001", "the trial's reservation leaked into the execution"
        assert t.correct and t.reward == 1.0
    assert len(errors) >= 4
