"""``trainer=fsdp_cpu`` end to end: 2 gloo processes, FSDP2-sharded tiny model, through ``python -m toolmaster``.

- SFT under ``fsdp_cpu`` matches the same run under ``ddp_cpu`` (losses and exported weights), and its HF
  export loads with transformers and equals the weights in its own sharded checkpoint;
- a run killed after a sharded checkpoint resumes from it to the same final weights as the uninterrupted run;
- LoRA under FSDP: the sharded checkpoint holds the adapter only, the merged export changes exactly the
  adapted projections;
- GRPO under FSDP (HF engine: the policy is gathered for the rollout; ``mu=2`` micro-batches with the gradient
  sync skipped on all but the last) runs its optimizer updates on the shards and exports them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers.commands import tiny_sft_command
from helpers.sft_conversations import write_dataset
from transformers import AutoModelForCausalLM

from toolmaster.models import load_model

REPO = Path(__file__).resolve().parents[2]
MAX_STEPS = 4
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _sft(run_dir: Path, data: Path, *overrides: str) -> list[str]:
    # the same arithmetic under DDP and FSDP (bf16 autocast would blur it)
    return tiny_sft_command(run_dir, data, "trainer.precision=32-true", *overrides)


def _run(command: list[str]) -> str:
    result = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


def _weights(path: Path) -> dict[str, torch.Tensor]:
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    return {name: t.detach() for name, t in model.state_dict().items()}


def _checkpoint_step(path: Path) -> int | None:
    try:
        return int(torch.load(path / "meta.pt", map_location="cpu", weights_only=False)["global_step"])
    except Exception:  # noqa: BLE001 - not there yet / being written
        return None


def _checkpoint_model_weights(path: Path) -> dict[str, torch.Tensor]:
    """The model tensors of a sharded checkpoint, read in this single process (no process group)."""
    from lightning_fabric.utilities.load import _load_distributed_checkpoint

    state = _load_distributed_checkpoint(path)["state_dict"]
    return {k.removeprefix("model."): v for k, v in state.items()}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("fsdp") / "data.jsonl", 10)


@pytest.fixture(scope="module")
def fsdp_run(data, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("fsdp_run") / "run"
    output = _run(
        _sft(
            run_dir,
            data,
            "trainer=fsdp_cpu",
            f"trainer.max_steps={MAX_STEPS}",
            "stage.checkpoint_every_n_steps=1",
        )
    )
    assert "MEMBER: 2/2" in output and "sharded 2 blocks + root over 2 processes" in output
    return run_dir


def test_fsdp_sft_matches_ddp_and_exports_its_checkpoint_weights(data, fsdp_run, tmp_path):
    ddp_dir = tmp_path / "ddp"
    _run(_sft(ddp_dir, data, "trainer=ddp_cpu", f"trainer.max_steps={MAX_STEPS}"))
    fsdp = json.loads((fsdp_run / "sft_summary.json").read_text())
    ddp = json.loads((ddp_dir / "sft_summary.json").read_text())
    assert fsdp["global_step"] == ddp["global_step"] == MAX_STEPS
    assert fsdp["train_loss"] == pytest.approx(ddp["train_loss"], rel=1e-4)
    assert fsdp["val_loss"] == pytest.approx(ddp["val_loss"], rel=1e-4)

    exported, reference = _weights(fsdp_run / "hf"), _weights(ddp_dir / "hf")
    initial = load_model(source="tiny", dtype="float32", device="cpu").model.state_dict()
    assert exported.keys() == reference.keys()
    for name, tensor in exported.items():
        torch.testing.assert_close(tensor, reference[name], rtol=1e-4, atol=1e-5, msg=name)
    assert any(not torch.equal(exported[n], initial[n]) for n in exported)  # it trained

    checkpoint = fsdp_run / "checkpoints" / "last.ckpt"
    assert checkpoint.is_dir() and sorted(p.name for p in checkpoint.glob("*.distcp")) == [
        "__0_0.distcp",
        "__1_0.distcp",
    ]
    saved = _checkpoint_model_weights(checkpoint)
    for name, tensor in saved.items():
        assert torch.equal(exported[name], tensor), name  # the export is the trained weights, exactly


def test_killed_fsdp_run_resumes_from_its_sharded_checkpoint_to_the_same_weights(data, fsdp_run, tmp_path):
    run_dir = tmp_path / "killed"
    last = run_dir / "checkpoints" / "last.ckpt"
    command = _sft(
        run_dir,
        data,
        "trainer=fsdp_cpu",
        f"trainer.max_steps={MAX_STEPS}",
        "stage.checkpoint_every_n_steps=1",
    )
    log_path = tmp_path / "first.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            command, cwd=REPO, env=ENV, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 400
            while time.monotonic() < deadline and proc.poll() is None:
                step = _checkpoint_step(last)
                if step is not None and step >= 1:
                    break
                time.sleep(0.05)
            alive = proc.poll() is None
            os.killpg(proc.pid, signal.SIGKILL)  # both ranks (the launcher started rank 1 in its group)
        finally:
            proc.wait()
    assert alive, "the run ended before it could be killed:\n" + log_path.read_text()[-3000:]
    killed_at = _checkpoint_step(last)
    assert killed_at is not None and 1 <= killed_at < MAX_STEPS
    assert not (run_dir / "hf").exists()

    _run([*command, "stage.resume=auto"])
    summary = json.loads((run_dir / "sft_summary.json").read_text())
    assert summary["global_step"] == MAX_STEPS and summary["resumed_from"] == str(last)
    resumed, uninterrupted = _weights(run_dir / "hf"), _weights(fsdp_run / "hf")
    for name, tensor in resumed.items():
        torch.testing.assert_close(tensor, uninterrupted[name], rtol=1e-5, atol=1e-6, msg=name)


def test_lora_under_fsdp_checkpoints_the_adapter_and_exports_a_merge(data, tmp_path):
    from torch.distributed.checkpoint import FileSystemReader

    run_dir = tmp_path / "lora"
    _run(_sft(run_dir, data, "trainer=fsdp_cpu", "model/lora=enabled", "trainer.max_steps=2"))
    keys = FileSystemReader(str(run_dir / "checkpoints" / "last.ckpt")).read_metadata().state_dict_metadata
    model_keys = [k for k in keys if k.startswith("state_dict.")]
    assert model_keys and all("lora_" in k for k in model_keys)  # the frozen base is rebuilt, not saved

    merged = _weights(run_dir / "hf")
    initial = load_model(source="tiny", dtype="float32", device="cpu").model.state_dict()
    assert merged.keys() == initial.keys()
    adapted = {n for n in merged if n.endswith("proj.weight")}
    changed = {n for n in merged if not torch.equal(merged[n], initial[n])}
    assert changed and changed <= adapted  # only the LoRA-adapted projections moved
    info = json.loads((run_dir / "hf" / "toolmaster_export.json").read_text())
    assert info["lora_merged"] is True


def test_grpo_under_fsdp_rolls_out_trains_and_exports(tmp_path):
    run_dir = tmp_path / "grpo"
    _run(
        [
            sys.executable,
            "-m",
            "toolmaster",
            "stage=grpo",
            "model=tiny",
            "reward=shaped",
            "data.train_limit=6",
            "stage.val_every_n_steps=null",
            "sampler.max_turns=1",
            "sampler.max_new_tokens=8",
            "stage.tasks_per_step=1",
            "stage.group_size=2",
            "stage.mu=2",
            "stage.micro_batch_size=1",
            "stage.lr=1e-3",
            # a random tiny policy's groups often score alike (zero advantages, zero gradients): weight decay
            # still moves the sharded matrices at every optimizer update, which the export must show
            "stage.weight_decay=0.1",
            "trainer=fsdp_cpu",
            "trainer.max_steps=2",
            "trainer.enable_progress_bar=false",
            f"hydra.run.dir={run_dir}",
        ]
    )
    summary = json.loads((run_dir / "grpo_summary.json").read_text())
    assert summary["grpo_steps"] == 2 and summary["world_size"] == 2
    exported = _weights(run_dir / "hf")
    initial = load_model(source="tiny", dtype="float32", device="cpu").model.state_dict()
    assert any(not torch.equal(exported[n], initial[n]) for n in exported)
