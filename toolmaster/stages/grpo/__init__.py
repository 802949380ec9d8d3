"""``stage=grpo``: multi-turn GRPO in the tool environment; ``module`` (the algorithm as a LightningModule),
``data`` (task batches and validation splits), ``run`` (config -> trained, exported model)."""

from toolmaster.stages.grpo.run import run

__all__ = ["run"]
