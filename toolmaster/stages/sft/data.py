"""SFT data: trajectory JSONL -> token ids with labels on the model's own tokens, length-bucketed batches.

Format (what ``stage=synthesize`` writes; any JSONL in this shape works): one JSON object per line with

- ``messages``: a list of ``{"role": ..., "content": ...}``, roles ``system``, ``user``, ``assistant``, ``tool``;
  at least one ``assistant`` turn; an assistant message may carry ``"train": false`` (context without loss:
  a teacher's deliberate slip, ``toolmaster.teachers.slips``);
- ``tools`` (optional): the episode's tool JSON schemas, rendered by chat formats with native tool support
  (``qwen2.5``); ``chatml`` ignores them (the protocol's system prompt already lists the tools);
- any other keys (``task_id``, ``split``, ``teacher``, ``reward``, ...) are ignored, except that records with
  the same ``task_id`` always land on the same side of the train / validation split.

A malformed line, a record without ``messages`` or without an assistant turn is a ``DataError`` naming
``file:line``. Tokenization is the shared protocol one (``tokenize_conversation``): labels are the token ids
where the loss mask is 1 (assistant content and its end-of-turn token) and -100 everywhere else, so prompt,
tool schema and observation tokens never carry a label. Examples longer than ``max_length`` are cut at the
end (counted and logged); one left with no labelled token is dropped (also counted).

Batching is length bucketing, chosen over packing because it cannot leak attention across samples and
needs no per-sample attention masks or position resets: each epoch (seeded by ``seed`` and the epoch)
shuffles the examples, cuts them into buckets of ``bucket_size``, sorts each bucket by length, cuts the
bucket into batches and shuffles the batches. Under DDP the batch list is padded to a multiple of the world
size by repeating its first batches and each rank takes every ``world``-th batch, so all ranks step the
same number of times. The train loader is resumable (``state_dict`` / ``load_state_dict``): a run resumed
mid-epoch skips the batches it already trained on instead of replaying the epoch from its start.

Departure from the paper: it does not describe its batching; bucketing is this implementation's choice.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset

from toolmaster.algorithms.logprobs import IGNORE_INDEX
from toolmaster.errors import DataError
from toolmaster.io import read_jsonl
from toolmaster.protocol.chat_format import ChatFormat
from toolmaster.protocol.tokenize import SegmentTokenizer, tokenize_conversation
from toolmaster.training.loaders import ResumableBatchSampler, ResumableDataLoader, loop_position

log = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant", "tool")


# ---------------------------------------------------------------------------------------------- records
@dataclass
class SFTRecord:
    """One conversation from the JSONL, with where it came from (``file:line``) for error messages."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    source: str
    group: str  # split key: the task id when present, else the source


def _check_record(record: dict[str, Any], where: str) -> SFTRecord:
    messages = record.get("messages")
    if messages is None:
        raise DataError(f"{where}: no 'messages' key (expected a list of {{role, content}} messages)")
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: 'messages' must be a non-empty list, got {type(messages).__name__}")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise DataError(f"{where}: messages[{i}] must be an object with role and content")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise DataError(f"{where}: messages[{i}].role={role!r} is not one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise DataError(f"{where}: messages[{i}].content must be a string, got {type(content).__name__}")
        if not isinstance(message.get("train", True), bool):
            raise DataError(
                f"{where}: messages[{i}].train must be true or false (false: no loss on the turn)"
            )
    if not any(m["role"] == "assistant" and m.get("train", True) for m in messages):
        raise DataError(f"{where}: no trained assistant turn (nothing to train on)")
    tools = record.get("tools") or []
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise DataError(f"{where}: 'tools' must be a list of JSON schema objects")
    task_id = record.get("task_id")
    group = f"task:{task_id}" if isinstance(task_id, (str, int)) else where
    clean = [
        {"role": m["role"], "content": m["content"], **({"train": False} if m.get("train") is False else {})}
        for m in messages
    ]
    return SFTRecord(messages=clean, tools=tools, source=where, group=group)


def torn_tail(path: str | Path) -> int:
    """Bytes of a torn last line (no newline, not valid JSON: a killed writer's) that ``read_jsonl`` skips."""
    with open(path, "rb") as handle:
        data = handle.read()
    if not data or data.endswith(b"\n"):
        return 0
    tail = data[data.rfind(b"\n") + 1 :]
    try:
        json.loads(tail)
    except ValueError:
        return len(tail)
    return 0


