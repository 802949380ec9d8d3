"""Pool a pipeline's comparison over seeds: ``python -m toolmaster.seeds RUN_DIR [RUN_DIR ...]``.

Each RUN_DIR is one finished ``stage=pipeline`` run (e.g. ``+experiment=paper_small seed=1``) holding
``comparison.json``, or that ``comparison.json`` itself (e.g. a copy kept in ``experiments/*/results/``, when
the run dir under ``outputs/`` is gone). For every arm and split the table gives the mean success over the
seeds, the 95% Wilson interval of the episodes pooled over seeds (every seed evaluates the same number of tasks, so the pooled rate is
the mean), and the per-seed values. ``--gap A:B`` adds the difference A - B per split with Newcombe's
hybrid score interval (method 10, from the two Wilson intervals; the arms' episodes are treated as
independent samples, which they are across seeds: each seed builds its own world and tasks).

Writes ``--out`` (markdown; ``.json`` beside it) when given and prints the tables. A run dir without
``comparison.json`` (unfinished) or with other arms than the first fails in one line, exit 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from toolmaster.sweep import wilson_interval


class SeedsError(ValueError):
    """A run dir that cannot be pooled (missing, unfinished, or with different arms or splits)."""


@dataclass
class PooledCell:
    mean: float
    low: float
    high: float
    episodes: int
    per_seed: list[float]


def load_comparisons(run_dirs: Sequence[str | Path]) -> list[dict[str, Any]]:
    comparisons = []
    for run_dir in run_dirs:
        path = Path(run_dir)
        if not path.name.endswith(".json"):
            path = path / "comparison.json"
        if not path.is_file():
            raise SeedsError(f"{path} does not exist: is {run_dir} a finished pipeline run?")
        try:
            comparisons.append(json.loads(path.read_text()))
        except json.JSONDecodeError as exc:
            raise SeedsError(f"{path} is not valid JSON: {exc}") from None
    return comparisons


def pool(comparisons: list[dict[str, Any]]) -> tuple[list[str], dict[str, dict[str, PooledCell]]]:
    """splits, and arm -> split -> the cell pooled over the comparisons (one per seed)."""
    if not comparisons:
        raise SeedsError("no run dirs given")
    first = comparisons[0]
    arms = [row["label"] for row in first["rows"]]
    for index, comparison in enumerate(comparisons[1:], start=2):
        theirs = [row["label"] for row in comparison["rows"]]
        if theirs != arms:
            raise SeedsError(f"run dir {index} has arms {theirs}, the first has {arms}")
    splits = list(first["splits"])
    table: dict[str, dict[str, PooledCell]] = {}
    for arm_index, arm in enumerate(arms):
        for split in splits:
            rates, counts = [], []
            for comparison in comparisons:
                row = comparison["rows"][arm_index]
                if split not in row["success"]:
                    raise SeedsError(f"arm {arm!r} has no {split!r} result in one of the run dirs")
                rates.append(float(row["success"][split]))
                counts.append(int(row["episodes"][split]))
            episodes = sum(counts)
            successes = sum(r * n for r, n in zip(rates, counts, strict=True))
            low, high = wilson_interval(successes, episodes)
            table.setdefault(arm, {})[split] = PooledCell(successes / episodes, low, high, episodes, rates)
    return splits, table


def newcombe_gap(a: PooledCell, b: PooledCell) -> tuple[float, float, float]:
    """a - b with Newcombe's hybrid score 95% interval (from each rate's Wilson interval)."""
    gap = a.mean - b.mean
    low = gap - math.sqrt((a.mean - a.low) ** 2 + (b.high - b.mean) ** 2)
    high = gap + math.sqrt((a.high - a.mean) ** 2 + (b.mean - b.low) ** 2)
    return gap, low, high


def to_markdown(
    splits: list[str], table: dict[str, dict[str, PooledCell]], gaps: list[tuple[str, str]], seeds: int
) -> str:
    lines = [
        f"Success over {seeds} seed(s): mean [95% Wilson interval of the pooled episodes] (per seed).",
        "",
        "| arm | " + " | ".join(splits) + " |",
        "|---" * (len(splits) + 1) + "|",
    ]
    for arm, row in table.items():
        cells = []
        for split in splits:
            cell = row[split]
            per_seed = " / ".join(f"{v:.3f}" for v in cell.per_seed)
            cells.append(f"{cell.mean:.3f} [{cell.low:.3f}, {cell.high:.3f}] ({per_seed})")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    if gaps:
        lines += ["", "Gaps: A - B, with Newcombe's 95% interval.", ""]
        lines += ["| gap | " + " | ".join(splits) + " |", "|---" * (len(splits) + 1) + "|"]
        for a, b in gaps:
            cells = []
            for split in splits:
                gap, low, high = newcombe_gap(table[a][split], table[b][split])
                cells.append(f"{gap:+.3f} [{low:+.3f}, {high:+.3f}]")
            lines.append(f"| {a} - {b} | " + " | ".join(cells) + " |")
    episodes = sorted({c.episodes for row in table.values() for c in row.values()})
    lines += ["", f"Episodes per cell (pooled over seeds): {', '.join(map(str, episodes))}."]
    return "\n".join(lines) + "\n"


def parse_gap(text: str, arms: list[str]) -> tuple[str, str]:
    a, sep, b = text.partition(":")
    if not sep or a not in arms or b not in arms:
        raise SeedsError(f"--gap {text!r} must be A:B with A and B among the arms {', '.join(arms)}")
    return a, b


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toolmaster.seeds", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "run_dirs", nargs="+", help="finished pipeline run dirs (or their comparison.json), one per seed"
    )
    parser.add_argument("--gap", action="append", default=[], help="A:B, two arms to subtract (repeatable)")
    parser.add_argument("--out", default=None, help="write the markdown here (and the JSON beside it)")
    args = parser.parse_args(argv)
    try:
        splits, table = pool(load_comparisons(args.run_dirs))
        gaps = [parse_gap(text, list(table)) for text in args.gap]
    except SeedsError as exc:
        print(f"toolmaster.seeds: {exc}", file=sys.stderr)
        return 2
    text = to_markdown(splits, table, gaps, len(args.run_dirs))
    print(text, end="")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        data = {
            "run_dirs": [str(d) for d in args.run_dirs],
            "splits": splits,
            "arms": {arm: {s: asdict(c) for s, c in row.items()} for arm, row in table.items()},
            "gaps": {
                f"{a} - {b}": {
                    s: dict(zip(("gap", "low", "high"), newcombe_gap(table[a][s], table[b][s]), strict=True))
                    for s in splits
                }
                for a, b in gaps
            },
        }
        out.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
