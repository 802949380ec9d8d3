"""Hostile tools through ToolEnv under process isolation: every failure is an error observation, the episode
goes on, and nothing a trial or an earlier episode did is seen by the execution calls or the next episode.

The world is a real custom world written in a temp dir (tests/helpers/hostile_world.py) and loaded through
the documented YAML path, so its tool host is spawned from the spec (not forked from pytest).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.hostile_world import HOSTILE, TIMEOUT_S, write_hostile_world

from toolmaster.envs.calls import RESOURCE_LIMIT, TOOL_EXCEPTION, TOOL_EXITED, UNPRINTABLE_RESULT, Isolation
from toolmaster.envs.environment import EXECUTION, TRIAL, ToolEnv
from toolmaster.worlds.base import World
from toolmaster.worlds.custom import load_custom_world

DUNE = {"title": "dune"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return load_custom_world(write_hostile_world(tmp_path_factory.mktemp("hostile")))


@pytest.fixture
def env(world: World) -> Iterator[ToolEnv]:
    env = ToolEnv(world.suite, trial_budget=20, timeout_s=5.0)
    env.reset(world.tasks("test")[-1])
    yield env
    env.close()


def observe(env: ToolEnv, name: str, phase: str, **arguments: object) -> str:
    record = env.execute(name, arguments, phase)
    assert record.ok, record.observation
    return record.observation


@pytest.mark.parametrize("phase", [TRIAL, EXECUTION])
@pytest.mark.parametrize("name", list(HOSTILE))
def test_breaking_tool_becomes_an_error_and_the_episode_goes_on(env: ToolEnv, name: str, phase: str) -> None:
    observe(env, "reserve", EXECUTION, **DUNE)
    start = time.perf_counter()
    record = env.execute(name, {}, phase)
    assert (
        time.perf_counter() - start < TIMEOUT_S + 10.0
    )  # the busy loop never ends by itself: it was stopped
    assert not record.ok and record.error == HOSTILE[name], record.observation
    assert record.observation.startswith(f"Error ({HOSTILE[name]}): {name}")
    assert "\n" not in record.observation
    assert env.counters[f"error/{HOSTILE[name]}"] == 1
    # the state before the failed call is intact: one copy reserved, tickets go on
    assert observe(env, "holding", EXECUTION, **DUNE) == "1"
    assert observe(env, "reserve", EXECUTION, **DUNE) == "R002"


def test_observations_name_what_happened(env: ToolEnv) -> None:
    texts = {name: env.execute(name, {}, EXECUTION).observation for name in HOSTILE}
    assert "exit code 7" in texts["exit_hard"]
    assert "sys.exit(3)" in texts["exit_soft"]
    assert "KeyboardInterrupt" in texts["interrupt"]
    assert "SIGSEGV" in texts["segfault"]
    assert "no repr for you" in texts["unprintable"]
    assert f"within {TIMEOUT_S:g} s" in texts["spin"] and "killed" in texts["spin"]


def test_busy_loop_process_is_killed(env: ToolEnv, tmp_path: Path) -> None:
    pidfile = tmp_path / "spin.pid"
    record = env.execute("spin", {"pidfile": str(pidfile)}, TRIAL)
    assert record.error == "timeout"
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):  # killed and reaped: no abandoned thread or process spins on
        os.kill(pid, 0)


def test_trial_global_mutation_is_not_seen_by_execution(env: ToolEnv) -> None:
    assert observe(env, "reserve", TRIAL, **DUNE) == "R001"
    assert observe(env, "reserve", TRIAL, **DUNE) == "R002"  # trials build on each other in the sandbox
    assert observe(env, "holding", TRIAL, **DUNE) == "0"
    assert observe(env, "holding", EXECUTION, **DUNE) == "2"
    assert observe(env, "reserve", EXECUTION, **DUNE) == "R001"  # the gold ticket
    assert observe(env, "holding", EXECUTION, **DUNE) == "1"  # execution effects persist in the episode


def test_episodes_start_from_fresh_module_state(world: World) -> None:
    task = world.tasks("test")[-1]
    for _ in range(3):
        with ToolEnv(world.suite, trial_budget=2) as env:
            env.reset(task)
            assert observe(env, "reserve", EXECUTION, **DUNE) == "R001"
            assert observe(env, "reserve", EXECUTION, **DUNE) == "R002"


def test_trial_cwd_environment_and_files_are_discarded(env: ToolEnv) -> None:
    home, trial_home = observe(env, "where", EXECUTION), observe(env, "where", TRIAL)
    assert os.path.basename(home).startswith("episode-") and home not in (trial_home, os.getcwd())
    assert observe(env, "wander", TRIAL) == "/"
    assert observe(env, "where", TRIAL) == trial_home  # every call starts in its episode's directory
    assert observe(env, "where", EXECUTION) == home
    assert observe(env, "set_env", TRIAL, value="on") == "on"
    assert observe(env, "get_env", TRIAL) == "on"
    assert observe(env, "get_env", EXECUTION) == "unset"
    assert "HOSTILE_FLAG" not in os.environ
    assert observe(env, "write_note", TRIAL, text="draft") == "ok"
    assert observe(env, "read_note", TRIAL) == "draft"
    assert observe(env, "read_note", EXECUTION) == "missing"
    assert observe(env, "write_note", EXECUTION, text="real") == "ok"
    assert observe(env, "read_note", EXECUTION) == "real"


def test_failed_execution_restores_the_working_directory(world: World) -> None:
    with ToolEnv(world.suite) as env:
        env.reset(world.tasks("test")[-1])
        observe(env, "write_note", EXECUTION, text="kept")
        assert not env.execute("exit_hard", {}, EXECUTION).ok
        assert observe(env, "read_note", EXECUTION) == "kept"


def test_phase_is_injected_for_dry_runs(env: ToolEnv) -> None:
    assert observe(env, "reserve_dry", TRIAL, **DUNE) == "would reserve dune"
    assert observe(env, "reserve_dry", EXECUTION, **DUNE) == "reserved dune"


def test_tool_host_does_not_import_torch(env: ToolEnv) -> None:
    import torch  # noqa: F401 - imported here, yet not in the tool's process

    assert observe(env, "has_torch", EXECUTION) == "false"


def test_resource_limits(world: World, tmp_path: Path) -> None:
    limited = Isolation("process", memory_limit_mb=512, cpu_limit_s=1)
    with ToolEnv(world.suite, timeout_s=20.0, isolation=limited) as env:
        env.reset(world.tasks("test")[-1])
        record = env.execute("hog", {}, EXECUTION)
        assert record.error == RESOURCE_LIMIT and "memory" in record.observation, record.observation
        start = time.perf_counter()
        record = env.execute("burn", {}, EXECUTION)
        assert record.error == RESOURCE_LIMIT and "CPU" in record.observation, record.observation
        assert time.perf_counter() - start < 10.0
        assert observe(env, "reserve", EXECUTION, **DUNE) == "R001"  # the lineage itself is not limited


def test_thread_mode_still_turns_exits_and_bad_results_into_errors(world: World) -> None:
    with ToolEnv(world.suite, isolation=Isolation("thread")) as env:
        env.reset(world.tasks("test")[-1])
        assert env.execute("exit_soft", {}, EXECUTION).error == TOOL_EXITED
        assert env.execute("interrupt", {}, EXECUTION).error == TOOL_EXCEPTION
        assert env.execute("unprintable", {}, EXECUTION).error == UNPRINTABLE_RESULT
