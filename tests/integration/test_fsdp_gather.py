"""The full-tensor helpers of ``toolmaster.training.gather`` on an FSDP2-sharded tiny model, 2 gloo processes.

Each test spawns two processes (``torch.multiprocessing``) that shard the same tiny Llama over a CPU mesh and
check, on every rank, what the vLLM weight sync, the HF export and generation with the policy rely on.
"""

from __future__ import annotations

import os
import socket
import traceback
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from peft import LoraConfig, get_peft_model

from toolmaster.models import load_model
from toolmaster.samplers.vllm_engine import base_state_dict
from toolmaster.training.export import merge_lora_state
from toolmaster.training.gather import full_state_dict, gathered, is_sharded, iter_full_weights
from toolmaster.training.sharding import shard_model, shard_units

WORLD = 2
PASSED = "passed"  # the queue's key for a check that went through on a rank (its name is the value)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tiny(lora: bool = False) -> Any:
    torch.manual_seed(0)
    model = load_model(
        source="tiny", dtype="float32", device="cpu", tiny_hidden_size=64, tiny_num_layers=2
    ).model
    if lora:
        config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        model = get_peft_model(model, config)
    return model


def _worker(rank: int, port: int, errors: Any) -> None:
    """Every check in turn (one process group for all: spawning is the slow part on a small CPU)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        for name, check in CHECKS.items():
            try:
                check(rank)
                errors.put((PASSED, name))
            except BaseException:  # noqa: BLE001 - reported to the parent process
                errors.put((name, f"rank {rank}:\n{traceback.format_exc()}"))
                raise  # a failed collective would leave the other rank waiting: stop both
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def failures() -> dict[str, list[str]]:
    """What each check reported, from two spawned gloo ranks: tracebacks by check name, and under ``PASSED``
    one entry per check and rank that went through. A rank killed by a signal (gloo once aborted a rank with
    "terminate called without an active exception" during a full suite) is retried once on a new port;
    after every check passed on every rank, a signal in teardown only is tolerated."""
    for attempt in range(2):
        ctx = mp.get_context("spawn")
        errors = ctx.SimpleQueue()
        killed: mp.ProcessExitedException | None = None
        try:
            mp.start_processes(_worker, args=(_free_port(), errors), nprocs=WORLD, start_method="spawn")
        except mp.ProcessRaisedException:
            pass  # the queue says which check failed
        except mp.ProcessExitedException as exc:
            killed = exc
        reported: dict[str, list[str]] = {}
        while not errors.empty():
            name, text = errors.get()
            reported.setdefault(name, []).append(text)
        if killed is None or len(reported.get(PASSED, [])) == WORLD * len(CHECKS):
            return reported
        if attempt == 1:
            raise killed
    raise AssertionError("unreachable")


def _sharded(lora: bool = False) -> tuple[Any, dict[str, torch.Tensor]]:
    """A sharded tiny model and the reference full state (an identical unsharded copy)."""
    from torch.distributed.device_mesh import init_device_mesh

    reference = {name: t.clone() for name, t in base_state_dict(_tiny(lora)).items()}
    model = shard_model(_tiny(lora), init_device_mesh("cpu", (WORLD,)))
    assert is_sharded(model)
    return model, reference


# ------------------------------------------------------------------------------------------- checks
def check_buckets(rank: int) -> None:
    model, reference = _sharded()
    largest = max(t.numel() for t in reference.values())
    bucket = 20_000
    assert bucket < largest < sum(t.numel() for t in reference.values())
    gather = iter_full_weights(base_state_dict(model).items(), bucket_numel=bucket)
    seen: dict[str, int] = {}
    for name, tensor in gather:
        seen[name] = seen.get(name, 0) + 1
        assert tensor.shape == reference[name].shape, name
        assert torch.equal(tensor, reference[name]), name
        del tensor  # a consumer that keeps nothing (vLLM copies into its own buffers)
    assert seen == dict.fromkeys(reference, 1), "every tensor exactly once"
    assert gather.buckets > 2
    assert gather.peak_numel <= max(bucket, largest), (gather.peak_numel, bucket, largest)
    assert gather.peak_numel < sum(t.numel() for t in reference.values()) / 2


def check_full_state_on_rank_zero(rank: int) -> None:
    model, reference = _sharded()
    state = full_state_dict(model)
    assert state is not None
    if rank == 0:
        assert set(reference) <= set(state)
        for name, tensor in reference.items():
            assert state[name].device.type == "cpu" and torch.equal(state[name], tensor), name
    else:
        assert state == {}


def check_lora_merge_from_gathered_state(rank: int) -> None:
    model, _ = _sharded(lora=True)
    state = full_state_dict(model)
    unsharded = _tiny(lora=True)
    expected = unsharded.merge_and_unload().state_dict()
    if rank == 0:
        merged = merge_lora_state(model, state)
        assert set(merged) == set(expected)
        for name, tensor in expected.items():
            torch.testing.assert_close(merged[name], tensor, rtol=1e-5, atol=1e-6, msg=name)


def check_gathered_allows_uneven_forwards(rank: int) -> None:
    model, _ = _sharded()
    ids = torch.tensor([[1, 2, 3, 4]])
    expected = _tiny()(ids).logits
    with gathered(model), torch.no_grad():
        for _ in range(1 + 3 * rank):  # rank 1 runs three more forwards than rank 0: no collective inside
            logits = model(ids).logits
    torch.testing.assert_close(logits, expected)
    assert all(len(list(u.parameters())) for u in shard_units(model))
    # resharded afterwards: training forwards and backwards still work in lockstep
    model(ids).logits.sum().backward()


CHECKS = {
    "buckets": check_buckets,
    "full_state": check_full_state_on_rank_zero,
    "lora_merge": check_lora_merge_from_gathered_state,
    "gathered": check_gathered_allows_uneven_forwards,
}


@pytest.mark.parametrize("check", list(CHECKS))
def test_sharded_tiny_model_on_two_gloo_processes(check, failures):
    assert check not in failures, "\n".join(failures[check])
    assert failures.get(PASSED, []).count(check) == WORLD, f"{check} did not run on every rank"
    failed = sorted(name for name in failures if name != PASSED)
    assert not failed, f"an earlier check failed: {failed}"
