"""``stage=grpo``: multi-turn GRPO in the tool environment, as a Lightning module with manual optimization.

``GRPOModule.training_step`` reads as the algorithm; for one batch of ``stage.tasks_per_step`` tasks (per
process) it runs, timing each phase (``train/time/rollout``, ``train/time/score``, ``train/time/update``):

1. rollout: ``stage.group_size`` (G) episodes per task through the configured sampler, multi-turn in the
   environment (trial and execution phases, the trial budget of ``tools.trial_budget``), sampling at
   ``sampler.temperature``; all G episodes of a task are played on the same process;
2. score: the reward group fills each trajectory's ``reward`` and ``reward_components``;
3. advantages: group-relative, ``stage.advantage=grpo`` (mean / std within the group) or ``dr_grpo``
   (mean only); groups whose rewards are all equal get exactly 0;
4. pack: trajectories -> right-padded tensors (``toolmaster.stages.packing``), truncated episodes dropped
   first when ``stage.drop_truncated``;
5. ``stage.mu`` inner updates of the clipped token-level surrogate (``toolmaster.algorithms.grpo_loss``) over
   the model's own tokens only (each trajectory's ``loss_mask``: prompts and observations carry no loss),
   aggregated by ``stage.aggregation`` and computed in micro-batches of ``stage.micro_batch_size`` rows.
   A group's rows stay together, and with ``stage.share_prompts`` (default) the prompt they share runs
   through the model once per micro-batch (``toolmaster.stages.prefix_sharing``): same log-probs and
   gradients, (G - 1) x prompt length fewer tokens of forward and backward per group.

Old log-probs: with ``mu = 1`` and ``stage.old_logprobs=recompute`` they *are* the current log-probs
(``logprobs.detach()``: no extra forward pass, ratio 1, the plain policy gradient); with ``mu > 1`` one
no-grad forward per micro-batch computes them once before the inner loop. ``old_logprobs=sampler`` reuses
the log-probs the sampler recorded while generating instead (no extra pass for any ``mu``). Sampler
log-probs are under ``logits / T`` (T the sampling temperature), so every policy, old and reference
log-prob here is computed from ``logits / T`` as well; the two then differ only by numerics (KV-cache
decoding vs one full forward, batch padding), and the clipped ratio corrects for that gap.

Engines that keep their own copy of the weights (``sampler=vllm``) are synced lazily: every optimizer step
(and a restored checkpoint) marks them stale, and the next rollout, training or validation, first calls
their ``sync_weights``; during the update they sleep where they support it (vLLM on CUDA). The HF engine
decodes with the policy module itself and needs neither.

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
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from toolmaster.algorithms import entropy_from_logits, group_advantages, grpo_loss
from toolmaster.envs.task import Task
from toolmaster.envs.tool import ToolSuite
from toolmaster.errors import ConfigError
from toolmaster.io import append_jsonl, repair_jsonl
from toolmaster.metrics import EpisodeMetrics
from toolmaster.protocol.chat_format import ChatFormat
from toolmaster.rewards import RewardGroup
from toolmaster.samplers.base import GenerationEngine
from toolmaster.samplers.loop import RolloutConfig, rollout
from toolmaster.settings import GRPOSettings
from toolmaster.stages.export import is_peft_model
from toolmaster.stages.packing import PackedBatch, pack_trajectories
from toolmaster.stages.prefix_sharing import (
    plan_prefixes,
    score_columns,
    shared_prefix_logprobs,
    worth_sharing,
)
from toolmaster.stages.schedules import build_scheduler
from toolmaster.stages.sft_data import ResumableDataLoader
from toolmaster.trajectory import Trajectory

log = logging.getLogger(__name__)

TRAJECTORY_LOG = Path("trajectories") / "train.jsonl"
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


# ------------------------------------------------------------------------------------------------ data
class TaskBatchSampler(Sampler[list[int]]):
    """Batches of ``batch_size`` task indices for one process: a seeded ``DistributedSampler`` order (the same
    permutation on every rank, each rank taking its own share), cut into batches. A short final batch is
    dropped unless it is the epoch's only one, so every step has the same number of tasks. ``resume_at``
    skips the batches an interrupted run already trained on."""

    def __init__(
        self, num_tasks: int, batch_size: int, seed: int = 0, num_replicas: int = 1, rank: int = 0
    ) -> None:
        if num_tasks < 1 or batch_size < 1:
            raise ValueError(f"need num_tasks >= 1 and batch_size >= 1, got {num_tasks}, {batch_size}")
        self.order = DistributedSampler(
            range(num_tasks),  # type: ignore[arg-type]  # only len() is used
            num_replicas=num_replicas,
            rank=rank,
            shuffle=True,
            seed=seed,
            drop_last=False,
        )
        self.batch_size = batch_size
        self.epoch = 0
        self._resume: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_at(self, epoch: int, batches: int) -> None:
        self._resume = (epoch, batches)

    def batches(self, epoch: int) -> list[list[int]]:
        self.order.set_epoch(epoch)
        indices = list(iter(self.order))
        batches = [indices[i : i + self.batch_size] for i in range(0, len(indices), self.batch_size)]
        if len(batches) > 1 and len(batches[-1]) < self.batch_size:
            batches.pop()
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        epoch, skip = self.epoch, 0  # a generator: runs after Lightning's set_epoch
        if self._resume is not None and self._resume[0] == epoch:
            skip = self._resume[1]
        self._resume = None
        yield from self.batches(epoch)[skip:]

    def __len__(self) -> int:
        return max(1, self.order.num_samples // self.batch_size)


class TaskLoader(ResumableDataLoader):
    """The SFT stage's resumable loader (Lightning checkpoints its position) over a ``TaskBatchSampler``."""

    def load_state_dict(self, state: dict[str, int]) -> None:
        sampler = self.batch_sampler
        if isinstance(sampler, TaskBatchSampler):
            sampler.resume_at(int(state.get("epoch", 0)), int(state.get("batches", 0)))


