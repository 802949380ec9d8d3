"""SFT data: labels only on the model's own tokens, truncation, bucketing, sharding and file errors."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers.sft_conversations import TOOLS, episode, write_dataset

from toolmaster.errors import DataError
from toolmaster.protocol import get_chat_format
from toolmaster.stages.sft.data import (
    IGNORE_INDEX,
    LengthBuckets,
    SFTDataModule,
    SFTRecord,
    collate,
    encode_record,
    encode_records,
    load_sft_records,
    split_records,
    validation_batches,
)
from toolmaster.training.loaders import ResumableBatchSampler

END = "<|im_end|>"


def _record(i: int) -> SFTRecord:
    data = episode(i)
    return SFTRecord(messages=data["messages"], tools=data["tools"], source=f"mem:{i}", group=data["task_id"])


def _labelled_spans(labels: list[int]) -> list[tuple[int, int]]:
    spans, start = [], None
    for pos, label in enumerate([*labels, IGNORE_INDEX]):
        if label != IGNORE_INDEX and start is None:
            start = pos
        elif label == IGNORE_INDEX and start is not None:
            spans.append((start, pos))
            start = None
    return spans


@pytest.mark.parametrize("format_name", ["chatml", "qwen2.5"])
def test_labels_cover_exactly_the_assistant_turns(tiny_tokenizer, format_name):
    fmt = get_chat_format(format_name)
    tok = tiny_tokenizer
    for i in range(4):
        record = _record(i)
        example = encode_record(record, tok, fmt, max_length=100_000)
        ids, labels = example.input_ids, example.labels
        assert not example.truncated and len(ids) == len(labels)
        # a label, where set, is the token itself (the shift happens in the loss)
        assert all(label in (IGNORE_INDEX, t) for t, label in zip(ids, labels, strict=True))
        # the whole sequence decodes to the rendered conversation (tools rendered natively in qwen2.5)
        rendered = fmt.render(record.messages, record.tools)
        assert tok.decode(ids) == rendered
        assistant = [m["content"] for m in record.messages if m["role"] == "assistant"]
        spans = _labelled_spans(labels)
        assert len(spans) == len(assistant)
        for (start, end), content in zip(spans, assistant, strict=True):
            assert tok.decode(ids[start:end]) == content + END
            # token by token: the tokens just outside the span are the header and the newline after <|im_end|>
            assert tok.decode(ids[:start]).endswith("<|im_start|>assistant\n")
            assert tok.decode(ids[end : end + 1]) == "\n"
        # prompt, tool schemas and observations carry no label
        unlabelled = tok.decode([t for t, label in zip(ids, labels, strict=True) if label == IGNORE_INDEX])
        labelled = tok.decode([t for t in labels if t != IGNORE_INDEX])
        for message in record.messages:
            if message["role"] != "assistant":
                assert message["content"] in unlabelled
                assert message["content"] not in labelled
        for schema in TOOLS:
            assert schema["name"] in unlabelled
            assert schema["description"] not in labelled
        assert "<|im_start|>" not in labelled and "Tools:" not in labelled and "[trial" not in labelled


def test_collate_pads_without_labels():
    examples = encode_records([_record(0), _record(1)], _FakeTokenizer(), get_chat_format("chatml"), 10_000)[
        0
    ]
    batch = collate(examples, pad_id=0)
    lengths = [len(e) for e in examples]
    assert batch["input_ids"].shape == (2, max(lengths))
    for row, n in enumerate(lengths):
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (max(lengths) - n)
        assert (batch["labels"][row, n:] == IGNORE_INDEX).all()
        assert batch["labels"][row, :n].tolist() == examples[row].labels
    assert float(batch["weight"]) == 1.0


class _FakeTokenizer:
    """One id per character: enough for length and masking logic without loading a real tokenizer."""

    pad_token_id = 0
    eos_token_id = 0

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [1 + (ord(c) % 1000) for c in text]}


def test_truncation_is_counted_and_label_free_examples_are_dropped(tiny_tokenizer):
    fmt = get_chat_format("chatml")
    records = [_record(i) for i in range(6)]
    full, _ = encode_records(records, tiny_tokenizer, fmt, 100_000)
    longest = max(len(e) for e in full)
    prompt_len = min(e.labels.index(next(t for t in e.labels if t != IGNORE_INDEX)) for e in full)
    cut = (prompt_len + longest) // 2
    examples, stats = encode_records(records, tiny_tokenizer, fmt, cut)
    assert stats.truncated == sum(len(e) > cut for e in full) > 0
    assert all(len(e) <= cut for e in examples) and stats.dropped == 0
    assert all(e.truncated == (len(f) > cut) for e, f in zip(examples, full, strict=True))
    # a cut inside the prompt leaves nothing to train on: counted as dropped
    examples, stats = encode_records(records, tiny_tokenizer, fmt, prompt_len)
    assert examples == [] and stats.dropped == 6 and stats.truncated == 6


# --------------------------------------------------------------------------------------------- bucketing
def _lengths(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(20, 900) for _ in range(n)]


def buckets(*args: Any, **kwargs: Any) -> ResumableBatchSampler:
    """The SFT train sampler: length buckets served by the shared resumable sampler."""
    return ResumableBatchSampler(LengthBuckets(*args, **kwargs))


def test_bucketing_covers_every_index_once_per_epoch_and_is_seeded():
    lengths = _lengths(103)
    sampler = buckets(lengths, batch_size=4, bucket_size=16, seed=7)
    seen_epochs = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(103))
        assert all(1 <= len(b) <= 4 for b in batches)
        seen_epochs.append(batches)
    assert seen_epochs[0] != seen_epochs[1]  # reshuffled each epoch
    again = buckets(lengths, batch_size=4, bucket_size=16, seed=7)
    again.set_epoch(1)
    assert list(again) == seen_epochs[1]  # deterministic per (seed, epoch)
    other = buckets(lengths, batch_size=4, bucket_size=16, seed=8)
    assert list(other) != seen_epochs[0]


def test_batches_are_length_homogeneous():
    lengths = _lengths(200, seed=1)
    # one bucket holding everything: batches are consecutive runs of the sorted lengths
    whole = buckets(lengths, batch_size=8, bucket_size=1000, seed=0)
    ranges = sorted((min(lengths[i] for i in b), max(lengths[i] for i in b)) for b in whole)
    assert all(prev[1] <= cur[0] for prev, cur in zip(ranges, ranges[1:], strict=False))

    # smaller buckets: far less padding than random batches
    def padded_tokens(batches: list[list[int]]) -> int:
        return sum(max(lengths[i] for i in b) * len(b) for b in batches)

    bucketed = list(buckets(lengths, batch_size=8, bucket_size=64, seed=0))
    order = list(range(200))
    random.Random(0).shuffle(order)
    unsorted = [order[i : i + 8] for i in range(0, 200, 8)]
    assert padded_tokens(bucketed) < 0.8 * padded_tokens(unsorted)
    for batch in bucketed:  # each batch is a consecutive run of its bucket's sorted lengths
        assert [lengths[i] for i in batch] == sorted(lengths[i] for i in batch)


def test_sharding_gives_every_rank_the_same_number_of_batches():
    lengths = _lengths(37, seed=2)
    ranks = [buckets(lengths, 4, 16, seed=3, num_replicas=2, rank=r) for r in range(2)]
    per_rank = [list(s) for s in ranks]
    assert len(per_rank[0]) == len(per_rank[1]) == len(ranks[0]) == len(ranks[1])
    covered = {i for batches in per_rank for b in batches for i in b}
    assert covered == set(range(37))
    single = LengthBuckets(lengths, 4, 16, seed=3).global_batches(0)
    assert per_rank[0] == single[0::2][: len(per_rank[0])]


def test_resume_skips_consumed_batches_once():
    lengths = _lengths(40, seed=4)
    sampler = buckets(lengths, 4, 8, seed=0)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.resume_at(2, 3)
    assert list(sampler) == full[3:]
    assert list(sampler) == full  # only once
    sampler.resume_at(1, 3)  # another epoch: nothing skipped in epoch 2
    assert list(sampler) == full


def test_validation_batches_count_each_example_once_across_ranks():
    lengths = _lengths(11, seed=5)
    shards = [validation_batches(lengths, 4, num_replicas=3, rank=r) for r in range(3)]
    assert len({len(s) for s in shards}) == 1
    weighted = [i for shard in shards for batch, w in shard if w == 1.0 for i in batch]
    assert sorted(weighted) == list(range(11))


# ------------------------------------------------------------------------------------------------ files
def test_split_keeps_tasks_together_and_is_seeded():
    records = [SFTRecord([], [], f"f:{i}", f"task:{i // 3}") for i in range(30)]
    train, val = split_records(records, 0.2, seed=1)
    assert len(train) + len(val) == 30 and val
    assert {r.group for r in train}.isdisjoint({r.group for r in val})
    assert [r.source for r in split_records(records, 0.2, seed=1)[1]] == [r.source for r in val]
    assert split_records(records, 0.0, seed=1) == (records, [])


def test_datamodule_reads_the_documented_format(tmp_path, tiny_tokenizer):
    path = write_dataset(tmp_path / "data.jsonl", 10)
    dm = SFTDataModule(
        path, tiny_tokenizer, get_chat_format("chatml"), batch_size=3, val_fraction=0.2, seed=0
    )
    dm.setup()
    assert dm.stats["records"] == 10 and dm.stats["train_examples"] == 8 and dm.stats["val_examples"] == 2
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert batch["input_ids"].dtype == torch.long
    val = list(dm.val_dataloader())
    assert sum(int(b["input_ids"].shape[0]) for b in val) == 2


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


GOOD = json.dumps(
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "<answer>x</answer>"}]}
)


@pytest.mark.parametrize(
    "bad,needle",
    [
        ('{"messages": [', "not valid JSON"),
        (json.dumps({"task_id": "t1", "split": "train"}), "no 'messages'"),
        (
            json.dumps({"messages": [{"role": "user", "content": "only a question"}]}),
            "no trained assistant turn",
        ),
        (json.dumps({"messages": [{"role": "robot", "content": "beep"}]}), "messages[0].role='robot'"),
        (
            json.dumps({"messages": [{"role": "assistant", "content": 3}]}),
            "messages[0].content must be a string",
        ),
        (json.dumps({"messages": "hello"}), "'messages' must be a non-empty list"),
        ('["a", "list"]', "expected a JSON object"),
    ],
)
def test_bad_records_name_file_and_line(tmp_path, bad, needle):
    path = _write(tmp_path / "data.jsonl", [GOOD, "", GOOD, bad, GOOD])  # the blank line still counts
    with pytest.raises(DataError) as err:
        load_sft_records(path)
    message = str(err.value)
    assert message.startswith(f"{path}:4: ") and needle in message, message


def test_good_file_loads_and_torn_tail_is_skipped_with_a_warning(tmp_path, caplog):
    path = tmp_path / "data.jsonl"
    path.write_text(GOOD + "\n\n" + GOOD + "\n" + '{"messages": [{"ro', encoding="utf-8")
    with caplog.at_level("WARNING", logger="toolmaster.stages.sft.data"):
        records = load_sft_records(path)
    assert [r.source for r in records] == [f"{path}:1", f"{path}:3"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        f"sft data {path}: skipped its torn last line 4 (18 bytes, not valid JSON: a killed writer?); "
        "training on the 2 complete records"
    ]
    caplog.clear()
    path.write_text(GOOD + "\n" + GOOD, encoding="utf-8")  # a complete last line without its newline is kept
    with caplog.at_level("WARNING", logger="toolmaster.stages.sft.data"):
        assert len(load_sft_records(path)) == 2
    assert not caplog.records
    with pytest.raises(DataError, match="file not found"):
        load_sft_records(tmp_path / "missing.jsonl")
    with pytest.raises(DataError, match="no records"):
        load_sft_records(_write(tmp_path / "empty.jsonl", [""]))
