"""The command line's pre-check (``toolmaster.cli.precheck``) on the drills of issue 19, in-process: trainer
ranges, dtype choices, top-level keys nothing reads, and local model paths (only for the real command line)."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolmaster.cli import precheck
from toolmaster.interrupts import resume_command, saved_summary


@pytest.mark.parametrize(
    "overrides,line",
    [
        (["trainer.max_steps=-5"], "bad value trainer.max_steps=-5; expected an integer >= 1 or -1"),
        (["trainer.max_steps=0"], "bad value trainer.max_steps=0; expected an integer >= 1 or -1"),
        (
            ["trainer.max_epochs=-3"],
            "bad value trainer.max_epochs=-3; expected an integer >= 1 or -1 or None",
        ),
        (
            ["trainer.accumulate_grad_batches=0"],
            "bad value trainer.accumulate_grad_batches=0; expected an integer >= 1",
        ),
        (
            ["trainer.gradient_clip_val=-1"],
            "bad value trainer.gradient_clip_val=-1; expected a number >= 0 or None",
        ),
        (
            ["trainer.devices=0"],
            "bad value trainer.devices=0; expected an integer >= 1, -1 (all), 'auto' or a list of device ids",
        ),
        (
            ["model.dtype=float8"],
            "bad value model.dtype='float8'; expected one of 'auto', 'bfloat16', 'float32', 'float16'",
        ),
        (["model.source=gguf"], "bad value model.source='gguf'; expected one of 'smollm2', 'tiny', 'hf'"),
        (
            ["+foo=bar"],
            "unknown top-level key 'foo': nothing reads it; top-level keys: data, logger, model, output_dir, "
            "reward, sampler, seed, stage, teacher, tools, trainer",
        ),
    ],
)
def test_bad_values_are_one_line(overrides, line):
    assert precheck(["model=tiny", *overrides]) == line


@pytest.mark.parametrize(
    "overrides",
    [
        ["trainer.max_steps=-1"],
        ["trainer=ddp_gpu"],
        ["++seed=3"],
        ["+experiment=quickstart"],
        ["+experiment=ablation", "model.path=null"],
        ["model/lora=enabled", "model.lora.r=8"],
        ["model=hf", "model.path=HuggingFaceTB/SmolLM2-135M-Instruct"],
    ],
)
def test_good_command_lines_pass(overrides):
    assert precheck(["model=tiny", *overrides], local_paths=True) is None


def test_an_experiment_whose_model_path_is_missing_fails_at_once():
    line = precheck(["+experiment=ablation_sweep", "-m", "model.path=outputs/sft/hf"], local_paths=True)
    assert line.startswith("model.path='outputs/sft/hf': no such directory ("), line


def test_local_model_paths_are_checked_only_for_the_real_command_line(tmp_path):
    missing = tmp_path / "sft" / "hf"
    argv = ["model=hf", f"model.path={missing}"]
    assert precheck(argv) is None  # a pipeline's later step: the directory appears when sft has run
    assert precheck(argv, local_paths=True).startswith(f"model.path='{missing}': no such directory")


def test_interrupt_summary_reads_the_run_directory(tmp_path):
    run = Path(tmp_path)
    assert resume_command(["stage=sft", "hydra.run.dir=old", "x=a b"], run) == (
        f"python -m toolmaster stage=sft 'x=a b' hydra.run.dir={run}"
    )
    stage = {
        "checkpoint_every_n_steps": 50,
        "output_path": str(run / "data.jsonl"),
        "steps": {"a": {}, "b": {}},
    }
    assert saved_summary("sft", stage, run) == (
        "no checkpoint saved yet (the first comes at step 50); a rerun starts over",
        False,
    )
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert saved_summary("grpo", stage, run)[1] is True
    (run / "data.jsonl").write_text('{"a": 1}\n{"a": 2}\n{"a": 3')  # a torn last line is not counted
    (run / "data.attempts.jsonl").write_text('{"t": 1}\n')
    assert saved_summary("synthesize", stage, run) == (
        f"saved 2 episodes of 1 finished tasks in {run / 'data.jsonl'}; the run resumes after them",
        True,
    )
    (run / "a").mkdir()
    (run / "a" / ".done").write_text("{}")
    assert saved_summary("pipeline", stage, run) == ("finished steps kept: a (1/2); the run skips them", True)
