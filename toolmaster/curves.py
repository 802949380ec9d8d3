"""GRPO train curves from the CSV logger: ``python -m toolmaster.curves <grpo run dir>... --out curves.png``.

Reads ``<run dir>/logs/metrics.csv`` (``logger=csv``, the default) of each GRPO run, one line per arm (the run
dir's name), and plots per GRPO step: train success (over every episode rolled out in the step), total reward,
and the share of first-round groups whose success varies (``train/groups/useful_success``, where logged).
Steps a resumed run logged twice keep their last row. ``--csv`` also writes the plotted values as one table.

Bad input (no metrics file, no train rows) prints one line and exits with code 2.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from toolmaster.errors import DataError

PANELS = (
    ("train/success", "train success"),
    ("train/reward/total", "reward (total)"),
    ("train/groups/useful_success", "groups with varied success"),
)


def read_curves(run_dir: Path) -> dict[str, dict[int, float]]:
    """{metric: {GRPO step (0-based, in logged order): value}} for the metrics of ``PANELS``."""
    path = run_dir / "logs" / "metrics.csv"
    if not path.is_file():
        raise DataError(f"{run_dir}: no logs/metrics.csv (a GRPO run with logger=csv writes it)")
    with path.open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("train/success")]
    if not rows:
        raise DataError(f"{path}: no train rows (did the GRPO run finish a step?)")
    curves: dict[str, dict[int, float]] = {key: {} for key, _ in PANELS}
    for row in rows:
        step = int(float(row["step"]))
        for key, _ in PANELS:
            if row.get(key):
                curves[key][step] = float(row[key])  # a resumed run's repeat of a step overwrites it
    return curves


def plot(runs: dict[str, dict[str, dict[int, float]]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.4), squeeze=False)
    for ax, (key, title) in zip(axes[0], PANELS):
        for name, curves in runs.items():
            points = sorted(curves[key].items())
            if points:
                ax.plot([s + 1 for s, _ in points], [v for _, v in points], marker="o", ms=3, label=name)
        ax.set_title(title)
        ax.set_xlabel("GRPO step")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def write_table(runs: dict[str, dict[str, dict[int, float]]], out: Path) -> None:
    keys = [key for key, _ in PANELS]
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["arm", "step", *keys])
        for name, curves in runs.items():
            for step in sorted({s for key in keys for s in curves[key]}):
                writer.writerow([name, step + 1, *(curves[key].get(step, "") for key in keys)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=Path, help="GRPO run dirs (each holds logs/metrics.csv)")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--csv", type=Path, default=None, help="also write the plotted values here")
    args = parser.parse_args(argv)
    try:
        runs = {run.name: read_curves(run) for run in args.runs}
    except DataError as exc:
        print(f"curves: {exc}", file=sys.stderr)
        return 2
    plot(runs, args.out)
    if args.csv is not None:
        write_table(runs, args.csv)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
