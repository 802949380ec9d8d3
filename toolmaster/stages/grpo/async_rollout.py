"""Overlapped rollouts for ``stage=grpo`` (``stage.async_rollout=true``): step n+1's episodes play while step n updates.

A background thread plays the next step's tasks with the HF engine over a *rollout copy* of the policy (the
policy itself is being updated meanwhile, so it cannot decode with it). Before each update the copy takes the
policy's current weights (version v: the number of optimizer updates so far), the thread rolls out the next
step's batch, and that batch is trained on at version v + mu: its behaviour policy is exactly one GRPO step
behind. Never more: the copy is refreshed before every submission and at most one rollout is in flight
(``RolloutPrefetcher.submit`` refuses a second one, and ``take`` reports each batch's version so the module
logs the staleness of every step). The loss corrects for the lag with the clipped PPO ratio against the
sampler's recorded log-probs, so ``stage.old_logprobs=sampler`` is required (``recompute`` would make the
ratio 1 and the stale samples uncorrected).

Which batch comes next is read from the data module's plan (``GRPODataModule.next_batch``); when the batch
Lightning then hands over differs (an epoch boundary the plan did not foresee, a resumed run), the prefetched
episodes are dropped and the step rolls out synchronously: the prediction only affects speed, never what is
trained on. Refill rounds of dynamic sampling, validation and the first step roll out synchronously with the
policy (staleness 0); validation first waits for an in-flight rollout (tool hosts are not shared between threads).

Limits: the HF engine only (vLLM keeps its own weights and would need its own overlap), one process (the copy
is not sharded), the copy costs one more set of weights in memory, and a resumed run cannot resume the
in-flight rollout (its first step rolls out synchronously). With ``stage.rollout_dtype`` the copy is made in that
dtype and decodes without autocast (``toolmaster.samplers.rollout_copy``), and the synchronous rollouts use the
module's own half-precision copy. On CPU the two threads share the cores, so the
overlap gains little or nothing (measured in docs/performance.md); on a GPU the decode of one thread fills
the gaps of the other's update (``python -m toolmaster.bench.gpu_check`` times both paths).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from toolmaster.samplers.base import GenerationEngine
from toolmaster.samplers.rollout_copy import cast_copy
from toolmaster.trajectory import Trajectory

Play = Callable[[GenerationEngine], list[Trajectory]]


@dataclass
class Prefetched:
    """A finished background rollout: its episodes, the weights version that played them, its wall time."""

    trajectories: list[Trajectory]
    version: int
    seconds: float


@dataclass
class _Pending:
    task_ids: list[str]
    version: int
    future: Future[tuple[list[Trajectory], float]]


def _autocast_state(device_type: str) -> tuple[bool, torch.dtype]:
    """The calling thread's autocast setting for ``device_type`` (autocast is thread-local)."""
    return torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)


class RolloutPrefetcher:
    """One background rollout at a time, played by an engine over a private copy of the policy."""

    def __init__(
        self,
        policy: torch.nn.Module,
        make_engine: Callable[[Any], GenerationEngine],
        dtype: torch.dtype | None = None,
    ) -> None:
        """``dtype``: the copy's parameters in this dtype (``stage.rollout_dtype``), decoded without autocast;
        None: the policy's dtype, under the caller's autocast setting."""
        self.copy = cast_copy(policy, dtype)
        self.cast = dtype is not None
        self.engine = make_engine(self.copy)
        self.device_type = next(self.copy.parameters()).device.type
        self.copy_version = -1  # weights version the copy holds (-1: none yet)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="toolmaster-rollout")
        self._pending: _Pending | None = None

    @property
    def in_flight(self) -> bool:
        return self._pending is not None

    @torch.no_grad()
    def refresh(self, policy: torch.nn.Module, version: int) -> None:
        """Copy the policy's weights (and buffers) into the rollout copy, in place; it now holds ``version``."""
        if self._pending is not None:
            raise RuntimeError("the rollout copy cannot change while a rollout is in flight")
        for target, source in zip(self.copy.parameters(), policy.parameters(), strict=True):
            target.copy_(source)
        for target, source in zip(self.copy.buffers(), policy.buffers(), strict=True):
            target.copy_(source)
        self.copy_version = version

    def submit(self, task_ids: Sequence[str], version: int, play: Play) -> None:
        """Start ``play(engine)`` in the background; the copy must hold ``version`` (``refresh`` first)."""
        if self._pending is not None:
            raise RuntimeError("a rollout is already in flight: take() it first (at most one is)")
        if version != self.copy_version:
            raise RuntimeError(f"the rollout copy holds version {self.copy_version}, not {version}")
        enabled, dtype = _autocast_state(self.device_type)  # the thread does not inherit it
        enabled = enabled and not self.cast  # a cast copy computes in its own dtype

        def run() -> tuple[list[Trajectory], float]:
            started = time.perf_counter()
            with torch.autocast(self.device_type, dtype=dtype, enabled=enabled):
                trajectories = play(self.engine)
            return trajectories, time.perf_counter() - started

        self._pending = _Pending(list(task_ids), version, self._executor.submit(run))

    def wait(self) -> None:
        """Block until the in-flight rollout (if any) has finished; its result stays to be taken."""
        if self._pending is not None:
            self._pending.future.exception()

    def take(self, task_ids: Sequence[str]) -> Prefetched | None:
        """The in-flight rollout's result if it played exactly ``task_ids``, else None (it is dropped).
        An error raised in the background thread is raised here."""
        pending, self._pending = self._pending, None
        if pending is None:
            return None
        trajectories, seconds = pending.future.result()
        if pending.task_ids != list(task_ids):
            return None
        return Prefetched(trajectories, pending.version, seconds)

    def close(self) -> None:
        """Wait for the in-flight rollout and stop the thread (its result is dropped)."""
        self.wait()
        self._pending = None
        self._executor.shutdown(wait=True)
