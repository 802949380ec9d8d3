"""``stage.pass_rate_samples``: the filter keeps exactly the tasks the starting policy solves sometimes, samples
them with its own seed (the same seed plays the same episodes), records its result and reuses it on resume,
and says clearly when nothing is left.

Rates come from real rollouts: the scripted engine (replies right / wrong in a fixed cycle, so each task's rate
is known) through ``pass_rate_tasks`` with a real Lightning trainer object; determinism from the real HF engine
sampling with the tiny random Llama.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
from helpers.grpo_scripted import FMT, add_tasks, grpo_settings, scripted_module, scripted_suite

from toolmaster.errors import ConfigError
from toolmaster.models import load_model
from toolmaster.samplers.hf import HFEngine
from toolmaster.samplers.loop import RolloutConfig, rollout
from toolmaster.stages.grpo.pass_rate import PASS_RATES, filter_tasks, keep_by_rate, success_rates
from toolmaster.stages.grpo.run import pass_rate_tasks
from toolmaster.trajectory import Trajectory


def _trainer() -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False
    )


def _respond_by_task(solved: dict[int, list[str]]) -> Any:
    """Scripted replies: task i's episodes answer right / wrong in the cycle ``solved[i]``."""
    seen: dict[int, int] = {}

    def respond(prompt: str) -> str:
        task = int(prompt.split("Add ", 1)[1].split(" ", 1)[0])
        if "<|im_start|>tool" not in prompt:
            call = json.dumps({"name": "zq_add", "arguments": {"a": task, "b": 2}})
            return f"<call>{call}</call>"
        k = seen.get(task, 0)
        seen[task] = k + 1
        kind = solved[task][k % len(solved[task])]
        return f"<answer>{task + 2 if kind == 'right' else 'no idea'}</answer>"

    return respond


def test_rates_and_the_strict_window():
    trajectories = [
        Trajectory(task_id=task_id, split="train", messages=[], correct=correct)
        for task_id, correct in [
            ("a", True),
            ("a", False),
            ("b", False),
            ("b", False),
            ("c", True),
            ("c", True),
        ]
    ]
    rates = success_rates(trajectories)
    assert rates == {"a": 0.5, "b": 0.0, "c": 1.0}
    tasks = add_tasks(3)
    by_id = dict(zip(["a", "b", "c"], [t.id for t in tasks]))
    renamed = {by_id[k]: v for k, v in rates.items()}
    assert [t.id for t in keep_by_rate(tasks, renamed, 0.0, 1.0)] == [by_id["a"]]
    assert [t.id for t in keep_by_rate(tasks, renamed, -0.1, 1.0)] == [by_id["a"], by_id["b"]]


def test_the_filter_keeps_the_sometimes_solved_tasks_and_records_them(tmp_path: Path):
    # task 0 always right, 1 always wrong, 2 half right, 3 a quarter right; 4 samples each
    respond = _respond_by_task(
        {0: ["right"], 1: ["wrong"], 2: ["right", "wrong"], 3: ["right", "wrong", "wrong", "wrong"]}
    )
    settings = grpo_settings(pass_rate_samples=4)
    module = scripted_module(load_model(source="tiny", dtype="float32", device="cpu"), respond, settings)
    kept = pass_rate_tasks(settings, module, add_tasks(4), _trainer(), tmp_path)
    assert [t.id for t in kept] == ["t2", "t3"]
    record = json.loads((tmp_path / PASS_RATES).read_text())
    assert record["rates"] == {"t0": 1.0, "t1": 0.0, "t2": 0.5, "t3": 0.25}
    assert record["kept"] == ["t2", "t3"] and record["samples"] == 4

    # a run resuming with the same settings reuses the record: no episode is played again
    def no_play(tasks: list[Any], config: Any) -> list[Trajectory]:
        raise AssertionError("the recorded rates should have been reused")

    args = (module.rollout_config, 4, 0.0, 1.0, settings.seed, None, tmp_path)
    again = filter_tasks(add_tasks(4), no_play, *args, resuming=True)
    assert [t.id for t in again] == ["t2", "t3"]
    # resuming with other settings (fewer samples, another starting model) is an error, not another task list
    fewer = (module.rollout_config, 2, 0.0, 1.0, settings.seed, None, tmp_path)
    with pytest.raises(ConfigError, match="does not hold this filter's result"):
        filter_tasks(add_tasks(4), no_play, *fewer, resuming=True)
    with pytest.raises(ConfigError, match="does not hold this filter's result"):
        filter_tasks(add_tasks(4), no_play, *args, resuming=True, policy="another/model")
    # a fresh run with the same settings (killed before its first checkpoint) reuses it too; with other
    # settings it filters anew
    assert [t.id for t in filter_tasks(add_tasks(4), no_play, *args, resuming=False)] == ["t2", "t3"]
    with pytest.raises(AssertionError, match="reused"):
        filter_tasks(add_tasks(4), no_play, *fewer, resuming=False)


