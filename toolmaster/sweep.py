"""Aggregate a Hydra multirun into one table and one plot: ``python -m toolmaster.sweep DIR``.

A multirun directory holds one folder per job, each with ``.hydra/overrides.yaml`` (the job's command-line
overrides, a list of ``key=value`` strings) and, once the job has finished, ``metrics.json`` (split ->
metrics, as written by ``stage=eval``). Jobs are found anywhere under DIR, so DIR may be one sweep
(``multirun/<date>/<time>``) or a parent of several.

Writes to DIR (or ``--out``):

- ``sweep.md``: first the summary, one small table per panel (all splits pooled, then each split): rows are the
  ``--series`` values (default ``reward``, the reward shape), columns the ``--x`` values (default
  ``tools.trial_budget``), each cell the metric with its 95% Wilson interval and number of episodes when the
  jobs' ``metrics.json`` give ``episodes`` and the metric is a rate (``success``). Jobs sharing a cell (several
  seeds) are pooled. Then the full table, as in ``sweep.csv``.
- ``sweep.csv``: one row per job: the job folder, the overrides as columns (the ``--x`` and ``--series`` keys
  first), the metric (``--metric``, default ``success``) of every split, their mean over splits, and a status
  (``ok``, ``missing`` when ``metrics.json`` is absent, ``unreadable`` when it is not a JSON object of split ->
  metrics). Rows are ordered by series, then x (numerically when numbers), then job folder.
- ``sweep.png``: the metric against ``--x``, one line per ``--series`` value with its interval as error bars,
  in small multiples: all splits pooled, then each split (the summary's cells).

The console gets the summary and the paths written.

``stage=grpo`` writes the same ``metrics.json`` from its final validation (``nest_metrics``), so a sweep of
GRPO runs (``+experiment=ablation``) aggregates like a sweep of evaluations.

A key missing from a job's overrides (a default left untouched) is looked up in the job's
``.hydra/hydra.yaml`` (config group choices such as ``reward``) and then in ``.hydra/config.yaml``.
Plotting needs matplotlib (the ``dev`` extra); it is imported only when the plot is drawn.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from toolmaster.errors import ToolMasterError
from toolmaster.metrics import finite_number as _number

DEFAULT_X = "tools.trial_budget"
DEFAULT_SERIES = "reward"
DEFAULT_METRIC = "success"
OK, MISSING, UNREADABLE = "ok", "missing", "unreadable"
_MISSING_VALUE = object()


@dataclass
class Job:
    """One job of the multirun: its folder (relative to the sweep root), overrides and metrics."""

    name: str
    path: Path
    overrides: dict[str, str]
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    status: str = OK
    detail: str = ""

    def lookup(self, key: str) -> str:
        """The job's value for a config key: its override, else the Hydra choice, else the saved config."""
        if key in self.overrides:
            return self.overrides[key]
        hydra_cfg = _read_yaml(self.path / ".hydra" / "hydra.yaml")
        choices = _select(hydra_cfg, "hydra.runtime.choices") if isinstance(hydra_cfg, dict) else None
        if isinstance(choices, dict) and key in choices:
            return _as_text(choices[key])
        value = _select(_read_yaml(self.path / ".hydra" / "config.yaml"), key)
        if value is _MISSING_VALUE or isinstance(value, (dict, list)):
            return ""
        return _as_text(value)


@dataclass
class SweepTable:
    """The aggregated sweep: ordered columns, one row (column -> value) per job, and the jobs themselves."""

    columns: list[str]
    rows: list[dict[str, Any]]
    jobs: list[Job]
    x: str
    series: str
    metric: str
    splits: list[str]

    @property
    def missing(self) -> list[Job]:
        return [job for job in self.jobs if job.status != OK]

    def metric_column(self, split: str) -> str:
        return f"{self.metric}/{split}"

    @property
    def mean_column(self) -> str:
        return f"{self.metric}/mean"


# ------------------------------------------------------------------------------------------ reading jobs
def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None


