"""toolmaster.analyze on real episodes: the scripted expert and the docs-only baseline play a small toolworld
through a real ToolEnv, their trajectories are written as a pipeline run dir with two eval arms (each with the
Hydra config that rebuilds its world), and the analysis must tell the arms apart; hand-made trajectories check
the repeated-failure and decoy counts; the per-feedback-level table groups the same episodes by their task's level
(looked up in the rebuilt tasks, ``n/a`` without them); bad input exits with code 2 and one line."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from toolmaster.analyze import (
    UNKNOWN_LEVEL,
    analyze,
    answer_from_obs,
    by_feedback,
    main,
    revealed_by_trial,
    used_trial,
)
from toolmaster.envs.environment import ToolEnv
from toolmaster.io import write_jsonl_atomic, write_text_atomic
from toolmaster.trajectory import Trajectory
from toolmaster.worlds.scripted import run_policy
from toolmaster.worlds.toolworld import (
    ALL_LEVELS,
    LEVELS,
    ToolWorld,
    build_toolworld,
    docs_only_policy,
    expert_policy,
)

SEED, N_TRAIN, N_TEST = 3, 4, 8
SPLITS = ("test_seen", "test_unseen")
CONFIG = f"seed: {SEED}\ntools:\n  world:\n    _target_: toolmaster.worlds.toolworld.build_toolworld\n"
CONFIG += f"    seed: ${{seed}}\n    n_train: {N_TRAIN}\n    n_test: {N_TEST}\n    variants: per_task\n"


@pytest.fixture(scope="module")
def world() -> ToolWorld:
    return build_toolworld(SEED, N_TRAIN, N_TEST)


def _play(world: ToolWorld, policy_for: Any, split: str) -> list[Trajectory]:
    out = []
    for i, task in enumerate(world.tasks(split)):
        env = ToolEnv(world.suite, trial_budget=2)
        episode = run_policy(policy_for(world, task), task, env, random.Random(i))
        out.append(
            Trajectory(
                task_id=task.id,
                split=split,
                messages=[{"role": "user", "content": task.query}],
                tools=[tool.schema for tool in env.tools.values()],
                calls=[r.to_dict() for r in env.records],
                answer=episode.answer,
                correct=episode.correct,
                trial_budget=2,
            )
        )
    return out


def _write_arm(arm_dir: Path, trajectories: dict[str, list[Trajectory]]) -> None:
    write_text_atomic(arm_dir / ".hydra" / "config.yaml", CONFIG)
    write_text_atomic(arm_dir / "metrics.json", "{}")  # what makes a folder an eval step
    for split, trajs in trajectories.items():
        write_jsonl_atomic(arm_dir / "trajectories" / f"{split}.jsonl", (t.to_dict() for t in trajs))


def _call(name: str, arguments: dict, ok: bool, observation: str, phase: str = "execution") -> dict:
    return {
        "phase": phase,
        "name": name,
        "arguments": arguments,
        "observation": observation,
        "ok": ok,
        "error": None if ok else "tool_exception",
        "output_truncated": False,
        "duration_s": 0.0,
    }


@pytest.fixture(scope="module")
def run_dir(world: ToolWorld, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pipeline_run")
    _write_arm(root / "eval_expert", {s: _play(world, expert_policy, s) for s in SPLITS})
    _write_arm(root / "eval_docs", {s: _play(world, docs_only_policy, s) for s in SPLITS})
    # hand-made arm: one episode that repeats a failing call, one that calls the task's decoy, one truncated
    task_a, task_b = world.tasks("test_seen")[:2]
    decoy = task_b.metadata["decoy"][0]
    main_tool = next(name for name in task_a.tool_names if name not in task_a.metadata["decoy"])
    hand = [
        Trajectory(
            task_id=task_a.id,
            split="test_seen",
            messages=[{"role": "user", "content": task_a.query}],
            calls=[_call(main_tool, {"x": "1"}, False, "Error: bad x")] * 2,
            answer="7",
            truncated=True,
            truncation_reason="max_turns",
        ),
        Trajectory(
            task_id=task_b.id,
            split="test_seen",
            messages=[{"role": "user", "content": task_b.query}],
            calls=[_call(decoy, {}, True, "something related: 12.5")],
            answer="12.50",
        ),
    ]
    _write_arm(root / "eval_hand", {"test_seen": hand})
    # a GRPO step logs its rollouts with training fields and no metrics.json: not an arm
    logged = {**hand[0].to_dict(), "advantage": 0.5, "grpo_step": 1, "rank": 0}
    write_jsonl_atomic(root / "grpo" / "trajectories" / "train.jsonl", [logged])
    # a GRPO run with validation: metrics.json from its final validation, whose episodes are val_trajectories/
    validated = root / "grpo_validated"
    _write_arm(validated, {})
    write_jsonl_atomic(validated / "trajectories" / "train.jsonl", [logged])
    episodes = [t.to_dict() for t in _play(world, expert_policy, "test_seen")]
    write_jsonl_atomic(validated / "val_trajectories" / "test_seen.jsonl", episodes)
    return root


def test_decoys_recorded_in_task_metadata(world: ToolWorld) -> None:
    for task in world.tasks("test_unseen"):
        roles = world.variants[task.metadata["variant"]].roles
        assert task.metadata["decoy"] == [roles["decoy"]]
        assert set(task.metadata["decoy"]) <= set(task.tool_names)


def test_expert_uses_what_trials_revealed_docs_only_does_not(run_dir: Path) -> None:
    report = analyze(run_dir)
    assert set(report) == set(SPLITS)  # no "train": the GRPO step's logged rollouts are not an arm
    arms = {"eval_expert", "eval_docs", "eval_hand", "grpo_validated"}
    assert all(set(names) <= arms for names in report.values())
    for split in SPLITS:
        expert, docs = report[split]["eval_expert"], report[split]["eval_docs"]
        assert expert["episodes"] == docs["episodes"] == N_TEST
        assert expert["used_trial"] > 0 and expert["exec_after_trial"] > 0
        assert docs["used_trial"] == 0 and docs["exec_after_trial"] == 0  # it makes no trials
        assert expert["success"] > docs["success"]
        assert expert["decoy_known"] == N_TEST and docs["decoy_known"] == N_TEST
        assert expert["decoy_use"] == 0  # the expert never touches the decoy
    # the (a) branch alone: some expert execution carries a token only a failed trial's observation showed
    assert sum(report[s]["eval_expert"]["used_trial_revealed"] for s in SPLITS) >= 1
    assert all(report[s]["eval_docs"]["used_trial_revealed"] == 0 for s in SPLITS)
    saved = json.loads((run_dir / "analysis.json").read_text())
    assert saved["test_seen"]["eval_expert"]["used_trial"] == report["test_seen"]["eval_expert"]["used_trial"]
    table = (run_dir / "analysis.md").read_text()
    assert "| eval_docs | 8 |" in table and "## test_unseen" in table


def test_hand_made_repeats_decoy_and_truncation(run_dir: Path) -> None:
    row = analyze(run_dir)["test_seen"]["eval_hand"]
    assert row["episodes"] == 2
    assert row["repeated_failure"] == 1
    assert row["decoy_use"] == 1 and row["decoy_known"] == 2
    assert row["truncated"] == 1 and row["truncation_reasons"] == {"max_turns": 1}
    assert row["answer_from_obs"] == 1 and row["answer_not_from_obs"] == 1  # "12.50" ~ 12.5; "7" nowhere
    assert "turns 1" in (run_dir / "analysis.md").read_text()


def test_validated_grpo_run_is_an_arm_read_from_its_validation_episodes(run_dir: Path) -> None:
    report = analyze(run_dir)
    assert "grpo_validated" not in report["test_unseen"]  # it validated on test_seen only
    row, expert = report["test_seen"]["grpo_validated"], report["test_seen"]["eval_expert"]
    assert row["episodes"] == N_TEST  # the validation's episodes, not the one logged training rollout
    assert row["used_trial"] == expert["used_trial"] and row["success"] == expert["success"]


def test_per_feedback_level_rows_split_each_arm_by_its_tasks_levels(world: ToolWorld, run_dir: Path) -> None:
    report = analyze(run_dir)
    for split in SPLITS:
        levels = [task.metadata["feedback"] for task in world.tasks(split)]
        assert set(levels) >= set(LEVELS), (split, levels)  # this small build has every level in both splits
        for arm in ("eval_expert", "eval_docs"):
            rows = report[split][arm]["by_feedback"]
            assert list(rows) == [level for level in ALL_LEVELS if level in levels]  # fixed order, no n/a
            assert {level: row["episodes"] for level, row in rows.items()} == {
                level: levels.count(level) for level in rows
            }
            for metric in (
                "success",
                "repeated_failure",
                "used_trial",
            ):  # the levels partition the arm's counts
                assert sum(row[metric] for row in rows.values()) == report[split][arm][metric], (split, arm)
            for row in rows.values():
                low, high = row["success_ci95"]
                assert 0 <= low <= row["success"] / row["episodes"] <= high <= 1
        expert, docs = report[split]["eval_expert"]["by_feedback"], report[split]["eval_docs"]["by_feedback"]
        assert expert["silent"]["used_trial"] > 0 and all(row["used_trial"] == 0 for row in docs.values())
        for level in LEVELS:  # the docs-only baseline fails wherever the docs leave something out
            assert expert[level]["success"] == expert[level]["episodes"] and docs[level]["success"] == 0, (
                level
            )
    none = report["test_unseen"]["eval_docs"]["by_feedback"]["none"]
    assert none["success"] == none["episodes"] >= 1  # ... and solves the task whose docs suffice
    # the hand-made arm: its repeated failure sits under its task's level
    task_a, task_b = world.tasks("test_seen")[:2]
    hand = report["test_seen"]["eval_hand"]["by_feedback"]
    assert hand[task_a.metadata["feedback"]]["repeated_failure"] == 1
    assert sum(row["episodes"] for row in hand.values()) == 2
    saved = json.loads((run_dir / "analysis.json").read_text())
    assert (
        saved["test_unseen"]["eval_docs"]["by_feedback"] == report["test_unseen"]["eval_docs"]["by_feedback"]
    )
    table = (run_dir / "analysis.md").read_text()
    assert "### test_unseen by feedback level" in table and "### test_seen by feedback level" in table
    row = report["test_unseen"]["eval_expert"]["by_feedback"]["silent"]
    low, high = row["success_ci95"]
    n, k = row["episodes"], row["success"]
    assert f"| eval_expert | silent | {n} | {k / n:.2f} ({k}) [{low:.2f}, {high:.2f}] |" in table


def test_feedback_levels_unknown_without_the_world(world: ToolWorld, tmp_path: Path) -> None:
    trajs = _play(world, docs_only_policy, "test_unseen")
    rows = by_feedback(trajs, {})  # no task metadata: every episode is n/a (and no interval is computed)
    assert list(rows) == [UNKNOWN_LEVEL] and rows[UNKNOWN_LEVEL]["episodes"] == N_TEST
    assert rows[UNKNOWN_LEVEL]["success_ci95"] is None
    levels = {trajs[0].task_id: "names_fix"}  # a level the lookup knows, the rest unknown
    assert {k: r["episodes"] for k, r in by_feedback(trajs, levels).items()} == {
        "names_fix": 1,
        "n/a": N_TEST - 1,
    }
    arm = tmp_path / "eval_plain"  # an eval dir without its Hydra config: the tasks cannot be rebuilt
    write_text_atomic(arm / "metrics.json", "{}")
    write_jsonl_atomic(arm / "trajectories" / "test_unseen.jsonl", (t.to_dict() for t in trajs))
    report = analyze(arm)
    assert list(report["test_unseen"]["eval_plain"]["by_feedback"]) == [UNKNOWN_LEVEL]
    assert "by feedback level" not in (arm / "analysis.md").read_text()  # no table of n/a alone


def test_revealed_token_rules() -> None:
    error = "Error: bad conv 'fahrenheit'; use one of c:f, c:k, f:c"
    trial = _call("conv", {"t": 100, "conv": "fahrenheit"}, False, error, phase="trial")
    fixed = _call("conv", {"t": 109, "conv": "c:f"}, True, "2282")
    query = [{"role": "user", "content": "Convert 109 degrees Celsius to Fahrenheit."}]
    traj = Trajectory(task_id="t", split="s", messages=query, calls=[trial, fixed])
    assert revealed_by_trial(traj) and used_trial(traj)
    in_query = [{"role": "user", "content": "Convert 109 degrees (c:f)."}]  # the query already said it
    assert not revealed_by_trial(Trajectory(task_id="t", split="s", messages=in_query, calls=[trial, fixed]))
    repeated = _call("conv", {"t": 100, "conv": "fahrenheit"}, False, error)  # same args as the failed trial
    assert not used_trial(Trajectory(task_id="t", split="s", messages=query, calls=[trial, repeated]))


def test_answer_matching_rules() -> None:
    calls = [_call("t", {}, True, "total 2649787 cents; rate 0.33333")]
    assert answer_from_obs("0.3333", calls) and answer_from_obs(" 2649787 ", calls)
    assert answer_from_obs("26497.87", calls) is False
    assert answer_from_obs("CENTS", calls) is True and answer_from_obs(None, calls) is None


def test_single_eval_dir_via_subprocess(run_dir: Path) -> None:
    arm = run_dir / "eval_expert"
    out = subprocess.run(
        [sys.executable, "-m", "toolmaster.analyze", str(arm)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "| eval_expert | 8 |" in out.stdout
    assert json.loads((arm / "analysis.json").read_text())["test_seen"]["eval_expert"]["episodes"] == N_TEST


def test_bad_input_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path)]) == 2
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "no trajectories" in lines[0]
    (tmp_path / "trajectories").mkdir()
    (tmp_path / "trajectories" / "test_seen.jsonl").write_text('{"task_id": "x"\n')
    assert main([str(tmp_path)]) == 2
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "test_seen.jsonl:1" in lines[0]
    (tmp_path / "trajectories" / "test_seen.jsonl").write_text(
        '{"task_id": "x", "split": "s", "messages": [], "calls": [{}]}\n'
    )
    assert main([str(tmp_path)]) == 2
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "record 1 has a call without" in lines[0]
    out = subprocess.run(
        [sys.executable, "-m", "toolmaster.analyze", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and len(out.stdout.strip().splitlines()) == 1 and not out.stderr
