"""``python -m toolmaster.seeds``: pooling a pipeline comparison over seeds, the gap interval, bad input."""

from __future__ import annotations

import json

import pytest

from toolmaster.seeds import PooledCell, main, newcombe_gap, pool
from toolmaster.sweep import wilson_interval


def _comparison(rates: dict[str, dict[str, float]], episodes: int) -> dict:
    splits = list(next(iter(rates.values())))
    rows = [
        {"label": arm, "steps": [], "success": row, "episodes": {s: episodes for s in row}, "wall_s": 1.0}
        for arm, row in rates.items()
    ]
    return {"splits": splits, "rows": rows}


def _write(tmp_path, name: str, comparison: dict):
    run_dir = tmp_path / name
    run_dir.mkdir()
    (run_dir / "comparison.json").write_text(json.dumps(comparison))
    return run_dir


def test_pooled_mean_interval_and_per_seed_values():
    seed0 = _comparison({"direct": {"a": 0.5, "b": 0.0}, "tm": {"a": 0.75, "b": 0.25}}, episodes=4)
    seed1 = _comparison({"direct": {"a": 0.25, "b": 0.0}, "tm": {"a": 1.0, "b": 0.5}}, episodes=4)
    splits, table = pool([seed0, seed1])
    assert splits == ["a", "b"]
    cell = table["direct"]["a"]
    assert cell.mean == pytest.approx(3 / 8)
    assert (cell.low, cell.high) == pytest.approx(wilson_interval(3, 8))
    assert cell.per_seed == [0.5, 0.25] and cell.episodes == 8
    assert table["direct"]["b"].low == 0.0


def test_newcombe_gap_matches_the_published_example():
    # Newcombe (1998), Statistics in Medicine 17:873, example (a): 56/70 - 48/80, method 10: 0.0524 to 0.3339
    a = PooledCell(56 / 70, *wilson_interval(56, 70), 70, [])
    b = PooledCell(48 / 80, *wilson_interval(48, 80), 80, [])
    gap, low, high = newcombe_gap(a, b)
    assert gap == pytest.approx(0.2)
    assert (low, high) == pytest.approx((0.0524, 0.3339), abs=5e-4)


def test_cli_writes_markdown_and_json(tmp_path, capsys):
    dirs = [
        _write(tmp_path, f"seed{i}", _comparison({"direct": {"a": 0.5}, "tm": {"a": r}}, episodes=10))
        for i, r in enumerate([0.7, 0.9])
    ]
    out = tmp_path / "pooled.md"
    assert main([*map(str, dirs), "--gap", "tm:direct", "--out", str(out)]) == 0
    text = out.read_text()
    assert "| tm | 0.800 [" in text and "(0.700 / 0.900)" in text
    assert "| tm - direct | +0.300 [" in text
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["gaps"]["tm - direct"]["a"]["gap"] == pytest.approx(0.3)
    assert "tm - direct" in capsys.readouterr().out


def test_unfinished_run_and_unknown_arm_fail_in_one_line(tmp_path, capsys):
    done = _write(tmp_path, "seed0", _comparison({"direct": {"a": 0.5}}, episodes=4))
    (tmp_path / "seed1").mkdir()
    assert main([str(done), str(tmp_path / "seed1")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "seed1/comparison.json does not exist" in err
    assert main([str(done), "--gap", "tm:direct"]) == 2
    assert "--gap 'tm:direct' must be A:B" in capsys.readouterr().err


def test_different_arms_are_refused(tmp_path):
    seed0 = _comparison({"direct": {"a": 0.5}}, episodes=4)
    seed1 = _comparison({"tm": {"a": 0.5}}, episodes=4)
    with pytest.raises(ValueError, match="run dir 2 has arms"):
        pool([seed0, seed1])


def test_a_kept_comparison_json_pools_like_its_run_dir(tmp_path, capsys):
    run_dir = _write(tmp_path, "seed0", _comparison({"direct": {"a": 0.5}, "tm": {"a": 0.75}}, episodes=4))
    kept = tmp_path / "kept_seed1.json"
    kept.write_text(json.dumps(_comparison({"direct": {"a": 0.25}, "tm": {"a": 1.0}}, episodes=4)))
    assert main([str(run_dir), str(kept)]) == 0
    assert "| tm | 0.875 [" in capsys.readouterr().out
    assert main([str(run_dir), str(tmp_path / "missing.json")]) == 2
    assert "missing.json does not exist" in capsys.readouterr().err
