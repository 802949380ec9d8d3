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


def test_a_lightning_fit_reshuffles_the_tasks_every_epoch():
    """Lightning sets the epoch on ``batch_sampler.sampler`` only; the plan must still see every epoch."""
    import pytorch_lightning as pl
    import torch

    from toolmaster.envs import Task
    from toolmaster.stages.grpo.data import GRPODataModule

    class Recorder(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.automatic_optimization = False
            self.batches: list[tuple[int, list[str]]] = []

        def training_step(self, batch: list[Task], batch_idx: int) -> None:
            self.batches.append((self.current_epoch, [task.id for task in batch]))

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    tasks = [Task(id=f"t{i}", query="q", answer="a", tool_names=[]) for i in range(6)]
    datamodule = GRPODataModule(tasks, 2, seed=0)
    module = Recorder()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=datamodule)
    order = TaskOrder(6, 2, seed=0)
    for epoch in range(3):
        served = [ids for e, ids in module.batches if e == epoch]
        assert served == [[f"t{i}" for i in batch] for batch in order.batches(epoch)]
    assert order.batches(0) != order.batches(1) != order.batches(2)
