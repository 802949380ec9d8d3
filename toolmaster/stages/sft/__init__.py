"""``stage=sft``: supervised fine-tuning on trajectory JSONL; ``module`` (the loss and the LightningModule),
``data`` (records -> tokens -> length-bucketed batches), ``run`` (config -> trained, exported model)."""

from toolmaster.stages.sft.run import run

__all__ = ["run"]
