"""``stage=grpo`` end to end, in processes of its own or on the real model.

- Real SmolLM2 (slow): a short SFT on oracle episodes, then GRPO steps with real sampled groups: every weight
  moves, and the loss gradient is exactly zero on every prompt, observation and padding position.
- A 2-process ``trainer=ddp_cpu`` run as ``python -m toolmaster`` with metrics reduced over both processes.

The tiny-model tests of the update and the in-process runner are ``tests/unit/stages/test_grpo_module.py``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from helpers.grpo_scripted import (
    FMT,
    TINY_RUN,
    TRAIN_METRICS,
    metric,
    metrics_rows,
    record_steps,
    snapshot_weights,
)

from toolmaster.algorithms import grpo_loss, token_logprobs
from toolmaster.algorithms.packing import pack_trajectories
from toolmaster.models import load_model
from toolmaster.samplers.loop import RolloutConfig
from toolmaster.settings import GRPOSettings
from toolmaster.stages.grpo.data import GRPODataModule
from toolmaster.stages.grpo.module import GRPOModule
from toolmaster.teachers.base import PlayRequest

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------------------- (6) ddp_cpu
def test_ddp_cpu_two_processes_reduce_metrics(tmp_path):
    run_dir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "toolmaster",
        *TINY_RUN,
        "trainer=ddp_cpu",
        "trainer.max_steps=2",
        "stage.val_every_n_steps=2",
        "data.eval_limit=2",
        f"hydra.run.dir={run_dir}",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "MEMBER: 2/2" in output
    rows = [r for r in metrics_rows(run_dir) if r.get("train/loss")]
    assert [int(r["step"]) for r in rows] == [0, 1]
    # each process played 1 task x G = 2 episodes; the logged count is the sum over both processes
    assert all(float(r["train/episodes"]) == 4 for r in rows)
    assert all(math.isfinite(float(r[m])) for r in rows for m in TRAIN_METRICS)
    summary = json.loads((run_dir / "grpo_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["grpo_steps"] == 2
    assert (run_dir / "hf" / "config.json").exists()
    assert len((run_dir / "trajectories" / "train.jsonl").read_text().splitlines()) == 2 * 2  # rank 0 only
    # validation: one task per process, both episodes gathered onto rank 0's val_trajectories
    validated = [json.loads(line) for line in (run_dir / "val_trajectories" / "test_seen.jsonl").open()]
    assert len({record["task_id"] for record in validated}) == len(validated) == 2
    assert summary["val"]["val/test_seen/episodes"] == 2


# ---------------------------------------------------------------------- (1) real SmolLM2: SFT then GRPO
@pytest.mark.slow
def test_smollm2_sft_then_grpo_moves_every_weight_and_masks_observations(tmp_path):
    from toolmaster.io import append_jsonl
    from toolmaster.rewards import build_reward_group as reward_group
    from toolmaster.samplers.hf import HFEngine
    from toolmaster.settings import SFTSettings
    from toolmaster.stages.sft.data import SFTDataModule
    from toolmaster.stages.sft.module import SFTModule
    from toolmaster.teachers.expert import ExpertTeacher
    from toolmaster.training.trainer import Cadence, build_trainer
    from toolmaster.worlds.toolworld import build_toolworld

    torch.manual_seed(0)
    # the static-tools world: 20 oracle episodes on shared tools teach the protocol well enough for some GRPO
    # group to carry a reward difference (with per-task tools all 8 episodes scored 0.0 and the test's premise
    # fails); this test checks the update's mechanics, not generalisation
    world = build_toolworld(seed=0, n_train=48, n_test=2, variants="per_family")
    tasks = world.tasks("train")
    # GRPO on later tasks of two families the 20 SFT episodes cover with short calls (the quirk-built families
    # need longer first turns than this test's 48-token turn limit)
    grpo_tasks = [t for t in tasks[20:] if t.family in ("shipping", "convert")][:2]
    loaded = load_model(source="smollm2", dtype="float32", device="cpu")  # own copy: training changes it

    # a short SFT on oracle episodes so that the model speaks the protocol
    oracle = ExpertTeacher("oracle").play(PlayRequest(world, tasks[:20], trial_budget=2, fmt=FMT))
    data = tmp_path / "sft.jsonl"
    append_jsonl(data, (t.to_dict() for t in oracle))
    sft = SFTSettings(
        lr=1e-4, warmup_steps=1, schedule="constant", batch_size=2, max_length=1024, val_fraction=0
    )
    datamodule = SFTDataModule(data, loaded.tokenizer, FMT, batch_size=2, max_length=1024, val_fraction=0.0)
    trainer_cfg = {
        "accelerator": "cpu",
        "devices": 1,
        "precision": "32-true",
        "max_steps": 10,
        "max_epochs": None,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "gradient_clip_val": 1.0,
    }
    sft_module = SFTModule(loaded.model, sft)
    cadence = Cadence(sft.checkpoint_every_n_steps, sft.val_every_n_steps)
    build_trainer(trainer_cfg, tmp_path / "sft", cadence, logger=False, has_val=False).fit(
        sft_module, datamodule
    )

    # GRPO: 2 steps, 1 task x G = 4 episodes each, shaped reward
    settings = GRPOSettings(
        tasks_per_step=1, group_size=4, lr=1e-5, micro_batch_size=2, log_trajectories_every=1, seed=0
    )
    shaped = {
        "outcome": {"_target_": "toolmaster.rewards.components.Outcome", "weight": 1.0},
        "format": {"_target_": "toolmaster.rewards.components.Format", "weight": 0.1},
        "exec_error": {
            "_target_": "toolmaster.rewards.components.ExecError",
            "weight": 1.0,
            "per_error": 0.05,
        },
        "call_match": {"_target_": "toolmaster.rewards.components.CallMatch", "weight": 0.2},
        # every trial call costs a little, so samples that differ only in how much they explore still differ
        "trial_cost": {
            "_target_": "toolmaster.rewards.components.TrialCost",
            "weight": 1.0,
            "per_call": 0.02,
        },
    }
    config = RolloutConfig(
        max_turns=3, max_new_tokens=48, max_total_tokens=1024, temperature=1.0, batch_size=4
    )
    module = GRPOModule(
        loaded.model,
        loaded.tokenizer,
        FMT,
        world.suite,
        reward_group(shaped),
        config,
        settings,
        engine=HFEngine(loaded.model, loaded.tokenizer, stop_strings=FMT.tags.closing_tags()),
        max_grad_norm=1.0,
        output_dir=tmp_path / "grpo",
    )
    before = snapshot_weights(loaded.model)
    seen = record_steps(module)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=2,
        max_epochs=None,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(module, datamodule=GRPODataModule(grpo_tasks, 1, seed=0))
    assert trainer.global_step == 2
    rewards = [[t.reward for t in step] for step in seen["trajectories"]]
    assert any(len(set(group)) > 1 for group in rewards), rewards  # some group carried a learning signal
    unchanged = [n for n, p in loaded.model.named_parameters() if torch.equal(p.detach(), before[n])]
    assert not unchanged, unchanged[:5]
    assert math.isfinite(metric(trainer, "train/loss"))

    # The gradient of the loss reaches the logits only where a sampled token is scored: exactly zero at
    # every prompt, observation (tool turn) and padding position, on a real packed GRPO batch whose rows
    # hold observations. (The model's forward runs without a graph: only d loss / d logits is inspected.)
    trajectories = seen["trajectories"][-1]

    def has_observation(trajectory) -> bool:
        return any(m["role"] == "tool" for m in trajectory.messages)

    assert any(map(has_observation, trajectories)), "no episode of the last step has a tool turn"
    rows = sorted(trajectories, key=has_observation, reverse=True)[:2]  # episodes with tool turns first
    packed = pack_trajectories(rows, torch.tensor([1.0, -1.0]), loaded.tokenizer.pad_token_id)
    with torch.no_grad():
        logits = loaded.model(input_ids=packed.input_ids, attention_mask=packed.attention_mask).logits
    logits.requires_grad_(True)
    logprobs = token_logprobs(logits, packed.input_ids, temperature=1.0)
    loss, _ = grpo_loss(logprobs, logprobs.detach(), packed.advantages, packed.loss_mask)
    loss.backward()
    per_position = logits.grad.abs().sum(dim=-1)[:, :-1]  # position t predicts token t + 1
    assert (per_position[~packed.loss_mask] == 0).all()
    assert (per_position[packed.loss_mask] > 0).all()
    jsonl = (tmp_path / "grpo" / "trajectories" / "train.jsonl").read_text().splitlines()
    assert len(jsonl) == 2 * 4


def test_pass_rate_filter_from_the_command_line(tmp_path):
    """``stage.pass_rate_samples`` through ``python -m toolmaster``: the random tiny model solves no candidate,
    so the run stops before training with one line naming the setting, and the rates are on disk."""
    command = [
        sys.executable,
        "-m",
        "toolmaster",
        *TINY_RUN,
        "trainer.max_steps=1",
        "stage.pass_rate_samples=2",
        "stage.pass_rate_candidates=2",
        f"hydra.run.dir={tmp_path}",
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "stage.pass_rate_samples=2" in line]
    assert len(errors) == 1, result.stderr[-2000:]
    assert "no task of 2 has a success rate in (0.0, 1.0)" in errors[0]
    assert "Traceback" not in result.stderr
    record = json.loads((tmp_path / "pass_rates.json").read_text())
    assert len(record["candidates"]) == 2 and record["kept"] == [] and set(record["rates"].values()) == {0.0}
