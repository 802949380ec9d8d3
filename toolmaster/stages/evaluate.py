"""``stage=eval``: roll a model out over chosen splits and write metrics, tables and trajectories.

Writes to the run directory: ``metrics.json`` (split -> metrics), ``results.md`` (one markdown table row
per split) and ``trajectories/<split>.jsonl`` (every episode, tokens included). Greedy by default. All splits
are rolled out together in one continuously batched rollout (see ``evaluate_splits``).
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from toolmaster.build import (
    build_engine,
    build_model,
    build_rewards,
    build_settings,
    build_world,
    chat_format_of,
    eval_splits_of,
    rollout_config,
)
from toolmaster.evaluation import evaluate_splits, markdown_table
from toolmaster.io import write_json_atomic, write_jsonl_atomic, write_text_atomic
from toolmaster.models.loading import LoadedModel
from toolmaster.settings import DataSettings, EvalSettings, SamplerSettings


def write_eval_outputs(
    out_dir: Path, metrics: dict, trajectories: dict, title: str, write_trajectories: bool
) -> None:
    write_json_atomic(out_dir / "metrics.json", metrics)
    write_text_atomic(out_dir / "results.md", markdown_table(metrics, title))
    if write_trajectories:
        for split, trajs in trajectories.items():
            write_jsonl_atomic(out_dir / "trajectories" / f"{split}.jsonl", (t.to_dict() for t in trajs))


def run(cfg: DictConfig) -> float:
    """``stage=eval``; returns the mean success over the splits."""
    stage: EvalSettings = build_settings(cfg.stage)
    data: DataSettings = build_settings(cfg.data)
    sampler: SamplerSettings = build_settings(cfg.sampler)
    world, env = build_world(cfg)
    splits = eval_splits_of(world, data)
    for split in splits:
        world.tasks(split)  # fail fast on an unknown split, before loading the model
    model: LoadedModel = build_model(cfg)
    fmt = chat_format_of(model)
    engine = build_engine(sampler, model, fmt)
    config = rollout_config(sampler, env, temperature=stage.temperature, n_samples=stage.n_samples)
    metrics, trajectories = evaluate_splits(
        engine,
        model.tokenizer,
        fmt,
        world,
        splits,
        data.eval_limit,
        config,
        build_rewards(cfg),
        stage.pass_k,
    )
    out_dir = Path(cfg.output_dir)
    write_eval_outputs(
        out_dir, metrics, trajectories, f"{model.name} on {world.name}", stage.write_trajectories
    )
    print(markdown_table(metrics, f"{model.name} on {world.name} (trial budget {env.trial_budget})"))
    print(f"wrote {out_dir / 'metrics.json'}, {out_dir / 'results.md'}")
    return sum(metrics[split]["success"] for split in splits) / len(splits)
