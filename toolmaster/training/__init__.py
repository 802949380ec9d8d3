"""Lightning plumbing the training stages share, as plain functions and small classes.

``trainer`` builds the Lightning Trainer (checkpoint callbacks, validation cadence) and runs fit with the final
validation; ``checkpoints`` resolves ``stage.resume``, writes the final checkpoint and keeps checkpoints to the
trainable weights; ``optim`` builds AdamW with its parameter groups and schedule; ``loaders`` is the one
resumable batch sampler and its loader; ``precision``, ``schedules`` and ``export`` do what they say. Nothing
here imports a stage (``tests/test_architecture.py``).
"""