def test_a_filter_killed_between_chunks_resumes_with_the_same_result(tmp_path: Path, monkeypatch):
    """Chunks of 2 candidates: the run dies in the second chunk; the rerun plays only chunks 2-3, the partial
    record goes away and the result is an uninterrupted run's."""
    from toolmaster.stages.grpo import pass_rate

    monkeypatch.setattr(pass_rate, "CHUNK_TASKS", 2)
    cycles = {0: ["right"], 1: ["right", "wrong"], 2: ["wrong"], 3: ["right", "wrong"], 4: ["wrong", "right"]}
    settings = grpo_settings(pass_rate_samples=2)
    played: list[list[str]] = []

    def make_play(die_on_chunk: int | None) -> Any:
        module = scripted_module(
            load_model(source="tiny", dtype="float32", device="cpu"), _respond_by_task(cycles), settings
        )

        def play(tasks: list[Any], config: RolloutConfig) -> list[Trajectory]:
            if die_on_chunk is not None and len(played) == die_on_chunk:
                raise KeyboardInterrupt  # the session ends mid-filter
            played.append([task.id for task in tasks])
            return rollout(module.engine, module.tokenizer, module.fmt, module.suite, tasks, config)

        return module, play

    module, play = make_play(die_on_chunk=1)
    args = (module.rollout_config, 2, 0.0, 1.0, settings.seed, None)
    with pytest.raises(KeyboardInterrupt):
        filter_tasks(add_tasks(5), play, *args, tmp_path / "killed")
    assert played == [["t0", "t1"]]
    partial = json.loads((tmp_path / "killed" / pass_rate.PARTIAL).read_text())
    assert partial["rates"] == {"t0": 1.0, "t1": 0.5}
    module, play = make_play(die_on_chunk=None)
    resumed = filter_tasks(add_tasks(5), play, *args, tmp_path / "killed")
    assert played == [["t0", "t1"], ["t2", "t3"], ["t4"]]
    assert not (tmp_path / "killed" / pass_rate.PARTIAL).exists()
    played.clear()
    module, play = make_play(die_on_chunk=None)
    whole = filter_tasks(add_tasks(5), play, *args, tmp_path / "whole")
    assert [t.id for t in resumed] == [t.id for t in whole] == ["t1", "t3", "t4"]
    record = json.loads((tmp_path / "killed" / PASS_RATES).read_text())
    assert record["rates"] == json.loads((tmp_path / "whole" / PASS_RATES).read_text())["rates"]


def test_candidates_limit_the_pool_and_an_empty_result_says_why(tmp_path: Path):
    respond = _respond_by_task({0: ["right"], 1: ["wrong"], 2: ["right", "wrong"], 3: ["right", "wrong"]})
    settings = grpo_settings(pass_rate_samples=2, pass_rate_candidates=2)
    module = scripted_module(load_model(source="tiny", dtype="float32", device="cpu"), respond, settings)
    with pytest.raises(
        ConfigError, match=r"no task of 2 has a success rate in \(0.0, 1.0\).*1 at 0, 1 at 1.*raise"
    ):
        pass_rate_tasks(settings, module, add_tasks(4), _trainer(), tmp_path)


def test_the_same_seed_plays_the_same_episodes():
    loaded = load_model(source="tiny", dtype="float32", device="cpu", seed=0)
    engine = HFEngine(loaded.model, loaded.tokenizer)
    config = RolloutConfig(max_turns=2, max_new_tokens=8, temperature=1.0)
    played: list[list[list[int]]] = []

    def play(tasks: list[Any], cfg: RolloutConfig) -> list[Trajectory]:
        trajectories = rollout(engine, loaded.tokenizer, FMT, scripted_suite(), tasks, cfg)
        played.append([t.token_ids for t in trajectories])
        return trajectories

    for seed in (3, 3, 4):
        with pytest.raises(ConfigError):  # a random model solves nothing
            filter_tasks(add_tasks(2), play, config, 3, 0.0, 1.0, seed)
    assert len(played[0]) == 6  # 2 tasks x 3 samples
    assert played[0] == played[1]
    assert played[0] != played[2]


def test_pass_rate_settings_are_checked():
    with pytest.raises(ValueError, match="pass_rate_min and pass_rate_max"):
        grpo_settings(pass_rate_min=0.5, pass_rate_max=0.5)
    with pytest.raises(ValueError, match="pass_rate_samples"):
        grpo_settings(pass_rate_samples=-1)
    with pytest.raises(ValueError, match="pass_rate_candidates"):
        grpo_settings(pass_rate_candidates=0)