def _select(node: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING_VALUE
        node = node[part]
    return node


def _as_text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_overrides(lines: Sequence[Any]) -> dict[str, str]:
    """``["tools.trial_budget=2", "+x.y=1", "~z"]`` -> ``{"tools.trial_budget": "2", "x.y": "1"}`` (deletions
    and entries without ``=`` are dropped; ``+`` / ``++`` prefixes are removed from keys)."""
    out: dict[str, str] = {}
    for line in lines:
        text = str(line)
        if "=" not in text or text.startswith("~"):
            continue
        key, value = text.split("=", 1)
        out[key.lstrip("+").strip()] = value.strip()
    return out


def _natural_key(text: str) -> list[Any]:
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text)]


def find_jobs(root: Path) -> list[Path]:
    """Job folders under ``root`` (folders with ``.hydra/overrides.yaml``), in natural order of their path."""
    found = {p.parent.parent for p in root.rglob(".hydra/overrides.yaml")}
    return sorted(found, key=lambda p: _natural_key(p.relative_to(root).as_posix()))


def load_job(root: Path, path: Path) -> Job:
    name = path.relative_to(root).as_posix() or "."
    raw = _read_yaml(path / ".hydra" / "overrides.yaml")
    overrides = parse_overrides(raw if isinstance(raw, list) else [])
    metrics_path = path / "metrics.json"
    if not metrics_path.is_file():
        return Job(name, path, overrides, status=MISSING, detail="no metrics.json")
    try:
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return Job(name, path, overrides, status=UNREADABLE, detail=f"metrics.json: {exc}")
    if not isinstance(metrics, dict) or not all(isinstance(v, dict) for v in metrics.values()):
        return Job(name, path, overrides, status=UNREADABLE, detail="metrics.json is not split -> metrics")
    return Job(name, path, overrides, metrics)


# ------------------------------------------------------------------------------------------ aggregating
def _order_key(value: str) -> tuple[int, float, str]:
    number = _number(value)
    return (0, number, "") if number is not None else (1, 0.0, value)


def aggregate(
    root: str | Path, x: str = DEFAULT_X, series: str = DEFAULT_SERIES, metric: str = DEFAULT_METRIC
) -> SweepTable:
    """Read every job under ``root`` into a SweepTable (see the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise ToolMasterError(f"sweep directory {str(root)!r} does not exist")
    paths = find_jobs(root)
    if not paths:
        raise ToolMasterError(f"no Hydra jobs under {str(root)!r} (looked for */.hydra/overrides.yaml)")
    jobs = [load_job(root, path) for path in paths]

    keys: list[str] = list(dict.fromkeys([x, series]))
    for job in jobs:
        keys.extend(k for k in job.overrides if k not in keys)
    splits: list[str] = []
    for job in jobs:
        splits.extend(s for s, m in job.metrics.items() if metric in m and s not in splits)

    table = SweepTable([], [], jobs, x, series, metric, splits)
    rows = []
    for job in jobs:
        row: dict[str, Any] = {"job": job.name}
        for key in keys:
            row[key] = job.lookup(key)
        values = []
        for split in splits:
            value = _number(job.metrics.get(split, {}).get(metric))
            row[table.metric_column(split)] = value
            if value is not None:
                values.append(value)
        row[table.mean_column] = sum(values) / len(values) if values else None
        row["status"] = job.status
        rows.append(row)
    rows.sort(key=lambda r: (_order_key(r[series]), _order_key(r[x]), _natural_key(r["job"])))
    table.columns = ["job", *keys, *(table.metric_column(s) for s in splits), table.mean_column, "status"]
    table.rows = rows
    return table


# ------------------------------------------------------------------------------------------ writing
def _cell(value: Any, digits: int = 3) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def to_markdown(table: SweepTable) -> str:
    def escape(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [
        f"### {table.metric} by {table.x} and {table.series}",
        "",
        "| " + " | ".join(escape(c) for c in table.columns) + " |",
        "|" + "---|" * len(table.columns),
    ]
    for row in table.rows:
        lines.append("| " + " | ".join(escape(_cell(row[c])) for c in table.columns) + " |")
    if table.missing:
        lines.append("")
        lines.append(f"{len(table.missing)} of {len(table.jobs)} job(s) have no usable metrics:")
        lines.extend(f"- `{job.name}`: {job.detail}" for job in table.missing)
    return "\n".join(lines) + "\n"


def to_csv(table: SweepTable) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=table.columns, lineterminator="\n")
    writer.writeheader()
    for row in table.rows:
        writer.writerow({c: "" if row[c] is None else row[c] for c in table.columns})
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------ summary cells
Z95 = 1.959963984540054


def wilson_interval(successes: float, episodes: float, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a rate (95% by default); valid at 0 and 1 successes, unlike the normal one."""
    if episodes <= 0:
        raise ValueError("a rate's interval needs at least one episode")
    p = successes / episodes
    denominator = 1 + z * z / episodes
    centre = (p + z * z / (2 * episodes)) / denominator
    half = z * math.sqrt(p * (1 - p) / episodes + z * z / (4 * episodes * episodes)) / denominator
    low = 0.0 if successes <= 0 else max(0.0, centre - half)  # exact bounds where rounding would miss them
    high = 1.0 if successes >= episodes else min(1.0, centre + half)
    return low, high


