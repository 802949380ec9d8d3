"""``python -m toolmaster.bench.sft_step``: every variant trains on the same episodes and is reported."""

from __future__ import annotations

import math
import re

import pytest
from helpers.sft_conversations import write_dataset

from toolmaster.bench.sft_step import main, parse_variant


def test_variants_parse_and_typos_fail_with_one_line():
    assert parse_variant("fp32") == ("fp32", None, False, False, None, False)
    assert parse_variant("bf16-mixed+top15") == ("bf16-mixed", 15, False, False, None, False)
    assert parse_variant("bf16-mixed+top10+compact") == ("bf16-mixed", 10, True, False, None, False)
    assert parse_variant("fp32+compact+top2+mask") == ("fp32", 2, True, True, None, False)
    assert parse_variant("fp32+batch8").batch == 8
    assert parse_variant("fp32+logits+mask").logits
    for bad in (
        "fp16",
        "fp32+top",
        "fp32+topx",
        "fp32+compact+compact",
        "fp32+mask+mask",
        "fp32+logits+logits",
        "fp32+top1+top2",
        "fp32+fast",
    ):
        with pytest.raises(SystemExit, match="bad variant"):
            parse_variant(bad)


def _rows(out: str) -> list[list[str]]:
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("variant"))
    return [line.split() for line in lines[header + 1 :]]


def test_reports_every_variant_with_a_speed_up_over_the_first(tmp_path, capsys):
    data = write_dataset(tmp_path / "data.jsonl", 8)
    main(["--source", "tiny", "--data", str(data), "--steps", "1", "--batch", "2", "--max-length", "512",
          "--variants", "fp32,bf16-mixed,fp32+top1,bf16,fp32+mask,fp32+logits"])  # fmt: skip
    rows = _rows(capsys.readouterr().out)
    assert [row[0] for row in rows] == ["fp32", "bf16-mixed", "fp32+top1", "bf16", "fp32+mask", "fp32+logits"]
    assert float(rows[0][4]) == 1.0
    assert len({row[2] for row in rows}) == 1  # the same batches: the same tokens per step
    losses = [float(row[5]) for row in rows]
    assert all(math.isfinite(loss) and loss > 0 for loss in losses)
    # fp32 and bf16-mixed start from the same weights and batches: close, but not the same arithmetic
    assert losses[0] == pytest.approx(losses[1], rel=0.05)
    assert losses[0] == pytest.approx(losses[4], rel=1e-4)  # the padding mask changes no loss
    assert losses[0] == pytest.approx(losses[5], rel=1e-4)  # nor does the fused head


def test_compact_variants_train_on_the_same_episodes_in_fewer_tokens(tmp_path, capsys):
    """+compact reads the episodes written with chatml_compact (synthesized here by the real stage=synthesize
    in both renderings): the same tasks, fewer prompt tokens; --profile adds the time split."""
    main(["--source", "tiny", "--steps", "1", "--batch", "2", "--max-length", "1536", "--profile",
          "--variants", "fp32,fp32+compact,fp32+compact+batch1"])  # fmt: skip
    out = capsys.readouterr().out
    system = {
        match.group(1): float(match.group(2))
        for match in re.finditer(r"tokens per episode, (\S+): system (\d+)", out)
    }
    assert system["chatml_compact"] < 0.75 * system["chatml"]
    rows = _rows(out)
    assert [row[0] for row in rows] == ["fp32", "fp32+compact", "fp32+compact+batch1"]
    assert float(rows[2][2]) < float(rows[1][2])  # batches of one episode: fewer tokens per step
    assert float(rows[1][2]) < float(rows[0][2])  # fewer tokens per step
    shares = [float(x) for x in rows[0][-1].split("/")]
    assert sum(shares) == pytest.approx(1.0, abs=0.02) and shares[0] > 0  # three shares rounded to 0.01 each
