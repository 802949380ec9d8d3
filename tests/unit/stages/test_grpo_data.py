"""GRPO task batches: the task order served by the shared resumable sampler, sharded over ranks."""

from __future__ import annotations

from toolmaster.stages.grpo.data import TaskOrder
from toolmaster.training.loaders import ResumableBatchSampler


def test_task_batches_shard_disjointly_over_ranks_and_resume():
    ranks = [ResumableBatchSampler(TaskOrder(10, 2, seed=3, num_replicas=2, rank=r)) for r in range(2)]
    for epoch in (0, 1):
        for sampler in ranks:
            sampler.set_epoch(epoch)
        shards = [[i for batch in sampler for i in batch] for sampler in ranks]
        assert not set(shards[0]) & set(shards[1])  # a task (and so its group) is on one rank only
        assert len(shards[0]) == len(shards[1]) == 4  # 5 per rank: the short last batch is dropped
        assert all(len(batch) == 2 for sampler in ranks for batch in sampler)
    assert ranks[0].batches(0) != ranks[0].batches(1)  # reshuffled per epoch
    ranks[0].set_epoch(1)
    ranks[0].resume_at(1, 1)
    assert list(ranks[0]) == ranks[0].batches(1)[1:]
    assert list(ranks[0]) == ranks[0].batches(1)  # the skip applies once
