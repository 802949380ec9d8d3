"""``evaluate_splits`` rolls all splits out together: the per-split results must be exactly what separate
per-split rollouts give, and the batch must stay full across split boundaries."""

from __future__ import annotations

from toolmaster.evaluation import evaluate_splits, markdown_table
from toolmaster.protocol import get_chat_format
from toolmaster.samplers.loop import RolloutConfig, rollout
from toolmaster.samplers.scripted import ScriptedEngine
from toolmaster.worlds.toolworld import build_toolworld

SPLITS = ["test_seen", "test_unseen", "test_evolved"]


def test_joint_rollout_matches_per_split_rollouts_and_keeps_the_batch_full(tiny_tokenizer):
    world = build_toolworld(seed=3, n_train=0, n_test=5)
    tasks = [t for split in SPLITS for t in world.tasks(split)]
    right = {t.id for t in tasks[::2]}  # every other task answered correctly, so the splits differ

    def respond(prompt: str) -> str:
        task = next(t for t in tasks if t.query in prompt)
        return f"<answer>{task.answer if task.id in right else 'no idea'}</answer>"

    fmt = get_chat_format("chatml")
    config = RolloutConfig(max_turns=2, max_new_tokens=32, temperature=0.0, n_samples=2, batch_size=4)
    engine = ScriptedEngine(tiny_tokenizer, respond)
    metrics, trajectories = evaluate_splits(
        engine, tiny_tokenizer, fmt, world, SPLITS, 5, config, pass_k=(1, 2), show_progress=False
    )
    assert list(metrics) == SPLITS == list(trajectories)
    # 30 episodes at most 4 at a time, one turn each: the engine sees full batches of 4 until the last 2,
    # which it could not if every split (10 episodes) were rolled out on its own (4, 4, 2 per split)
    assert engine.batch_sizes == [4] * 7 + [2]
    for split in SPLITS:
        alone = rollout(
            ScriptedEngine(tiny_tokenizer, respond),
            tiny_tokenizer,
            fmt,
            world.suite,
            world.tasks(split, 5),
            config,
        )
        assert [(t.task_id, t.sample_index) for t in trajectories[split]] == [
            (t.task_id, t.sample_index) for t in alone
        ]
        assert [t.token_ids for t in trajectories[split]] == [t.token_ids for t in alone]
        expected = sum(t.id in right for t in world.tasks(split, 5)) / 5
        assert metrics[split]["success"] == expected
        assert metrics[split]["episodes"] == 10
    assert len({m["wall_s"] for m in metrics.values()}) == 1  # one joint rollout
    table = markdown_table(metrics, "scripted")
    assert "30 episodes of 3 split(s) rolled out together in" in table
