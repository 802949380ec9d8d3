"""``stage=grpo``: multi-turn GRPO in the tool environment, as a Lightning module with manual optimization.

``GRPOModule.training_step`` reads as the algorithm; for one batch of ``stage.tasks_per_step`` tasks (per
process) it runs, timing each phase (``train/time/rollout``, ``train/time/score``, ``train/time/update``):

1. rollout: ``stage.group_size`` (G) episodes per task through the configured sampler, multi-turn in the
   environment (trial and execution phases, the trial budget of ``tools.trial_budget``), sampling at
   ``sampler.temperature``; all G episodes of a task are played on the same process;
2. score: the reward group fills each trajectory's ``reward`` and ``reward_components``;
3. advantages: group-relative, ``stage.advantage=grpo`` (mean / std within the group) or ``dr_grpo``
   (mean only); groups whose rewards are all equal get exactly 0;
4. pack: trajectories -> right-padded tensors (``toolmaster.algorithms.packing``), truncated episodes dropped
   first when ``stage.drop_truncated``;
5. ``stage.mu`` inner updates of the clipped token-level surrogate (``toolmaster.algorithms.grpo_loss``) over
   the model's own tokens only (each trajectory's ``loss_mask``: prompts and observations carry no loss),
   aggregated by ``stage.aggregation`` and computed in micro-batches of ``stage.micro_batch_size`` rows.
   A group's rows stay together, and with ``stage.share_prompts`` (default) the prompt they share runs
   through the model once per micro-batch (``toolmaster.algorithms.prefix_sharing``): same log-probs and
   gradients, (G - 1) x prompt length fewer tokens of forward and backward per group.

Dynamic sampling (``stage.filter_groups``: ``reward`` or ``success``; null: off): after scoring, groups whose
total reward (``reward``) or success (``success``) is the same for every episode are dropped, and fresh tasks
from the training list (``task_pool``; never one already tried in the step) are rolled out, a batch of
``tasks_per_step`` per round, for at most ``stage.max_refill_rounds`` rounds, until the step has
``tasks_per_step`` useful groups (``toolmaster.algorithms.group_filter``). The update uses the kept groups
(fewer when the rounds run out; when none is useful, the first round's groups, whose advantages are all 0
under ``signal=reward``). Episode metrics (``train/success`` ...) are over every episode rolled out in the
step, an unbiased sample of the policy; ``train/groups/*`` logs the share of useful groups in the first
round (by success and by reward, logged with the filter off too), the groups kept, the refill rounds and
the episodes rolled out.

Old log-probs: with ``mu = 1`` and ``stage.old_logprobs=recompute`` they *are* the current log-probs
(``logprobs.detach()``: no extra forward pass, ratio 1, the plain policy gradient); with ``mu > 1`` one
no-grad forward per micro-batch computes them once before the inner loop. ``old_logprobs=sampler`` reuses
the log-probs the sampler recorded while generating instead (no extra pass for any ``mu``). Sampler
log-probs are under ``logits / T`` (T the sampling temperature), so every policy, old and reference
log-prob here is computed from ``logits / T`` as well; the two then differ only by numerics (KV-cache
decoding vs one full forward, batch padding), and the clipped ratio corrects for that gap.

Overlapped rollouts (``stage.async_rollout=true``, ``toolmaster.stages.grpo.async_rollout``): just before the
update, a copy of the policy takes the current weights and a background thread rolls out the batch the data
module serves next; the next step trains on it (one step stale, ``train/async/staleness``) with the clipped
ratio against the sampler's log-probs (``stage.old_logprobs=sampler``). HF engine and one process only.

Engines that keep their own copy of the weights (``sampler=vllm``, and the HF engine over a half-precision
copy of the policy that ``stage.rollout_dtype=auto`` sets up under bf16-mixed, ``toolmaster.samplers.
rollout_copy``) are synced lazily: every optimizer step (and a restored checkpoint) marks them stale, and the
next rollout, training or validation, first calls their ``sync_weights``; during the update they sleep where
they support it (vLLM on CUDA). The plain HF engine decodes with the policy module itself and needs neither.

KL to a frozen reference (k3 estimator, ``stage.kl_coef``): the reference exists only when
``kl_coef > 0``. With LoRA it is the base model with the adapter switched off (peft's ``disable_adapter()``
context, no second copy of the weights); without LoRA it is a frozen deep copy of the initial policy, kept
out of the module's state dict (it is rebuilt from the model config on resume). Reference log-probs are
computed once per batch, before the inner updates.

Loss scale: the micro-batch losses add up to the loss of the whole batch on *all* processes (token counts
are summed across processes once per step), so ``token_mean`` is the mean over every loss token of the
step, however rows fall into micro-batches or processes (DDP averages gradients, which is undone).
``dr_grpo_constant`` divides the summed token losses by ``episodes x max generated tokens``, with the
budget ``min(sampler.max_turns * sampler.max_new_tokens, sampler.max_total_tokens)``.

Steps: one GRPO step makes ``mu`` optimizer updates; Lightning's ``global_step`` counts updates, the runner
sets ``trainer.max_steps`` (given in GRPO steps) accordingly, and the learning-rate schedule steps once per
GRPO step. Multi-device: every process rolls out its own tasks (a ``DistributedSampler`` over the task list,
shuffled per epoch); only the last micro-batch of each inner update synchronises gradients; episode metrics
(torchmetrics) and loss statistics are reduced across processes before they are logged.

Configs: the module takes the one sampling config (``RolloutConfig``: the ``sampler`` and ``tools`` limits, at
``sampler.temperature``) and owns what GRPO fixes in it, in one place (``__init__``): the temperature must be
> 0 (a ``ConfigError`` otherwise: greedy groups carry no signal), training rollouts draw ``n_samples =
stage.group_size`` episodes per task, and validation rollouts are greedy, one episode per task (the same
config at ``temperature=0``, ``n_samples=1``). Callers (``stages/grpo/run.py``, the tests) pass the sampling
config as the settings give it and set none of these.

Departures from the paper: its RL recipe is given at the level of "GRPO on multi-turn trial-and-execution
episodes"; the details here (token-level loss over the model's own tokens only, population std in the
advantage, optional Dr. GRPO estimator and constant normaliser, KL off by default, dropping truncated
episodes, the default hyper-parameters for SmolLM2-135M) are this implementation's choices.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from toolmaster.algorithms import group_advantages, grpo_loss
from toolmaster.algorithms.group_filter import refill_indices, useful_groups
from toolmaster.algorithms.logprobs import policy_logprobs
from toolmaster.algorithms.packing import PackedBatch, pack_trajectories
from toolmaster.envs.task import Task
from toolmaster.envs.tool import ToolSuite
from toolmaster.errors import ConfigError
from toolmaster.io import append_jsonl, repair_jsonl, write_jsonl_atomic
from toolmaster.metrics import EpisodeMetrics
from toolmaster.protocol.chat_format import ChatFormat
from toolmaster.rewards import RewardGroup
from toolmaster.samplers.base import GenerationEngine
from toolmaster.samplers.engines import make_engine
from toolmaster.samplers.loop import RolloutConfig, rollout
from toolmaster.samplers.rollout_copy import CastCopyEngine, resolve_rollout_dtype
from toolmaster.settings import GRPOSettings
from toolmaster.stages.grpo.async_rollout import RolloutPrefetcher
from toolmaster.training.checkpoints import TrainableWeights
from toolmaster.training.export import is_peft_model
from toolmaster.training.optim import adamw_with_schedule
from toolmaster.trajectory import Trajectory

log = logging.getLogger(__name__)

TRAJECTORY_LOG = Path("trajectories") / "train.jsonl"
# <split>.jsonl: the latest validation's episodes, in stage=eval's layout
VAL_TRAJECTORY_DIR = Path("val_trajectories")
EPISODE_KEYS = {  # logged name -> EpisodeMetrics key
    "success": "success",
    "valid_format": "valid_format",
    "trial_calls": "trial_calls",
    "execution_calls": "execution_calls",
    "tool_error_rate": "tool_error_rate",
    "self_correction": "self_correction",
    "truncated": "truncated",
    "response_tokens": "generated_tokens",
    "episodes": "episodes",
}


# per-step group statistics of select_groups, summed over processes in this order
GROUP_STATS = ("useful_success", "useful_reward", "first_groups", "rounds", "kept")


@dataclass
class _Frozen:
    """Holds the frozen reference copy outside the module tree (not trained, not checkpointed, not in DDP)."""

    model: Any


# ---------------------------------------------------------------------------------------------- module
class GRPOModule(pl.LightningModule):
    """Multi-turn GRPO on a causal LM (plain or peft); see the module docstring."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        fmt: ChatFormat,
        suite: ToolSuite,
        rewards: RewardGroup,
        rollout_config: RolloutConfig,
        settings: GRPOSettings,
        engine: GenerationEngine | None = None,
        val_splits: Sequence[str] = (),
        max_grad_norm: float | None = None,
        output_dir: str | Path | None = None,
        task_pool: Sequence[Task] = (),
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        if rollout_config.temperature <= 0:
            raise ConfigError("stage=grpo samples its groups: sampler.temperature must be > 0")
        self.model = model
        self.model.train()
        self.tokenizer = tokenizer
        self.fmt = fmt
        self.suite = suite
        self.rewards = rewards
        self.settings = settings
        # the module derives both episode configs from the one it is given (module docstring, "Configs")
        self.rollout_config = replace(rollout_config, n_samples=settings.group_size)
        self.val_config = replace(rollout_config, temperature=0.0, n_samples=1)
        self.temperature = float(rollout_config.temperature)
        self.max_grad_norm = max_grad_norm
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.set_task_pool(task_pool)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.max_tokens = min(
            rollout_config.max_turns * rollout_config.max_new_tokens, rollout_config.max_total_tokens
        )
        self._engine = engine
        self._engine_stale = True  # weights changed since the engine last synced (engines that copy them)

        self.trainable = TrainableWeights(model)
        self.strict_loading = not self.trainable.partial  # LoRA: checkpoints hold only the adapter

        # Reference policy for the KL term: only when it is used.
        self.uses_lora = is_peft_model(model)
        self._reference: _Frozen | None = None
        if settings.kl_coef > 0 and not self.uses_lora:
            frozen = copy.deepcopy(model).eval()
            frozen.requires_grad_(False)
            self._reference = _Frozen(frozen)

        self.train_metrics = EpisodeMetrics()
        self.val_metrics = torch.nn.ModuleDict({split: EpisodeMetrics() for split in val_splits})
        self.last_validation: tuple[int, float] | None = None  # (global step, mean val success)
        self._val_episodes: dict[str, list[Trajectory]] = {}  # this process's share of the running validation
        self.forward_passes = 0  # update-phase forward passes (policy, old and reference), for tests
        self._prefetcher: RolloutPrefetcher | None = None  # stage.async_rollout (on_fit_start makes it)
        self.rollout_dtype: torch.dtype | None = None  # stage.rollout_dtype, resolved in on_fit_start
        # (GRPO step, weights version that played its first round, version it was trained at), for logs and tests
        self.behaviour_versions: list[tuple[int, int, int]] = []
        self._behaviour_version = 0  # weights version that played the current step's first round
        self._background_seconds = 0.0  # that rollout's own wall time when it ran in the background

    # ---------------------------------------------------------------------------------- helpers
    def set_task_pool(self, tasks: Sequence[Task]) -> None:
        """The refill tasks of dynamic sampling (``stage.filter_groups``): the training list, or what the
        pass-rate filter kept of it."""
        self.task_pool = list(tasks)
        self._pool_index = {task.id: i for i, task in enumerate(self.task_pool)}

    @property
    def engine(self) -> GenerationEngine:
        if self._engine is None:
            self._engine = make_engine(None, self.model, self.tokenizer, self.fmt)
        return self._engine

    def synced_engine(self) -> GenerationEngine:
        """The engine, first made to serve the current weights if it keeps its own copy (vLLM, the half-precision
        rollout copy of ``stage.rollout_dtype``) and they changed (an optimizer step, a restored checkpoint). The
        plain HF engine decodes with the policy itself: nothing to do."""
        engine = self.engine
        sync = getattr(engine, "sync_weights", None)
        if sync is not None and self._engine_stale:
            sync(self.model)
        self._engine_stale = False
        return engine

    @contextlib.contextmanager
    def engine_asleep(self) -> Iterator[None]:
        """Release the engine's memory while the policy updates, where the engine supports it."""
        engine = self._engine
        asleep = engine is not None and getattr(engine, "sleep_supported", False)
        if asleep:
            engine.sleep()  # type: ignore[union-attr]
        try:
            yield
        finally:
            if asleep:
                engine.wake_up()  # type: ignore[union-attr]

    @property
    def has_reference(self) -> bool:
        return self.settings.kl_coef > 0

    @property
    def grpo_step(self) -> int:
        return self.trainer.global_step // self.settings.mu

    def on_fit_start(self) -> None:
        self._engine_stale = True  # a restored checkpoint replaced the weights the engine started from
        self._use_rollout_copy()
        if self.settings.async_rollout and self._prefetcher is None:
            self._prefetcher = self._make_prefetcher()
        if self._reference is not None:
            self._reference.model.to(self.device)
        if self.output_dir is not None and self.trainer.is_global_zero:
            repair_jsonl(self.output_dir / TRAJECTORY_LOG)  # a killed run may have torn the last line

    def _use_rollout_copy(self) -> None:
        """``stage.rollout_dtype``: wrap the engine around a half-precision copy of the policy
        (``toolmaster.samplers.rollout_copy``), once; a later fit (a restored checkpoint) re-syncs all of it."""
        if isinstance(self.engine, CastCopyEngine):
            self.engine.mark_restored()
            return
        strategy = type(self.trainer.strategy).__name__
        weights = next(self.model.parameters()).dtype
        dtype = resolve_rollout_dtype(
            self.settings.rollout_dtype, str(self.trainer.precision), self.engine, strategy, weights
        )
        self.rollout_dtype = dtype
        if dtype is not None:
            self._engine = CastCopyEngine(self.engine.for_model, dtype)  # type: ignore[attr-defined]
            log.info(
                "stage.rollout_dtype=%s: rolling out with a %s copy of the policy",
                self.settings.rollout_dtype,
                dtype,
            )

    def _make_prefetcher(self) -> RolloutPrefetcher:
        """The background rollout of ``stage.async_rollout`` (``toolmaster.stages.grpo.async_rollout``)."""
        for_model = getattr(self.engine, "for_model", None)
        if for_model is None:
            raise ConfigError(
                f"stage.async_rollout=true needs the HF engine (sampler=hf); {type(self.engine).__name__} keeps"
                " its own weights"
            )
        if self.trainer.world_size > 1:
            raise ConfigError("stage.async_rollout=true runs on one process (its policy copy is not sharded)")
        return RolloutPrefetcher(self.model, for_model, dtype=self.rollout_dtype)

    def on_fit_end(self) -> None:
        if self._prefetcher is not None:
            self._prefetcher.close()
            self._prefetcher = None

    def on_validation_start(self) -> None:
        if self._prefetcher is not None:  # tool hosts are not shared between threads
            self._prefetcher.wait()

    def _rollout_seed(self, step: int) -> int:
        return ((self.settings.seed * 1_000_003 + step) * 4_099 + self.global_rank) % (2**31)

    def _reduce_sum(self, values: Sequence[float]) -> list[float]:
        """Sum a few numbers over all processes (one collective)."""
        tensor = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        return self.trainer.strategy.reduce(tensor, reduce_op="sum").tolist()

    def _generating(self) -> contextlib.AbstractContextManager:
        """Under a sharded trainer (``fsdp_*``) an engine that decodes with the policy itself (HF) needs it
        gathered, so ranks may run different numbers of forwards; engines with their own weights do not."""
        strategy = getattr(self._trainer, "strategy", None)  # no trainer: a module used on its own
        gather = getattr(strategy, "gathered_for_generation", None)
        if gather is None or hasattr(self.engine, "sync_weights"):
            return contextlib.nullcontext()
        return gather()

    def _no_sync(self) -> contextlib.AbstractContextManager:
        block = getattr(self.trainer.strategy, "block_backward_sync", None)
        return block() if block is not None else contextlib.nullcontext()

    def _count(self, batch: PackedBatch) -> int:
        """What the aggregation divides by, for this micro-batch (summed over all of them: the whole step)."""
        if self.settings.aggregation == "token_mean":
            return int(batch.loss_mask.sum())
        if self.settings.aggregation == "sequence_mean":
            return int(batch.loss_mask.any(dim=-1).sum())
        return len(batch)  # dr_grpo_constant: rows

    def _logprobs(self, batch: PackedBatch, with_entropy: bool = False) -> tuple[Tensor, Tensor | None]:
        self.forward_passes += 1
        share, fused = self.settings.share_prompts, self.settings.fused_head
        return policy_logprobs(self.model, batch, self.temperature, with_entropy, share, fused)

    @torch.no_grad()
    def _reference_logprobs(self, batch: PackedBatch) -> Tensor:
        self.forward_passes += 1
        share, fused = self.settings.share_prompts, self.settings.fused_head
        if self._reference is not None:
            return policy_logprobs(self._reference.model, batch, self.temperature, False, share, fused)[0]
        with self.model.disable_adapter():
            return policy_logprobs(self.model, batch, self.temperature, False, share, fused)[0]

    # --------------------------------------------------------------------------------- the step
    def rollout_tasks(
        self, tasks: list[Task], step: int, round_: int = 0, engine: GenerationEngine | None = None
    ) -> list[Trajectory]:
        """G episodes per task, contiguous in task order; ``round_`` > 0: a refill round of the step;
        ``engine``: another engine than the policy's (the background rollout's copy)."""
        config = replace(self.rollout_config, seed=(self._rollout_seed(step) + 7_919 * round_) % (2**31))
        if engine is not None:
            trajectories = rollout(engine, self.tokenizer, self.fmt, self.suite, tasks, config)
        else:
            with self._generating():
                trajectories = rollout(
                    self.synced_engine(), self.tokenizer, self.fmt, self.suite, tasks, config
                )
        group = self.settings.group_size
        for i, task in enumerate(tasks):  # the advantages assume contiguous groups, in task order
            ids = {t.task_id for t in trajectories[i * group : (i + 1) * group]}
            if ids != {task.id}:
                raise RuntimeError(
                    f"rollout groups are not contiguous: expected {task.id}, got {sorted(ids)}"
                )
        return trajectories

    def pack(self, trajectories: list[Trajectory], advantages: Tensor) -> PackedBatch:
        keep = [not (self.settings.drop_truncated and t.truncated) for t in trajectories]
        if any(keep):
            groups = [i // self.settings.group_size for i in range(len(trajectories))]
            packed = pack_trajectories(trajectories, advantages, self.pad_id, keep=keep, groups=groups)
        else:  # nothing to learn from here, but DDP needs every process to run the same backward passes
            packed = pack_trajectories(trajectories[:1], torch.zeros(1), self.pad_id)
            packed.loss_mask.zero_()
        return packed.to(self.device)

    def _rollout_and_score(
        self, tasks: list[Task], step: int, round_: int
    ) -> tuple[list[Trajectory], float, float]:
        started = time.perf_counter()
        prefetched = None
        if round_ == 0 and self._prefetcher is not None:
            prefetched = self._prefetcher.take([task.id for task in tasks])
        if prefetched is not None:  # played in the background during the previous step's update
            trajectories = prefetched.trajectories
            self._behaviour_version = prefetched.version
            self._background_seconds = prefetched.seconds
        else:
            trajectories = self.rollout_tasks(tasks, step, round_)
            if round_ == 0:
                self._behaviour_version = self.trainer.global_step if self._trainer is not None else 0
                self._background_seconds = 0.0
        time_rollout = time.perf_counter() - started  # with a prefetch: the wait for it
        started = time.perf_counter()
        self.rewards.score(trajectories, {task.id: task for task in tasks})
        return trajectories, time_rollout, time.perf_counter() - started

    def _useful(self, trajectories: list[Trajectory], signal: str) -> list[bool]:
        rewards = [float(t.reward or 0.0) for t in trajectories]
        return useful_groups(
            rewards, [bool(t.correct) for t in trajectories], self.settings.group_size, signal
        )  # type: ignore[arg-type]

    def select_groups(
        self, batch: list[Task], trajectories: list[Trajectory], step: int
    ) -> tuple[list[Trajectory], list[Trajectory], dict[str, float], float, float]:
        """Dynamic sampling (module docstring): (the kept groups' episodes, every episode rolled out in the
        step, group statistics, extra rollout seconds, extra scoring seconds)."""
        group, signal = self.settings.group_size, self.settings.filter_groups
        stats = {
            "useful_success": float(sum(self._useful(trajectories, "success"))),
            "useful_reward": float(sum(self._useful(trajectories, "reward"))),
            "first_groups": float(len(batch)),
            "rounds": 0.0,
        }
        everything, extra_rollout, extra_score = list(trajectories), 0.0, 0.0
        if signal is None:
            stats["kept"] = float(len(batch))
            return trajectories, everything, stats, extra_rollout, extra_score
        grouped = [trajectories[i * group : (i + 1) * group] for i in range(len(batch))]
        kept = [g for g, useful in zip(grouped, self._useful(trajectories, signal)) if useful]
        tried = {self._pool_index[task.id] for task in batch if task.id in self._pool_index}
        rounds = 0
        while len(kept) < len(batch) and rounds < self.settings.max_refill_rounds:
            seed = (self._rollout_seed(step) * 31 + rounds) % (2**31)
            indices = refill_indices(len(self.task_pool), tried, len(batch), seed)
            if not indices:
                break
            rounds += 1
            tried.update(indices)
            tasks = [self.task_pool[i] for i in indices]
            fresh, seconds_rollout, seconds_score = self._rollout_and_score(tasks, step, rounds)
            extra_rollout, extra_score = extra_rollout + seconds_rollout, extra_score + seconds_score
            everything.extend(fresh)
            fresh_groups = [fresh[i * group : (i + 1) * group] for i in range(len(tasks))]
            kept.extend(g for g, useful in zip(fresh_groups, self._useful(fresh, signal)) if useful)
        kept = kept[: len(batch)]
        stats["rounds"], stats["kept"] = float(rounds), float(len(kept))
        selected = [t for g in kept for t in g] if kept else trajectories
        return selected, everything, stats, extra_rollout, extra_score

    def training_step(self, batch: list[Task], batch_idx: int) -> None:
        step = self.grpo_step
        group = self.settings.group_size

        # 1-2. rollout (G episodes per task, multi-turn in the environment) and score; with dynamic
        # sampling, groups without a learning signal are dropped and fresh tasks rolled out instead
        trajectories, time_rollout, time_score = self._rollout_and_score(batch, step, 0)
        trajectories, rolled_out, group_stats, more_rollout, more_score = self.select_groups(
            batch, trajectories, step
        )
        time_rollout, time_score = time_rollout + more_rollout, time_score + more_score

        # 3. group-relative advantages
        rewards = torch.tensor([float(t.reward or 0.0) for t in trajectories], dtype=torch.float32)
        advantages = group_advantages(rewards, self.settings.advantage, group_size=group)

        # 4. pack into padded tensors (loss mask = the model's own tokens)
        started = time.perf_counter()
        packed = self.pack(trajectories, advantages)

        # 5. mu inner updates (a vLLM engine sleeps meanwhile where it can); with stage.async_rollout the
        # next step's batch is rolled out meanwhile, by a copy holding the weights this update starts from
        self.behaviour_versions.append((step, self._behaviour_version, self.trainer.global_step))
        self._prefetch_next(step, batch_idx)
        with self.engine_asleep():
            stats = self.update(packed, episodes=len(trajectories))
        time_update = time.perf_counter() - started

        self._log_step(rolled_out, stats, (time_rollout, time_score, time_update), group_stats)
        if self._prefetcher is not None:
            _, played_at, trained_at = self.behaviour_versions[-1]
            staleness = (trained_at - played_at) // self.settings.mu
            self.log_dict(
                {
                    "train/async/staleness": float(
                        staleness
                    ),  # GRPO steps between behaviour and trained policy
                    "train/time/rollout_background": self._background_seconds,
                },
                on_step=True,
                on_epoch=False,
            )
        every = self.settings.log_trajectories_every
        if every and step % every == 0 and self.output_dir is not None and self.trainer.is_global_zero:
            sample = [
                {**t.to_dict(), "grpo_step": step, "rank": self.global_rank, "advantage": float(a)}
                for t, a in zip(trajectories[:group], advantages[:group].tolist())
            ]
            append_jsonl(self.output_dir / TRAJECTORY_LOG, sample)

    def _prefetch_next(self, step: int, batch_idx: int) -> None:
        """``stage.async_rollout``: refresh the copy to the current weights and start rolling out the batch
        the data module serves next, unless this is the last step."""
        if self._prefetcher is None:
            return
        max_steps = self.trainer.max_steps
        if max_steps >= 0 and (step + 1) * self.settings.mu >= max_steps:
            return
        next_batch = getattr(self.trainer.datamodule, "next_batch", None)
        tasks = next_batch(self.current_epoch, batch_idx) if next_batch is not None else None
        if not tasks:
            return
        version = self.trainer.global_step
        self._prefetcher.refresh(self.model, version)
        self._prefetcher.submit(
            [task.id for task in tasks],
            version,
            lambda engine: self.rollout_tasks(tasks, step + 1, engine=engine),
        )

    def update(self, packed: PackedBatch, episodes: int) -> dict[str, float]:
        """``mu`` optimizer updates on one packed batch; returns this process's summed statistics."""
        settings = self.settings
        optimizer = self.optimizers()
        scheduler = self.lr_schedulers()
        micro = list(packed.micro_batches(settings.micro_batch_size))
        counts = [self._count(mb) for mb in micro]
        world = self.trainer.world_size
        global_count = (
            self._reduce_sum([episodes])[0]
            if settings.aggregation == "dr_grpo_constant"
            else self._reduce_sum([sum(counts)])[0]
        )
        scale = world / max(global_count, 1.0)

        reuse_current = settings.old_logprobs == "recompute" and settings.mu == 1
        if settings.old_logprobs == "recompute" and settings.mu > 1:
            with torch.no_grad():
                for mb in micro:
                    mb.old_logprobs = self._logprobs(mb)[0]
        if self.has_reference:
            for mb in micro:
                mb.ref_logprobs = self._reference_logprobs(mb)

        sums = {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0, "ratio": 0.0, "tokens": 0.0}
        entropy_sum, entropy_tokens = 0.0, 0.0
        for inner in range(settings.mu):
            optimizer.zero_grad()
            for i, (mb, count) in enumerate(zip(micro, counts)):
                last = i == len(micro) - 1  # only the last micro-batch all-reduces the gradients
                with contextlib.nullcontext() if last else self._no_sync():
                    logprobs, entropy = self._logprobs(mb, with_entropy=inner == 0)
                    old = logprobs.detach() if reuse_current else mb.old_logprobs
                    loss, parts = grpo_loss(
                        logprobs,
                        old,
                        mb.advantages,
                        mb.loss_mask,
                        clip_eps=settings.clip_eps,
                        clip_eps_high=settings.clip_eps_high,
                        aggregation=settings.aggregation,
                        max_tokens=self.max_tokens,
                        ref_logprobs=mb.ref_logprobs,
                        kl_coef=settings.kl_coef,
                    )
                    weighted = loss * (count * scale)
                    self.manual_backward(weighted)
                tokens = float(parts["tokens"])
                sums["loss"] += float(weighted.detach()) / world
                sums["kl"] += float(parts["kl"]) * tokens
                sums["clip_fraction"] += float(parts["clip_fraction"]) * tokens
                sums["ratio"] += float(parts["ratio_mean"]) * tokens
                sums["tokens"] += tokens
                if entropy is not None:
                    entropy_sum += float(entropy)
                    entropy_tokens += tokens
            if self.max_grad_norm:
                self.clip_gradients(
                    optimizer, gradient_clip_val=self.max_grad_norm, gradient_clip_algorithm="norm"
                )
            optimizer.step()
            # bf16-mixed: autocast caches the bf16 copies of the weights until its context (the whole
            # training step) ends; the next inner update must see the weights this step just changed.
            torch.clear_autocast_cache()
            self._engine_stale = True
        scheduler.step()
        return {**sums, "entropy": entropy_sum, "entropy_tokens": entropy_tokens}

    def _log_step(
        self,
        trajectories: list[Trajectory],
        stats: dict[str, float],
        times: tuple[float, float, float],
        group_stats: dict[str, float],
    ) -> None:
        self.train_metrics.update(trajectories)
        episode = self.train_metrics.compute()  # reduced over processes by torchmetrics
        self.train_metrics.reset()
        names = list(self.rewards.components)
        local = [float(len(trajectories))]
        local += [sum(t.reward_components.get(name, 0.0) for t in trajectories) for name in names]
        local += [stats[k] for k in ("loss", "kl", "clip_fraction", "ratio", "tokens")]
        local += [stats["entropy"], stats["entropy_tokens"], *times]
        local += [group_stats[k] for k in GROUP_STATS]
        total = self._reduce_sum(local)
        *total, useful_success, useful_reward, first_groups, rounds, kept = total
        n = max(total[0], 1.0)
        self.log("train/reward/total", episode["reward"], on_step=True, on_epoch=False, prog_bar=True)
        values: dict[str, float] = {}
        for i, name in enumerate(names):
            values[f"train/reward/{name}"] = total[1 + i] / n
        offset = 1 + len(names)
        loss, kl, clip, ratio, tokens, entropy, entropy_tokens, *times_sum = total[offset:]
        mu, world = self.settings.mu, self.trainer.world_size
        values.update({f"train/{name}": episode[key] for name, key in EPISODE_KEYS.items()})
        values["train/loss"] = loss / mu
        values["train/kl"] = kl / max(tokens, 1.0)
        values["train/clip_fraction"] = clip / max(tokens, 1.0)
        values["train/ratio"] = ratio / max(tokens, 1.0)
        values["train/loss_tokens"] = tokens / mu
        values["train/entropy"] = entropy / max(entropy_tokens, 1.0)
        for name, value in zip(("rollout", "score", "update"), times_sum):
            values[f"train/time/{name}"] = value / world
        values["train/groups/useful_success"] = useful_success / max(first_groups, 1.0)
        values["train/groups/useful_reward"] = useful_reward / max(first_groups, 1.0)
        values["train/groups/kept"] = kept / world
        values["train/groups/refill_rounds"] = rounds / world
        values["train/groups/episodes"] = n
        self.log_dict(values, on_step=True, on_epoch=False)

    # ------------------------------------------------------------------------------- validation
    def validation_step(self, batch: tuple[str, list[Task]], batch_idx: int) -> None:
        split, tasks = batch
        engine = self.synced_engine()
        with self._generating():
            trajectories = rollout(engine, self.tokenizer, self.fmt, self.suite, tasks, self.val_config)
        self.rewards.score(trajectories, {task.id: task for task in tasks})
        self.val_metrics[split].update(trajectories)
        self._val_episodes.setdefault(split, []).extend(trajectories)

    def on_validation_epoch_end(self) -> None:
        successes = []
        for split, metric in self.val_metrics.items():
            values = metric.compute()  # reduced over processes
            metric.reset()
            successes.append(values["success"])
            if self.trainer.sanity_checking:
                continue
            for name, key in EPISODE_KEYS.items():
                self.log(f"val/{split}/{name}", values[key], sync_dist=True)
            self.log(f"val/{split}/reward", values["reward"], sync_dist=True)
        if successes and not self.trainer.sanity_checking:
            mean = sum(successes) / len(successes)
            self.log("val/success", mean, sync_dist=True)
            if self.trainer.state.fn == "fit":
                self.last_validation = (self.trainer.global_step, mean)
        self._write_val_episodes()

    def _write_val_episodes(self) -> None:
        """Every episode of this validation, gathered from all processes, to ``val_trajectories/<split>.jsonl``
        (replacing the previous validation's: after the run they hold the final validation, the episodes behind
        ``metrics.json``). Collective under DDP: every process calls it at the end of every validation."""
        local, self._val_episodes = self._val_episodes, {}
        if self.trainer.sanity_checking or self.output_dir is None:
            return
        records = {split: [t.to_dict() for t in trajs] for split, trajs in local.items()}
        parts = [records]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            parts = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(parts, records)
        if not self.trainer.is_global_zero:
            return
        for split in self.val_metrics:
            episodes = [record for part in parts if part for record in part.get(split, [])]
            write_jsonl_atomic(self.output_dir / VAL_TRAJECTORY_DIR / f"{split}.jsonl", episodes)

    # -------------------------------------------------------------------------------- optimizer
    def configure_optimizers(self) -> Any:
        max_steps = self.trainer.max_steps if self.trainer is not None else -1
        total = max(1, math.ceil(max_steps / self.settings.mu)) if max_steps and max_steps > 0 else 1
        settings = self.settings
        return adamw_with_schedule(
            self.model,
            settings.lr,
            settings.weight_decay,
            settings.schedule,
            settings.warmup_steps,
            total,
            settings.min_lr_ratio,
        )

    # ------------------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.trainable.on_save(checkpoint, stage="grpo")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.trainable.on_load(checkpoint)
