"""Stages: eval now; synthesize, sft and grpo build on the same protocol, sampler and metrics."""