def load_sft_records(path: str | Path) -> list[SFTRecord]:
    """Read and check every record; errors name ``file:line``. A torn last line (killed writer) is skipped
    with a warning naming the file, the line and its size."""
    path = Path(path)
    records = list(read_jsonl(path))  # raises DataError(file:line) on a malformed line
    with open(path, encoding="utf-8") as handle:  # same line splitting as read_jsonl
        numbers = [n for n, line in enumerate(handle.readlines(), start=1) if line.strip()]
    out = [
        _check_record(record, f"{path}:{number}") for record, number in zip(records, numbers, strict=False)
    ]  # a skipped torn tail has a number
    if not out:
        raise DataError(f"{path}: no records")
    cut = torn_tail(path) if len(numbers) > len(records) else 0
    if cut:
        log.warning(
            "sft data %s: skipped its torn last line %d (%d bytes, not valid JSON: a killed writer?); "
            "training on the %d complete records",
            path,
            numbers[-1],
            cut,
            len(out),
        )
    return out


def split_records(
    records: list[SFTRecord], val_fraction: float, seed: int
) -> tuple[list[SFTRecord], list[SFTRecord]]:
    """Seeded train / validation split by group (task id), so a task's samples never straddle the split."""
    groups = sorted({r.group for r in records})
    if val_fraction <= 0 or len(groups) < 2:
        return list(records), []
    random.Random(seed).shuffle(groups)
    n_val = min(len(groups) - 1, max(1, round(val_fraction * len(groups))))
    val_groups = set(groups[:n_val])
    return [r for r in records if r.group not in val_groups], [r for r in records if r.group in val_groups]


# --------------------------------------------------------------------------------------------- examples
@dataclass
class SFTExample:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX where the token is not the model's own
    source: str
    truncated: bool = False

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def num_labels(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE_INDEX)


def encode_record(record: SFTRecord, tokenizer: Any, fmt: ChatFormat, max_length: int) -> SFTExample:
    """Token ids and labels of one conversation through the shared protocol tokenization."""
    ids, mask = tokenize_conversation(tokenizer, fmt, record.messages, record.tools or None)
    truncated = len(ids) > max_length
    ids, mask = ids[:max_length], mask[:max_length]
    labels = [t if m else IGNORE_INDEX for t, m in zip(ids, mask, strict=True)]
    return SFTExample(input_ids=ids, labels=labels, source=record.source, truncated=truncated)


@dataclass
class EncodeStats:
    examples: int = 0
    truncated: int = 0
    dropped: int = 0  # no labelled token left after truncation
    tokens: int = 0
    label_tokens: int = 0
    truncated_sources: list[str] = field(default_factory=list)


def encode_records(
    records: list[SFTRecord], tokenizer: Any, fmt: ChatFormat, max_length: int
) -> tuple[list[SFTExample], EncodeStats]:
    encoder = tokenizer if isinstance(tokenizer, SegmentTokenizer) else SegmentTokenizer(tokenizer)
    stats = EncodeStats()
    out: list[SFTExample] = []
    for record in records:
        example = encode_record(record, encoder, fmt, max_length)
        if example.truncated:
            stats.truncated += 1
            stats.truncated_sources.append(example.source)
        if example.num_labels == 0:
            stats.dropped += 1
            continue
        out.append(example)
        stats.examples += 1
        stats.tokens += len(example)
        stats.label_tokens += example.num_labels
    return out, stats


