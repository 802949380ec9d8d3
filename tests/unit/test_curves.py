"""``python -m toolmaster.curves``: GRPO train curves from the CSV logger's metrics file, PNG and table."""

from __future__ import annotations

import csv
from pathlib import Path

from toolmaster.curves import main, read_curves

HEADER = [
    "epoch",
    "lr-AdamW/pg1",
    "step",
    "train/success",
    "train/reward/total",
    "train/groups/useful_success",
]


def _run_dir(tmp_path: Path, name: str, rows: list[list[object]]) -> Path:
    run = tmp_path / name
    (run / "logs").mkdir(parents=True)
    with (run / "logs" / "metrics.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        writer.writerow(["", "1e-05", 0, "", "", ""])  # the learning-rate monitor's row: no train metrics
        writer.writerows(rows)
    return run


def test_reads_train_rows_keeps_a_resumed_steps_last_row_and_plots(tmp_path, capsys):
    tm = _run_dir(tmp_path, "toolmaster_grpo", [[0, "", 0, 0.1, 0.3, 0.5], [0, "", 1, 0.2, 0.4, 0.25],
                                                [0, "", 1, 0.25, 0.45, 0.75]])  # fmt: skip
    direct = _run_dir(tmp_path, "direct_grpo", [[0, "", 0, 0.0, 0.2, 0.0]])
    curves = read_curves(tm)
    assert curves["train/success"] == {0: 0.1, 1: 0.25}
    assert curves["train/groups/useful_success"][1] == 0.75
    out, table = tmp_path / "curves.png", tmp_path / "curves.csv"
    assert main([str(tm), str(direct), "--out", str(out), "--csv", str(table)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.reader(table.open()))
    assert rows[0][:2] == ["arm", "step"] and ["toolmaster_grpo", "2", "0.25", "0.45", "0.75"] in rows
    assert ["direct_grpo", "1", "0.0", "0.2", "0.0"] in rows


def test_missing_metrics_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no logs/metrics.csv" in err[0]
    assert main([str(_run_dir(tmp_path, "norows", [])), "--out", str(tmp_path / "y.png")]) == 2
    assert "no train rows" in capsys.readouterr().err