class _Items(Dataset):
    def __init__(self, items: Sequence[Any]) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        return self.items[index]


def _as_list(items: list[Any]) -> list[Any]:
    return list(items)


def _identity(item: Any) -> Any:
    return item


class GRPODataModule(pl.LightningDataModule):
    """Train batches are lists of ``Task``; validation items are ``(split, this rank's share of its tasks)``,
    one per split on every rank (possibly an empty share), so all ranks run the same validation loop."""

    def __init__(
        self,
        train_tasks: Sequence[Task],
        tasks_per_step: int,
        seed: int = 0,
        val_tasks: dict[str, list[Task]] | None = None,
    ) -> None:
        super().__init__()
        if not train_tasks:
            raise ConfigError("no training tasks (check data.train_split and data.train_limit)")
        self.train_tasks = list(train_tasks)
        self.tasks_per_step = tasks_per_step
        self.seed = seed
        self.val_tasks = dict(val_tasks or {})

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        return batch  # tasks, not tensors: the module moves what it packs

    def _position(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 0
        return trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def train_dataloader(self) -> TaskLoader:
        world, rank = self._world()
        sampler = TaskBatchSampler(len(self.train_tasks), self.tasks_per_step, self.seed, world, rank)
        return TaskLoader(
            _Items(self.train_tasks), batch_sampler=sampler, collate_fn=_as_list, position=self._position
        )

    def val_dataloader(self) -> DataLoader | list:
        if not self.val_tasks:
            return []
        world, rank = self._world()
        items = [(split, tasks[rank::world]) for split, tasks in self.val_tasks.items()]
        return DataLoader(_Items(items), batch_size=None, collate_fn=_identity)


# ------------------------------------------------------------------------------------------ log-probs
def policy_logprobs(
    model: Any,
    batch: PackedBatch,
    temperature: float,
    with_entropy: bool = False,
    share_prompts: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Log-probs ``[N, T - 1]`` of ``batch.input_ids`` under ``logits / temperature``, aligned with
    ``batch.loss_mask`` (the layout of ``token_logprobs``), and optionally the summed entropy over the loss
    tokens (detached).

    Logits are computed only at columns where some row has a loss token (``logits_to_keep``): prompts and
    observations are most of an episode, and the vocabulary projection plus its float32 log-softmax over
    them would dominate compute and memory. Columns without a loss token in any row hold 0.0; masked entries
    of computed columns hold real values that the loss masks out.

    ``share_prompts``: rows that start from the same prompt (a GRPO group) run it once
    (``toolmaster.stages.prefix_sharing``); same values, less compute.
    """
    mask = batch.loss_mask
    if share_prompts:
        plan = plan_prefixes(batch.input_ids, mask, batch.lengths)
        if worth_sharing(model, plan):
            return shared_prefix_logprobs(
                model, batch.input_ids, batch.attention_mask, mask, plan, temperature, with_entropy
            )
    columns = mask.any(dim=0).nonzero().squeeze(-1)
    if columns.numel() == 0:
        columns = torch.zeros(1, dtype=torch.long, device=mask.device)
    inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
    try:
        logits = model(**inputs, logits_to_keep=columns).logits
    except TypeError:  # a model without logits_to_keep
        logits = model(**inputs).logits
    picked, scaled = score_columns(logits, columns, batch.input_ids[:, columns + 1], temperature)
    full = picked.new_zeros(mask.shape).index_copy(1, columns, picked)
    entropy = None
    if with_entropy:
        with torch.no_grad():
            kept = mask[:, columns]
            entropy = entropy_from_logits(scaled.detach(), kept) * kept.sum()
    return full, entropy


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
        val_config: RolloutConfig | None = None,
        val_splits: Sequence[str] = (),
        max_grad_norm: float | None = None,
        output_dir: str | Path | None = None,
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
        self.rollout_config = replace(rollout_config, n_samples=settings.group_size)
        self.val_config = replace(val_config or rollout_config, temperature=0.0, n_samples=1)
        self.temperature = float(rollout_config.temperature)
        self.max_grad_norm = max_grad_norm
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.max_tokens = min(
            rollout_config.max_turns * rollout_config.max_new_tokens, rollout_config.max_total_tokens
        )
        self._engine = engine
        self._engine_stale = True  # weights changed since the engine last synced (engines that copy them)

        self.trainable_names = {n for n, p in model.named_parameters() if p.requires_grad}
        if not self.trainable_names:
            raise ConfigError("the model has no trainable parameters")
        self.partial_checkpoints = len(self.trainable_names) < sum(1 for _ in model.parameters())
        self.strict_loading = not self.partial_checkpoints

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
        self.forward_passes = 0  # update-phase forward passes (policy, old and reference), for tests

    # ---------------------------------------------------------------------------------- helpers
    @property
    def engine(self) -> GenerationEngine:
        if self._engine is None:
            from toolmaster.samplers.hf import HFEngine

            self._engine = HFEngine(self.model, self.tokenizer, stop_strings=self.fmt.tags.closing_tags())
        return self._engine

    def synced_engine(self) -> GenerationEngine:
        """The engine, first made to serve the current weights if it keeps its own copy (vLLM) and they
        changed (an optimizer step, a restored checkpoint). The HF engine shares the model: nothing to do."""
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
    def reference_model(self) -> Any | None:
        """The module computing reference log-probs: the frozen copy, the policy itself (LoRA, adapter off
        while it runs) or None without a KL term."""
        if not self.has_reference:
            return None
        return self.model if self._reference is None else self._reference.model

    @property
    def grpo_step(self) -> int:
        return self.trainer.global_step // self.settings.mu

    def on_fit_start(self) -> None:
        self._engine_stale = True  # a restored checkpoint replaced the weights the engine started from
        if self._reference is not None:
            self._reference.model.to(self.device)
        if self.output_dir is not None and self.trainer.is_global_zero:
            repair_jsonl(self.output_dir / TRAJECTORY_LOG)  # a killed run may have torn the last line

    def _rollout_seed(self, step: int) -> int:
        return ((self.settings.seed * 1_000_003 + step) * 4_099 + self.global_rank) % (2**31)

    def _reduce_sum(self, values: Sequence[float]) -> list[float]:
        """Sum a few numbers over all processes (one collective)."""
        tensor = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        return self.trainer.strategy.reduce(tensor, reduce_op="sum").tolist()

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
        return policy_logprobs(self.model, batch, self.temperature, with_entropy, self.settings.share_prompts)

    @torch.no_grad()
    def _reference_logprobs(self, batch: PackedBatch) -> Tensor:
        self.forward_passes += 1
        share = self.settings.share_prompts
        if self._reference is not None:
            return policy_logprobs(self._reference.model, batch, self.temperature, share_prompts=share)[0]
        with self.model.disable_adapter():
            return policy_logprobs(self.model, batch, self.temperature, share_prompts=share)[0]

    # --------------------------------------------------------------------------------- the step
    def rollout_tasks(self, tasks: list[Task], step: int) -> list[Trajectory]:
        config = replace(self.rollout_config, seed=self._rollout_seed(step))
        trajectories = rollout(self.synced_engine(), self.tokenizer, self.fmt, self.suite, tasks, config)
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

    def training_step(self, batch: list[Task], batch_idx: int) -> None:
        step = self.grpo_step
        group = self.settings.group_size

        # 1. rollout: G episodes per task, multi-turn in the environment
        started = time.perf_counter()
        trajectories = self.rollout_tasks(batch, step)
        time_rollout = time.perf_counter() - started

        # 2. score
        started = time.perf_counter()
        self.rewards.score(trajectories, {task.id: task for task in batch})
        time_score = time.perf_counter() - started

        # 3. group-relative advantages
        rewards = torch.tensor([float(t.reward or 0.0) for t in trajectories], dtype=torch.float32)
        advantages = group_advantages(rewards, self.settings.advantage, group_size=group)

        # 4. pack into padded tensors (loss mask = the model's own tokens)
        started = time.perf_counter()
        packed = self.pack(trajectories, advantages)

        # 5. mu inner updates (a vLLM engine sleeps meanwhile where it can)
        with self.engine_asleep():
            stats = self.update(packed, episodes=len(trajectories))
        time_update = time.perf_counter() - started

        self._log_step(trajectories, stats, (time_rollout, time_score, time_update))
        every = self.settings.log_trajectories_every
        if every and step % every == 0 and self.output_dir is not None and self.trainer.is_global_zero:
            sample = [
                {**t.to_dict(), "grpo_step": step, "rank": self.global_rank, "advantage": float(a)}
                for t, a in zip(trajectories[:group], advantages[:group].tolist())
            ]
            append_jsonl(self.output_dir / TRAJECTORY_LOG, sample)

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
        self, trajectories: list[Trajectory], stats: dict[str, float], times: tuple[float, float, float]
    ) -> None:
        self.train_metrics.update(trajectories)
        episode = self.train_metrics.compute()  # reduced over processes by torchmetrics
        self.train_metrics.reset()
        names = list(self.rewards.components)
        local = [float(len(trajectories))]
        local += [sum(t.reward_components.get(name, 0.0) for t in trajectories) for name in names]
        local += [stats[k] for k in ("loss", "kl", "clip_fraction", "ratio", "tokens")]
        local += [stats["entropy"], stats["entropy_tokens"], *times]
        total = self._reduce_sum(local)
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
        self.log_dict(values, on_step=True, on_epoch=False)

    # ------------------------------------------------------------------------------- validation
    def validation_step(self, batch: tuple[str, list[Task]], batch_idx: int) -> None:
        split, tasks = batch
        engine = self.synced_engine()
        trajectories = rollout(engine, self.tokenizer, self.fmt, self.suite, tasks, self.val_config)
        self.rewards.score(trajectories, {task.id: task for task in tasks})
        self.val_metrics[split].update(trajectories)

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

    # -------------------------------------------------------------------------------- optimizer
    def configure_optimizers(self) -> Any:
        decay, no_decay = [], []
        for name, param in self.model.named_parameters():
            if param.requires_grad:
                (decay if param.ndim >= 2 and "norm" not in name.lower() else no_decay).append(param)
        groups = [
            {"params": decay, "weight_decay": self.settings.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=self.settings.lr)
        max_steps = self.trainer.max_steps if self.trainer is not None else -1
        total = max(1, math.ceil(max_steps / self.settings.mu)) if max_steps and max_steps > 0 else 1
        scheduler = build_scheduler(
            optimizer, self.settings.schedule, self.settings.warmup_steps, total, self.settings.min_lr_ratio
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.partial_checkpoints:
            keep = {f"model.{name}" for name in self.trainable_names}
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        checkpoint["toolmaster"] = {"trainable_only": self.partial_checkpoints, "stage": "grpo"}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        missing = {f"model.{name}" for name in self.trainable_names} - set(checkpoint["state_dict"])
        if missing:
            raise ConfigError(
                f"checkpoint does not match the model: {len(missing)} trainable tensor(s) missing, "
                f"e.g. {sorted(missing)[0]} (same model and lora settings as the run that wrote it?)"
            )
