"""The OpenAI-compatible teacher against a real chat-completions server on loopback serving SmolLM2.

The server (tests/helpers/chat_server.py) is a real HTTP server in this process's threads, serving the real
SmolLM2-135M-Instruct; faults (429, 500, slow answers) are injected per request.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.chat_server import ChatServer

from toolmaster.errors import ConfigError
from toolmaster.io import read_jsonl
from toolmaster.protocol import get_chat_format
from toolmaster.teachers.base import PlayRequest
from toolmaster.teachers.openai import OpenAIEngine, OpenAITeacher, TeacherError, restore_closing_tag
from toolmaster.worlds.toolworld import build_toolworld

pytestmark = pytest.mark.slow
FMT = get_chat_format("chatml")


@pytest.fixture(scope="module")
def server(smollm2):
    with ChatServer(smollm2.model, smollm2.tokenizer, slow_s=20.0) as srv:
        yield srv


def _teacher(server, **kw) -> OpenAITeacher:
    options = dict(
        base_url=server.base_url,
        model="smollm2",
        api_key_env=None,
        concurrency=2,
        max_retries=4,
        backoff_s=0.05,
        timeout_s=20.0,
        temperature=0.0,
        max_new_tokens=24,
        max_turns=2,
    )
    options.update(kw)
    return OpenAITeacher(**options)


def test_plays_real_episodes_through_the_loop(server, smollm2_tokenizer):
    world = build_toolworld(seed=0, n_train=4, n_test=2)
    tasks = world.tasks("train")[:2]
    before = server.requests
    trajs = _teacher(server).play(PlayRequest(world, tasks, 2, FMT, tokenizer=smollm2_tokenizer))
    assert [t.task_id for t in trajs] == [t.id for t in tasks]
    for t in trajs:
        assert t.source == "openai:smollm2" and t.turns >= 1
        assert t.messages[0]["role"] == "system" and t.messages[2]["role"] == "assistant"
    assert server.requests - before == sum(t.turns for t in trajs)


def test_retries_429_500_and_slow_answers(server, smollm2_tokenizer):
    world = build_toolworld(seed=0, n_train=4, n_test=2)
    # The timeout must cut the slow answer (20 s) yet leave the real 24-token generation ample time on a loaded
    # CI box (a 4 s timeout cut a real generation there once).
    teacher = _teacher(server, timeout_s=12.0, concurrency=1, max_turns=1)
    server.faults.extend(["429", "500", "slow", "503"])
    trajs = teacher.play(PlayRequest(world, world.tasks("train")[:1], 2, FMT, tokenizer=smollm2_tokenizer))
    assert len(trajs) == 1 and trajs[0].turns == 1
    assert teacher.engine.retries == 4


def test_non_retryable_status_and_unreachable_endpoint_fail_with_one_line(server, smollm2_tokenizer):
    engine = OpenAIEngine(
        smollm2_tokenizer, FMT.tags, server.base_url, "m", api_key_env=None, max_retries=3, backoff_s=0.01
    )
    server.faults.append("400")
    with pytest.raises(TeacherError, match="answered HTTP 400") as err:
        engine._post({"model": "m", "messages": []})
    assert "\n" not in str(err.value)
    dead = OpenAIEngine(
        smollm2_tokenizer,
        FMT.tags,
        "http://127.0.0.1:9/v1",
        "m",
        api_key_env=None,
        max_retries=1,
        backoff_s=0.01,
        timeout_s=2,
    )
    with pytest.raises(TeacherError, match="failed after 2 attempts") as err:
        dead._post({"model": "m", "messages": []})
    assert "\n" not in str(err.value)


def test_missing_key_is_a_config_error(smollm2_tokenizer, monkeypatch):
    monkeypatch.delenv("TM_UNSET_KEY", raising=False)
    with pytest.raises(ConfigError, match="environment variable TM_UNSET_KEY is not set"):
        OpenAIEngine(smollm2_tokenizer, FMT.tags, "http://127.0.0.1:9/v1", "m", api_key_env="TM_UNSET_KEY")


def test_restore_closing_tag():
    assert restore_closing_tag('<call>{"name": "x", "arguments": {}}', FMT.tags) == (
        '<call>{"name": "x", "arguments": {}}</call>',
        True,
    )
    assert restore_closing_tag("<answer>4</answer>", FMT.tags) == ("<answer>4</answer>", False)
    assert restore_closing_tag("no action", FMT.tags) == ("no action", False)


def test_synthesize_stage_with_key_resumes_after_kill(server, tmp_path):
    """A real synthesis run (openai teacher, authenticated) is SIGKILLed mid-way, then resumed to the end."""
    secret = "sk-test-do-not-log-4242"
    server.api_key = secret
    try:
        cmd = [
            sys.executable,
            "-m",
            "toolmaster",
            "stage=synthesize",
            "teacher=openai",
            f"teacher.base_url={server.base_url}",
            "teacher.model=smollm2",
            "teacher.api_key_env=TM_TEST_KEY",
            "teacher.max_turns=1",
            "teacher.max_new_tokens=16",
            "teacher.concurrency=1",
            "teacher.temperature=1.0",
            "stage.keep=all",
            "stage.chunk_size=1",
            "data.train_limit=6",
            "tools.world.n_train=6",
            f"hydra.run.dir={tmp_path}",
        ]
        env = {**os.environ, "TM_TEST_KEY": secret}
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        data = tmp_path / "data.jsonl"
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if data.exists() and len(data.read_text().splitlines()) >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # simulate the worst case of a kill inside a write: a torn last line
        with open(data, "a") as handle:
            handle.write('{"task_id": "torn')
        resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        records = list(read_jsonl(data, allow_partial_tail=False))
        assert sorted(r["task_id"] for r in records) == sorted({r["task_id"] for r in records})
        assert len(records) == 6
        attempts = list(read_jsonl(data.with_suffix(".attempts.jsonl"), allow_partial_tail=False))
        assert len({a["task_id"] for a in attempts}) == 6
        for path in Path(tmp_path).rglob("*"):
            if path.is_file():
                assert secret not in path.read_text(errors="ignore"), path
    finally:
        server.api_key = None