@dataclass
class Cell:
    """One (series, x) point of a panel: the pooled rate, its interval (None when episodes are unknown or the
    metric is not a rate in [0, 1]), its number of episodes (0 when unknown) and of jobs."""

    value: float
    low: float | None
    high: float | None
    episodes: int
    jobs: int


def cells(table: SweepTable, split: str | None = None) -> dict[str, dict[str, Cell]]:
    """series value -> x value -> Cell, for one split or (``split=None``) all splits pooled; only jobs with
    metrics count, and several jobs at one point (seeds) are pooled."""
    by_name = {job.name: job for job in table.jobs}
    points: dict[tuple[str, str], list[tuple[str, float, float | None]]] = {}
    for row in table.rows:
        job = by_name[row["job"]]
        if job.status != OK or row[table.x] == "":
            continue
        for name in [split] if split is not None else table.splits:
            metrics = job.metrics.get(name, {})
            value = _number(metrics.get(table.metric))
            if value is not None:
                point = (row[table.series] or "all", row[table.x])
                points.setdefault(point, []).append((job.name, value, _number(metrics.get("episodes"))))
    out: dict[str, dict[str, Cell]] = {}
    for (name, x), values in sorted(points.items(), key=lambda i: (_order_key(i[0][0]), _order_key(i[0][1]))):
        jobs = len({job for job, _, _ in values})
        counts = [n for _, _, n in values if n is not None and n > 0]
        if len(counts) == len(values) and all(0.0 <= v <= 1.0 for _, v, _ in values):
            episodes = sum(counts)
            successes = sum(v * n for (_, v, _), n in zip(values, counts, strict=True))
            low, high = wilson_interval(successes, episodes)
            cell = Cell(successes / episodes, low, high, round(episodes), jobs)
        else:
            cell = Cell(sum(v for _, v, _ in values) / len(values), None, None, 0, jobs)
        out.setdefault(name, {})[x] = cell
    return out


def panels(table: SweepTable) -> list[tuple[str, str | None]]:
    """(title, split) of each panel: all splits pooled first, then each split."""
    return [(f"all splits ({len(table.splits)}, pooled)", None)] + [(s, s) for s in table.splits]


def summary_markdown(table: SweepTable) -> str:
    """One table per panel: rows the series values, columns the x values, cells metric [95% interval]."""
    x_values = sorted({row[table.x] for row in table.rows if row[table.x] != ""}, key=_order_key)
    blocks = []
    for title, split in panels(table):
        grid = cells(table, split)
        if not grid:
            continue
        counts = sorted({c.episodes for row in grid.values() for c in row.values() if c.episodes})
        note = f" [95% Wilson interval]; episodes per cell: {', '.join(map(str, counts))}" if counts else ""
        lines = [
            f"#### {table.metric}, {title}: rows {table.series}, columns {table.x}{note}",
            "",
            f"| {table.series} \\ {table.x} | " + " | ".join(x_values) + " |",
            "|---" * (len(x_values) + 1) + "|",
        ]
        for name, row in grid.items():
            shown = []
            for x in x_values:
                cell = row.get(x)
                if cell is None:
                    shown.append("-")
                elif cell.low is None or cell.high is None:
                    shown.append(f"{cell.value:.3f}")
                else:
                    shown.append(f"{cell.value:.3f} [{cell.low:.2f}, {cell.high:.2f}]")
            lines.append(f"| {name} | " + " | ".join(shown) + " |")
        blocks.append("\n".join(lines))
    if table.missing:
        blocks.append(
            f"{len(table.missing)} of {len(table.jobs)} job(s) have no usable metrics (see the full table)."
        )
    return "\n\n".join(blocks) + "\n"


