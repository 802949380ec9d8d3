"""A resumed run appends to ``logs/metrics.csv``; Lightning's CSV logger would delete the earlier rows.

``pytorch_lightning.loggers.CSVLogger`` removes an existing ``metrics.csv`` when it creates its writer, so a
resumed run's log used to start at the resume step. ``keep_metrics_history`` creates that writer with the old file
moved aside, puts the file back and gives the writer the file's columns, so new rows are appended (a new column
rewrites the file with the union of the columns, as the logger does within one run). Rows are never deleted:
steps that a resumed run redoes (those logged after its checkpoint) appear twice, the later rows being the
resumed run's. Rank 0 only; other loggers are left alone.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.utilities.rank_zero import rank_zero_only

METRICS_FILE = "metrics.csv"


def keep_metrics_history(loggers: list[Any]) -> list[Path]:
    """Make each CSV logger append to its existing ``metrics.csv``; return the files kept."""
    if rank_zero_only.rank != 0:
        return []
    kept = []
    for logger in loggers:
        if not isinstance(logger, CSVLogger):
            continue
        path = Path(logger.log_dir) / METRICS_FILE
        if not path.is_file() or path.stat().st_size == 0:
            continue
        aside = path.with_name(f".{METRICS_FILE}.resume")
        os.replace(path, aside)
        try:
            writer = logger.experiment  # the writer's constructor deletes metrics.csv if present
        finally:
            os.replace(aside, path)
        with open(path, newline="") as handle:
            header = next(csv.reader(handle), [])
        writer.metrics_keys = sorted(set(writer.metrics_keys) | set(header))
        kept.append(path)
    return kept
