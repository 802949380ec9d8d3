"""ToolHop's queries split by query, so that part of the benchmark can be trained on and the rest tested.

ToolHop ships no splits (its evaluation runs all 995 queries), so these are this framework's: the queries are
ordered by a SHA-256 of ``split_seed`` and their id, and the first ``round(test_fraction * n)`` are held out
(at least one when there are two or more queries); the rest are ``train``. A held-out query goes to
``test_seen`` when every one of its tool names also names a tool of some train query (ToolHop builds each
query's tools for that query, so a shared name is a same-named, similar tool, not the same code), else to
``test_unseen``. ``all`` holds every query in file order: the split of ToolHop's own table. The split depends
only on the ids and ``split_seed`` (not on ``seed``), so it is the same for every training seed.
"""

from __future__ import annotations

import hashlib

from toolmaster.worlds.toolhop.records import ToolHopRecord

TRAIN, TEST_SEEN, TEST_UNSEEN, ALL = "train", "test_seen", "test_unseen", "all"
SPLITS = (TRAIN, TEST_SEEN, TEST_UNSEEN, ALL)


def _rank(record: ToolHopRecord, split_seed: int) -> str:
    return hashlib.sha256(f"{split_seed}:{record.id}".encode()).hexdigest()


def split_records(
    records: list[ToolHopRecord], test_fraction: float, split_seed: int
) -> dict[str, list[ToolHopRecord]]:
    """Split name -> its records (in file order within every split)."""
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"tools.world.test_fraction must be in [0, 1], got {test_fraction}")
    n_test = round(test_fraction * len(records))
    if test_fraction > 0 and len(records) >= 2:
        n_test = max(1, min(n_test, len(records) - 1 if test_fraction < 1 else len(records)))
    held_out = {r.id for r in sorted(records, key=lambda r: _rank(r, split_seed))[:n_test]}
    train = [r for r in records if r.id not in held_out]
    train_names = {name for r in train for name in r.tool_names}
    splits: dict[str, list[ToolHopRecord]] = {
        TRAIN: train,
        TEST_SEEN: [],
        TEST_UNSEEN: [],
        ALL: list(records),
    }
    for record in records:
        if record.id in held_out:
            seen = all(name in train_names for name in record.tool_names)
            splits[TEST_SEEN if seen else TEST_UNSEEN].append(record)
    return splits