def report_markdown(table: SweepTable) -> str:
    """``sweep.md``: the summary, then the full per-job table."""
    return summary_markdown(table) + "\n" + to_markdown(table)


def plot(table: SweepTable, path: str | Path) -> Path:
    """Draw ``sweep.png``-style small multiples (all splits pooled, then each split) to ``path``."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ToolMasterError(
            "plotting needs matplotlib, which is not installed: pip install 'matplotlib>=3.8' (in the dev extra)"
        ) from None
    x_values = sorted({row[table.x] for row in table.rows if row[table.x] != ""}, key=_order_key)
    numeric = bool(x_values) and all(_number(v) is not None for v in x_values)
    position = {v: (_number(v) if numeric else float(i)) for i, v in enumerate(x_values)}
    spread = (max(position.values()) - min(position.values())) if len(position) > 1 else 1.0

    shown = panels(table)
    fig = Figure(figsize=(3.6 * len(shown) + 0.8, 3.6), layout="constrained")
    axes = fig.subplots(1, len(shown), sharey=True, squeeze=False)[0]
    for ax, (title, split) in zip(axes, shown, strict=True):
        grid = cells(table, split)
        for i, (name, row) in enumerate(grid.items()):
            dodge = (i - (len(grid) - 1) / 2) * 0.015 * spread  # keep the error bars of the lines apart
            xs = [position[x] + dodge for x in row]
            ys = [c.value for c in row.values()]
            low = [max(0.0, c.value - c.low) if c.low is not None else 0.0 for c in row.values()]
            high = [max(0.0, c.high - c.value) if c.high is not None else 0.0 for c in row.values()]
            ax.errorbar(xs, ys, yerr=[low, high], marker="o", capsize=3, label=name)
        ax.set_title(title)
        ax.set_xlabel(table.x)
        if x_values:
            ax.set_xticks([position[v] for v in x_values], x_values)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(table.metric)
    axes[0].set_ylim(bottom=0)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, title=table.series, loc="outside right upper")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def write_outputs(table: SweepTable, out_dir: str | Path, with_plot: bool = True) -> list[Path]:
    """Write sweep.md and sweep.csv (and sweep.png when ``with_plot``); return the paths written."""
    from toolmaster.io import write_text_atomic

    out_dir = Path(out_dir)
    written = [out_dir / "sweep.md", out_dir / "sweep.csv"]
    write_text_atomic(written[0], report_markdown(table))
    write_text_atomic(written[1], to_csv(table))
    if with_plot:
        written.append(plot(table, out_dir / "sweep.png"))
    return written


# ------------------------------------------------------------------------------------------ CLI
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m toolmaster.sweep",
        description="Aggregate a Hydra multirun into sweep.md, sweep.csv and sweep.png.",
    )
    parser.add_argument("dir", type=Path, help="the multirun directory (e.g. multirun/2025-01-01/12-00-00)")
    parser.add_argument("--x", default=DEFAULT_X, help=f"config key on the x axis (default {DEFAULT_X})")
    parser.add_argument(
        "--series", default=DEFAULT_SERIES, help=f"config key, one line per value (default {DEFAULT_SERIES})"
    )
    parser.add_argument(
        "--metric",
        default=DEFAULT_METRIC,
        help=f"metric of metrics.json to tabulate (default {DEFAULT_METRIC})",
    )
    parser.add_argument("--out", type=Path, default=None, help="where to write the outputs (default: DIR)")
    parser.add_argument("--no-plot", action="store_true", help="write the tables only")
    args = parser.parse_args(argv)
    try:
        table = aggregate(args.dir, args.x, args.series, args.metric)
        out_dir = args.out or args.dir
        written = write_outputs(table, out_dir, with_plot=False)
        print(summary_markdown(table))
        if not args.no_plot:
            written.append(plot(table, Path(out_dir) / "sweep.png"))
    except ToolMasterError as exc:
        print(f"toolmaster.sweep: error: {exc}", file=sys.stderr)
        return 1
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
