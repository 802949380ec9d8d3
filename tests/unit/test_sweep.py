"""Sweep aggregation over a real multirun folder tree written to tmp_path in Hydra's format."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from toolmaster.errors import ToolMasterError
from toolmaster.metrics import nest_metrics
from toolmaster.sweep import (
    aggregate,
    cells,
    main,
    parse_overrides,
    plot,
    summary_markdown,
    to_csv,
    to_markdown,
    wilson_interval,
)

# (job folder, overrides, metrics or None when the job has not finished)
JOBS: list[tuple[str, list[str], dict[str, Any] | None]] = [
    (
        "0_reward=outcome,tools.trial_budget=0",
        ["reward=outcome", "tools.trial_budget=0"],
        {"test_seen": {"success": 0.2, "episodes": 10}, "test_unseen": {"success": 0.1, "episodes": 10}},
    ),
    (
        "1_reward=outcome,tools.trial_budget=2",
        ["reward=outcome", "tools.trial_budget=2"],
        {"test_seen": {"success": 0.4, "episodes": 10}, "test_unseen": {"success": 0.3, "episodes": 10}},
    ),
    (
        "2_reward=outcome,tools.trial_budget=10",
        ["reward=outcome", "tools.trial_budget=10"],
        {"test_seen": {"success": 0.5, "episodes": 10}, "test_unseen": {"success": 0.6, "episodes": 10}},
    ),
    (
        "3_reward=shaped,tools.trial_budget=0",
        ["reward=shaped", "tools.trial_budget=0"],
        {"test_seen": {"success": 0.3, "episodes": 10}, "test_unseen": {"success": 0.2, "episodes": 10}},
    ),
    (
        "10_reward=shaped,tools.trial_budget=2",
        ["reward=shaped", "tools.trial_budget=2"],
        {"test_seen": {"success": 0.7, "episodes": 10}, "test_unseen": {"success": 0.4, "episodes": 10}},
    ),
    ("11_reward=shaped,tools.trial_budget=10", ["reward=shaped", "tools.trial_budget=10"], None),
]


def write_job(
    root: Path,
    name: str,
    overrides: list[str],
    metrics: dict[str, Any] | None,
    choices: dict[str, str] | None = None,
    config: dict[str, Any] | None = None,
) -> Path:
    job = root / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if choices is not None:
        (job / ".hydra" / "hydra.yaml").write_text(
            yaml.safe_dump({"hydra": {"runtime": {"choices": choices}}})
        )
    if config is not None:
        (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return job


@pytest.fixture
def sweep_dir(tmp_path: Path) -> Path:
    root = tmp_path / "multirun" / "2025-01-01" / "12-00-00"
    for name, overrides, metrics in JOBS:
        write_job(root, name, overrides, metrics)
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def test_parse_overrides() -> None:
    assert parse_overrides(["reward=shaped", "+extra.key=a=b", "++seed=3", "~logger", "noequals"]) == {
        "reward": "shaped",
        "extra.key": "a=b",
        "seed": "3",
    }


def test_rows_columns_and_order(sweep_dir: Path) -> None:
    table = aggregate(sweep_dir)
    assert table.columns == [
        "job",
        "tools.trial_budget",
        "reward",
        "success/test_seen",
        "success/test_unseen",
        "success/mean",
        "status",
    ]
    # ordered by series, then x numerically (0 < 2 < 10, not "10" < "2")
    assert [(r["reward"], r["tools.trial_budget"]) for r in table.rows] == [
        ("outcome", "0"),
        ("outcome", "2"),
        ("outcome", "10"),
        ("shaped", "0"),
        ("shaped", "2"),
        ("shaped", "10"),
    ]
    first = table.rows[0]
    assert first["job"] == "0_reward=outcome,tools.trial_budget=0"
    assert first["success/test_seen"] == 0.2 and first["success/test_unseen"] == 0.1
    assert first["success/mean"] == pytest.approx(0.15)
    assert table.rows[4]["success/mean"] == pytest.approx(0.55)
    assert [r["status"] for r in table.rows] == ["ok"] * 5 + ["missing"]


def test_missing_job_is_listed_not_fatal(sweep_dir: Path) -> None:
    table = aggregate(sweep_dir)
    missing = table.rows[-1]
    assert missing["job"] == "11_reward=shaped,tools.trial_budget=10"
    assert missing["success/test_seen"] is None and missing["success/mean"] is None
    assert [job.name for job in table.missing] == ["11_reward=shaped,tools.trial_budget=10"]
    markdown = to_markdown(table)
    assert "1 of 6 job(s) have no usable metrics" in markdown
    assert "`11_reward=shaped,tools.trial_budget=10`: no metrics.json" in markdown


def test_markdown_table(sweep_dir: Path) -> None:
    lines = to_markdown(aggregate(sweep_dir)).splitlines()
    assert lines[0] == "### success by tools.trial_budget and reward"
    assert (
        lines[2]
        == "| job | tools.trial_budget | reward | success/test_seen | success/test_unseen | success/mean | status |"
    )
    assert lines[3] == "|---|---|---|---|---|---|---|"
    assert lines[4] == "| 0_reward=outcome,tools.trial_budget=0 | 0 | outcome | 0.200 | 0.100 | 0.150 | ok |"
    assert lines[9] == "| 11_reward=shaped,tools.trial_budget=10 | 10 | shaped |  |  |  | missing |"


def test_csv(sweep_dir: Path) -> None:
    rows = list(csv.DictReader(io.StringIO(to_csv(aggregate(sweep_dir)))))
    assert len(rows) == 6
    assert rows[1] == {
        "job": "1_reward=outcome,tools.trial_budget=2",
        "tools.trial_budget": "2",
        "reward": "outcome",
        "success/test_seen": "0.4",
        "success/test_unseen": "0.3",
        "success/mean": "0.35",
        "status": "ok",
    }
    assert rows[5]["success/mean"] == "" and rows[5]["status"] == "missing"


def test_defaults_come_from_saved_hydra_config(tmp_path: Path) -> None:
    # a job that left trial_budget and reward at their defaults: read from .hydra/{hydra,config}.yaml
    write_job(
        tmp_path,
        "0_seed=1",
        ["seed=1"],
        {"test_seen": {"success": 0.5}},
        choices={"reward": "outcome", "tools": "toolworld"},
        config={"tools": {"trial_budget": 2}, "seed": 1},
    )
    write_job(
        tmp_path,
        "1_seed=2,tools.trial_budget=4",
        ["seed=2", "tools.trial_budget=4"],
        {"test_seen": {"success": 0.7}},
    )
    table = aggregate(tmp_path)
    assert table.columns == [
        "job",
        "tools.trial_budget",
        "reward",
        "seed",
        "success/test_seen",
        "success/mean",
        "status",
    ]
    assert [(r["tools.trial_budget"], r["reward"], r["seed"]) for r in table.rows] == [
        ("4", "", "2"),
        ("2", "outcome", "1"),
    ]


def test_other_metric_unreadable_and_uneven_splits(tmp_path: Path) -> None:
    write_job(tmp_path, "0_a", ["tools.trial_budget=1"], {"test_seen": {"success": 1.0, "valid_format": 0.5}})
    write_job(
        tmp_path, "1_b", ["tools.trial_budget=2"], {"test_unseen": {"success": 0.0, "valid_format": 0.25}}
    )
    job = write_job(tmp_path, "2_c", ["tools.trial_budget=3"], None)
    (job / "metrics.json").write_text("{not json")
    table = aggregate(tmp_path, metric="valid_format")
    assert table.splits == ["test_seen", "test_unseen"]
    assert [r["valid_format/mean"] for r in table.rows] == [0.5, 0.25, None]
    assert [r["status"] for r in table.rows] == ["ok", "ok", "unreadable"]
    assert table.rows[0]["valid_format/test_unseen"] is None


def test_no_jobs_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ToolMasterError, match="no Hydra jobs"):
        aggregate(tmp_path)
    with pytest.raises(ToolMasterError, match="does not exist"):
        aggregate(tmp_path / "nope")
    assert main([str(tmp_path)]) == 1


def test_plot_writes_png(sweep_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = plot(aggregate(sweep_dir), tmp_path / "out" / "sweep.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 1000


def test_plot_with_categorical_x_and_no_series(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    write_job(tmp_path, "0", ["model=tiny"], {"test_seen": {"success": 0.1}})
    write_job(tmp_path, "1", ["model=smollm2_135m"], {"test_seen": {"success": 0.3}})
    table = aggregate(tmp_path, x="model", series="reward")
    assert plot(table, tmp_path / "sweep.png").stat().st_size > 1000


def test_plot_without_matplotlib_is_one_line_error(sweep_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails as if not installed
    with pytest.raises(ToolMasterError, match="matplotlib") as info:
        plot(aggregate(sweep_dir), sweep_dir / "sweep.png")
    assert "\n" not in str(info.value)
    assert main([str(sweep_dir)]) == 1
    assert (sweep_dir / "sweep.md").exists() and (sweep_dir / "sweep.csv").exists()


def test_cli_writes_outputs(sweep_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "report"
    assert main([str(sweep_dir), "--x", "tools.trial_budget", "--series", "reward", "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"sweep.md", "sweep.csv", "sweep.png"}
    table = aggregate(sweep_dir)
    assert (out / "sweep.md").read_text() == summary_markdown(table) + "\n" + to_markdown(table)
    printed = capsys.readouterr().out
    # the console gets the short summary (series x trial budget), not the per-job table
    assert "| outcome | 0.150 [0.05, 0.36] | 0.350 [0.18, 0.57] | 0.550 [0.34, 0.74] |" in printed
    assert "| 0_reward=outcome,tools.trial_budget=0 |" not in printed
    assert f"wrote {out / 'sweep.md'}, {out / 'sweep.csv'}, {out / 'sweep.png'}" in printed


def test_module_entry_point_tables_only(sweep_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "toolmaster.sweep", str(sweep_dir), "--no-plot"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (sweep_dir / "sweep.md").exists() and (sweep_dir / "sweep.csv").exists()
    assert not (sweep_dir / "sweep.png").exists()


def test_nest_metrics_turns_logged_validation_into_split_metrics() -> None:
    import torch

    flat = {
        "val/test_seen/success": torch.tensor(0.5),  # Lightning's callback_metrics hold tensors
        "val/test_seen/trial_calls": 1.25,
        "val/test_unseen/success": 0.0,
        "val/success": 0.25,  # the mean over splits: no split, left out
        "train/success": 1.0,  # another prefix
        "val/test_seen/bad": float("nan"),  # not a finite number
        "val//x": 1.0,
    }
    assert nest_metrics(flat) == {
        "test_seen": {"success": 0.5, "trial_calls": 1.25},
        "test_unseen": {"success": 0.0},
    }
    assert nest_metrics({"train/a/b": 2}, prefix="train/") == {"a": {"b": 2.0}}


def test_grpo_style_metrics_aggregate_like_eval(tmp_path: Path) -> None:
    # a stage=grpo job writes nest_metrics(final validation) as metrics.json: the aggregator reads it
    flat = {"val/test_seen/success": 0.75, "val/test_seen/episodes": 4.0, "val/success": 0.75}
    write_job(
        tmp_path,
        "0_trial_budget=1,reward=shaped",
        ["tools.trial_budget=1", "reward=shaped"],
        nest_metrics(flat),
    )
    table = aggregate(tmp_path)
    assert table.splits == ["test_seen"]
    assert table.rows[0]["success/test_seen"] == 0.75 and table.rows[0]["status"] == "ok"


def test_wilson_interval_by_hand() -> None:
    # 0 of 8: centre = (z^2/16) / (1 + z^2/8) = half width; 4 of 8: symmetric around 0.5
    assert wilson_interval(0, 8) == pytest.approx((0.0, 0.3244), abs=1e-4)
    assert wilson_interval(4, 8) == pytest.approx((0.2152, 0.7848), abs=1e-4)
    assert wilson_interval(8, 8) == pytest.approx((0.6756, 1.0), abs=1e-4)
    with pytest.raises(ValueError):
        wilson_interval(0, 0)


def test_summary_pools_seeds_and_splits(tmp_path: Path) -> None:
    # two seeds at one point: their episodes pool (3 + 1 of 8 + 8 = 4 of 16), per split and over splits
    for seed, (seen, unseen) in enumerate([(3, 0), (1, 2)]):
        write_job(
            tmp_path,
            f"{seed}_seed={seed}",
            [f"seed={seed}", "tools.trial_budget=2", "reward=shaped"],
            {
                "test_seen": {"success": seen / 8, "episodes": 8},
                "test_unseen": {"success": unseen / 8, "episodes": 8},
            },
        )
    table = aggregate(tmp_path)
    seen = cells(table, "test_seen")["shaped"]["2"]
    assert (seen.value, seen.episodes, seen.jobs) == (0.25, 16, 2)
    assert (seen.low, seen.high) == pytest.approx(wilson_interval(4, 16))
    pooled = cells(table)["shaped"]["2"]
    assert (pooled.value, pooled.episodes, pooled.jobs) == (6 / 32, 32, 2)
    lines = summary_markdown(table).splitlines()
    assert lines[0] == (
        "#### success, all splits (2, pooled): rows reward, columns tools.trial_budget "
        "[95% Wilson interval]; episodes per cell: 32"
    )
    assert lines[2] == "| reward \\ tools.trial_budget | 2 |"
    assert lines[4] == f"| shaped | 0.188 [{pooled.low:.2f}, {pooled.high:.2f}] |"


def test_summary_without_episodes_has_no_interval(tmp_path: Path) -> None:
    write_job(tmp_path, "0", ["tools.trial_budget=0"], {"test_seen": {"success": 0.5}})
    cell = cells(aggregate(tmp_path), "test_seen")["all"]["0"]
    assert (cell.value, cell.low, cell.high, cell.episodes) == (0.5, None, None, 0)
    assert "| all | 0.500 |" in summary_markdown(aggregate(tmp_path))


def test_plot_with_all_zero_rates(tmp_path: Path) -> None:
    # 0 of 3 episodes: the Wilson formula gives 5.6e-17 as the lower end; it must be exactly 0 (a lower end
    # above the value made matplotlib refuse the negative error bar)
    pytest.importorskip("matplotlib")
    for i, budget in enumerate((0, 1)):
        write_job(
            tmp_path, str(i), [f"tools.trial_budget={budget}"], {"test_seen": {"success": 0.0, "episodes": 1}}
        )
    table = aggregate(tmp_path)
    assert cells(table, "test_seen")["all"]["0"].low == 0.0
    assert wilson_interval(0, 3)[0] == 0.0 and wilson_interval(3, 3)[1] == 1.0
    assert plot(table, tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