class SFTDataset(Dataset):
    def __init__(self, examples: list[SFTExample]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> SFTExample:
        return self.examples[index]

    @property
    def lengths(self) -> list[int]:
        return [len(e) for e in self.examples]


def collate(examples: Sequence[SFTExample], pad_id: int, weight: float = 1.0) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example: ``input_ids``, ``attention_mask``, ``labels`` and a batch ``weight``
    (0 for the padding batches that even out validation shards across ranks)."""
    width = max(len(e) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example)
        input_ids[row, :n] = torch.tensor(example.input_ids, dtype=torch.long)
        labels[row, :n] = torch.tensor(example.labels, dtype=torch.long)
        attention_mask[row, :n] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "weight": torch.tensor(float(weight)),
    }


# ---------------------------------------------------------------------------------------------- batching
def _shard(batches: list[list[int]], num_replicas: int, rank: int) -> list[list[int]]:
    if num_replicas == 1 or not batches:
        return batches
    total = math.ceil(len(batches) / num_replicas) * num_replicas
    padded = batches + [batches[i % len(batches)] for i in range(total - len(batches))]
    return padded[rank::num_replicas]


class LengthBuckets:
    """The SFT batch plan: seeded length-bucketed batches of dataset indices (see the module docstring),
    sharded across ranks; served by ``toolmaster.training.loaders.ResumableBatchSampler``."""

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        bucket_size: int,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if batch_size < 1 or bucket_size < 1:
            raise ValueError(f"batch_size and bucket_size must be >= 1, got {batch_size}, {bucket_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.bucket_size = max(bucket_size, batch_size)
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank

    def global_batches(self, epoch: int) -> list[list[int]]:
        """Every rank's batches of an epoch, before sharding (identical on all ranks)."""
        rng = random.Random(self.seed * 1_000_003 + epoch)
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        batches: list[list[int]] = []
        for start in range(0, len(order), self.bucket_size):
            bucket = sorted(order[start : start + self.bucket_size], key=lambda i: (self.lengths[i], i))
            batches.extend(bucket[i : i + self.batch_size] for i in range(0, len(bucket), self.batch_size))
        rng.shuffle(batches)
        return batches

    def batches(self, epoch: int) -> list[list[int]]:
        """This rank's batches of an epoch."""
        return _shard(self.global_batches(epoch), self.num_replicas, self.rank)

    def __len__(self) -> int:
        n = len(self.lengths)
        per_bucket = [min(self.bucket_size, n - s) for s in range(0, n, self.bucket_size)]
        total = sum(math.ceil(b / self.batch_size) for b in per_bucket)
        return math.ceil(total / self.num_replicas)


class _Batches(Dataset):
    """Precomputed validation batches: item i is the collated batch i (with its weight)."""

    def __init__(self, dataset: SFTDataset, batches: list[tuple[list[int], float]], pad_id: int) -> None:
        self.dataset, self.batches, self.pad_id = dataset, batches, pad_id

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        indices, weight = self.batches[index]
        return collate([self.dataset[i] for i in indices], self.pad_id, weight)


def validation_batches(
    lengths: Sequence[int], batch_size: int, num_replicas: int = 1, rank: int = 0
) -> list[tuple[list[int], float]]:
    """Length-sorted validation batches for one rank; padding batches (weight 0) even out the shards, so
    each example counts exactly once in the reduced loss."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if not batches:
        return []
    total = math.ceil(len(batches) / num_replicas) * num_replicas
    weighted = [(b, 1.0) for b in batches] + [(batches[0], 0.0)] * (total - len(batches))
    return weighted[rank::num_replicas]


# -------------------------------------------------------------------------------------------- datamodule
class SFTDataModule(pl.LightningDataModule):
    """Reads, splits and tokenizes the JSONL once (``setup`` is idempotent) and serves bucketed batches."""

    def __init__(
        self,
        path: str | Path,
        tokenizer: Any,
        chat_format: ChatFormat,
        batch_size: int = 8,
        max_length: int = 2048,
        val_fraction: float = 0.05,
        bucket_size: int = 256,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self.tokenizer = tokenizer
        self.chat_format = chat_format
        self.batch_size = batch_size
        self.max_length = max_length
        self.val_fraction = val_fraction
        self.bucket_size = bucket_size
        self.seed = seed
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.train_set: SFTDataset | None = None
        self.val_set: SFTDataset | None = None
        self.stats: dict[str, Any] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        records = load_sft_records(self.path)
        train_records, val_records = split_records(records, self.val_fraction, self.seed)
        encoder = SegmentTokenizer(self.tokenizer)
        train, train_stats = encode_records(train_records, encoder, self.chat_format, self.max_length)
        val, val_stats = encode_records(val_records, encoder, self.chat_format, self.max_length)
        if not train:
            raise DataError(
                f"{self.path}: no training example left (all records went to validation or were dropped)"
            )
        self.train_set, self.val_set = SFTDataset(train), SFTDataset(val)
        truncated = train_stats.truncated + val_stats.truncated
        dropped = train_stats.dropped + val_stats.dropped
        self.stats = {
            "records": len(records),
            "train_examples": len(train),
            "val_examples": len(val),
            "truncated": truncated,
            "dropped_no_labels": dropped,
            "max_length": self.max_length,
            "train_tokens": train_stats.tokens,
            "train_label_tokens": train_stats.label_tokens,
            "val_label_tokens": val_stats.label_tokens,
        }
        rank_zero_info(
            f"sft data {self.path}: {len(records)} records -> {len(train)} train / {len(val)} val examples, "
            f"{train_stats.tokens} train tokens ({train_stats.label_tokens} labelled)"
        )
        if truncated:
            first = (train_stats.truncated_sources + val_stats.truncated_sources)[:3]
            rank_zero_info(
                f"truncated {truncated} example(s) longer than max_length={self.max_length} "
                f"(e.g. {', '.join(first)}); dropped {dropped} left without a labelled token"
            )

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def train_sampler(self) -> ResumableBatchSampler:
        assert self.train_set is not None, "call setup() first"
        world, rank = self._world()
        return ResumableBatchSampler(
            LengthBuckets(
                self.train_set.lengths,
                self.batch_size,
                self.bucket_size,
                self.seed,
                num_replicas=world,
                rank=rank,
            )
        )

    def train_dataloader(self) -> ResumableDataLoader:
        self.setup()
        assert self.train_set is not None
        return ResumableDataLoader(
            self.train_set,
            batch_sampler=self.train_sampler(),
            collate_fn=partial(collate, pad_id=self.pad_id),
            position=lambda: loop_position(self.trainer),
        )

    def val_dataloader(self) -> DataLoader | list:
        self.setup()
        if not self.val_set:
            return []
        world, rank = self._world()
        batches = validation_batches(self.val_set.lengths, self.batch_size, world, rank)
        return DataLoader(_Batches(self.val_set, batches, self.pad_id), batch_size=None)
