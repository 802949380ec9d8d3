"""``python -m toolmaster.bench.sft_step``: every variant trains on the same batches and is reported."""

from __future__ import annotations

import math

import pytest
from helpers.sft_conversations import write_dataset

from toolmaster.bench.sft_step import main, parse_variant


def test_variants_parse_and_typos_fail_with_one_line():
    assert parse_variant("fp32") == ("fp32", None)
    assert parse_variant("bf16-mixed+top15") == ("bf16-mixed", 15)
    for bad in ("fp16", "fp32+top", "fp32+topx"):
        with pytest.raises(SystemExit, match="bad variant"):
            parse_variant(bad)


def test_reports_every_variant_with_a_ratio_to_the_first(tmp_path, capsys):
    data = write_dataset(tmp_path / "data.jsonl", 8)
    main(["--source", "tiny", "--data", str(data), "--steps", "1", "--batch", "2", "--max-length", "512",
          "--variants", "fp32,bf16-mixed,fp32+top1,bf16"])  # fmt: skip
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [row[0] for row in rows] == ["fp32", "bf16-mixed", "fp32+top1", "bf16"]
    assert float(rows[0][2]) == 1.0
    losses = [float(row[3]) for row in rows]
    assert all(math.isfinite(loss) and loss > 0 for loss in losses)
    # fp32 and bf16-mixed start from the same weights and batches: close, but not the same arithmetic
    assert losses[0] == pytest.approx(losses[1], rel=0.05)
