"""A user's world evaluates on the splits it has: ``data.eval_splits=null`` (the default) means the world's own
splits but the training split, filled in before a stage reads it (``toolmaster.build.resolve_eval_splits``)."""

from __future__ import annotations

import json
from pathlib import Path

from toolmaster.build import eval_splits_of, resolve_eval_splits
from toolmaster.cli import compose
from toolmaster.run import run
from toolmaster.settings import DataSettings
from toolmaster.worlds.custom import load_custom_world

MODULE = "def add(a: int, b: int) -> int:\n    return a + b\n"


def library_world(root: Path, splits: list[str]) -> Path:
    """A custom world named ``library`` with one task in each of ``splits``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "tools.py").write_text(MODULE)
    tasks = "".join(
        f"  - {{id: t{i}, split: {split}, query: 'What is 2 + {i}?', answer: '{2 + i}', tool_names: [add]}}\n"
        for i, split in enumerate(splits)
    )
    spec = root / "library.yaml"
    spec.write_text(f"name: library\nmodule: ./tools.py\ntools:\n  - function: add\ntasks:\n{tasks}")
    return spec


def test_null_eval_splits_are_the_worlds_own_but_train(tmp_path):
    data = DataSettings()
    assert data.eval_splits is None
    only_test = load_custom_world(library_world(tmp_path / "a", ["test"]))
    assert eval_splits_of(only_test, data) == ["test"]
    both = load_custom_world(library_world(tmp_path / "b", ["train", "dev", "test"]))
    assert eval_splits_of(both, data) == ["dev", "test"]
    only_train = load_custom_world(library_world(tmp_path / "c", ["train"]))
    assert eval_splits_of(only_train, data) == ["train"]  # nothing else to evaluate on
    assert eval_splits_of(both, DataSettings(eval_splits=["test"])) == ["test"]  # told otherwise


def test_toolworld_keeps_its_three_test_splits():
    cfg = compose([])
    resolve_eval_splits(cfg)
    assert list(cfg.data.eval_splits) == ["test_seen", "test_unseen", "test_evolved"]


def test_an_explicit_eval_split_list_is_kept(tmp_path):
    spec = library_world(tmp_path, ["train", "test"])
    cfg = compose(["tools=custom", f"tools.world.path={spec}", "data.eval_splits=[train]"])
    resolve_eval_splits(cfg)
    assert list(cfg.data.eval_splits) == ["train"]


def test_a_custom_world_with_only_a_test_split_evaluates_with_no_override(tmp_path):
    spec = library_world(tmp_path / "world", ["test"])
    out = tmp_path / "run"
    cfg = compose(
        [
            "stage=eval",
            "model=tiny",
            "tools=custom",
            f"tools.world.path={spec}",
            "tools.isolation=thread",
            "sampler.max_turns=1",
            "sampler.max_new_tokens=4",
            f"output_dir={out}",
        ]
    )
    assert cfg.data.eval_splits is None
    run(cfg)
    assert list(json.loads((out / "metrics.json").read_text())) == ["test"]
