"""``stage=sft`` end to end: loss goes down on SmolLM2, exports reload to identical logits, a killed run
resumes where it stopped (in process, exactly; and as a SIGKILLed ``python -m toolmaster`` run), and the
2-process DDP (gloo) path trains and exports from rank 0.

Training data is generated here (``helpers.sft_conversations``): protocol episodes with trials, execution
calls, failures, observations and answers, in the JSONL format ``stage=synthesize`` writes.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from helpers.commands import tiny_sft_command
from helpers.sft_conversations import episode, write_dataset
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from peft import LoraConfig

from toolmaster.algorithms.logprobs import token_losses
from toolmaster.cli import CONF_DIR
from toolmaster.errors import ConfigError
from toolmaster.models import load_model
from toolmaster.protocol import get_chat_format, tokenize_conversation
from toolmaster.settings import SFTSettings
from toolmaster.stages.sft.data import SFTDataModule
from toolmaster.stages.sft.module import SFTModule
from toolmaster.training.checkpoints import resolve_resume
from toolmaster.training.export import EXPORT_INFO, export_hf
from toolmaster.training.trainer import Cadence, build_trainer

REPO = Path(__file__).resolve().parents[2]
LORA = LoraConfig(
    r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "up_proj"], task_type="CAUSAL_LM"
)
CPU_TRAINER = {
    "accelerator": "cpu",
    "devices": 1,
    "precision": "32-true",
    "gradient_clip_val": 1.0,
    "log_every_n_steps": 1,
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "num_sanity_val_steps": 0,
    "max_epochs": None,
}


class Recorder(pl.Callback):
    """Per optimizer step: the training loss and a fingerprint of the batch it trained on."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.batches: list[tuple[int, ...]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))
        self.batches.append((trainer.global_step, *batch["input_ids"].shape, int(batch["input_ids"].sum())))


class StopAt(pl.Callback):
    """Ends fit after ``step`` optimizer steps, as an interruption would (the schedule still targets max_steps)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def _fit(
    model: Any,
    tokenizer: Any,
    data: Path,
    out: Path,
    max_steps: int,
    stage: SFTSettings,
    ckpt: Path | None = None,
    checkpointing: bool = False,
    stop_at: int | None = None,
) -> tuple[pl.Trainer, SFTModule, Recorder]:
    dm = SFTDataModule(
        data,
        tokenizer,
        get_chat_format("chatml"),
        batch_size=stage.batch_size,
        max_length=stage.max_length,
        val_fraction=stage.val_fraction,
        seed=stage.seed,
    )
    dm.setup()
    module = SFTModule(model, stage)
    recorder = Recorder()
    config = {**CPU_TRAINER, "max_steps": max_steps, "enable_checkpointing": checkpointing}
    callbacks: list[pl.Callback] = [recorder] + ([StopAt(stop_at)] if stop_at else [])
    cadence = Cadence(stage.checkpoint_every_n_steps, stage.val_every_n_steps)
    trainer = build_trainer(
        config, out, cadence, logger=False, has_val=bool(dm.val_set), extra_callbacks=callbacks
    )
    trainer.fit(module, datamodule=dm, ckpt_path=str(ckpt) if ckpt else None)
    return trainer, module, recorder


def _logits(model: Any, tokenizer: Any) -> torch.Tensor:
    ids, _ = tokenize_conversation(tokenizer, get_chat_format("chatml"), episode(5)["messages"][:4])
    model.eval()
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits.float()


def _reload_logits(path: Path, tokenizer: Any) -> torch.Tensor:
    loaded = load_model(source="hf", path=str(path), dtype="float32", device="cpu")
    return _logits(loaded.model, loaded.tokenizer)


# ------------------------------------------------------------------------------------ real model, in process
@pytest.mark.slow
def test_full_finetuning_smollm2_lowers_the_loss_and_exports(tmp_path):
    data = write_dataset(tmp_path / "data.jsonl", 4, short=True)
    # own copy, not the session fixture: full fine-tuning changes the weights
    loaded = load_model(source="smollm2", dtype="float32", device="cpu")
    stage = SFTSettings(
        lr=1e-4, warmup_steps=1, schedule="cosine", batch_size=2, max_length=1024, val_fraction=0.0
    )
    trainer, module, rec = _fit(loaded.model, loaded.tokenizer, data, tmp_path / "run", 8, stage)
    assert trainer.global_step == 8 and len(rec.losses) == 8
    first, last = sum(rec.losses[:3]) / 3, sum(rec.losses[-3:]) / 3
    assert last < 0.7 * first, rec.losses
    export = export_hf(module.model, loaded.tokenizer, tmp_path / "hf")
    torch.testing.assert_close(
        _reload_logits(export, loaded.tokenizer), _logits(module.model, loaded.tokenizer), atol=1e-4, rtol=0
    )


def test_masked_loss_equals_the_models_own_shifted_loss(tmp_path):
    """token_losses (logits only where a label follows) == HF's full-logits loss with the same labels."""
    data = write_dataset(tmp_path / "data.jsonl", 3)
    loaded = load_model(source="tiny", dtype="float32", device="cpu")
    dm = SFTDataModule(data, loaded.tokenizer, get_chat_format("chatml"), batch_size=3, val_fraction=0.0)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    total, count = token_losses(loaded.model, batch)
    with torch.no_grad():
        reference = loaded.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
        ).loss
    assert int(count) == int((batch["labels"][:, 1:] != -100).sum()) > 0
    torch.testing.assert_close(total / count, reference, atol=1e-5, rtol=1e-5)


# -------------------------------------------------------------------------------------- export round trips
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora-merged"])
def test_export_reloads_to_identical_logits(tmp_path, lora):
    data = write_dataset(tmp_path / "data.jsonl", 6)
    loaded = load_model(source="tiny", dtype="float32", device="cpu", lora=LORA if lora else None)
    stage = SFTSettings(
        lr=1e-2, warmup_steps=0, schedule="constant", batch_size=2, max_length=512, val_fraction=0.0
    )
    _, module, rec = _fit(loaded.model, loaded.tokenizer, data, tmp_path / "run", 3, stage)
    assert len(rec.losses) == 3
    if lora:
        lora_b = [p for n, p in module.model.named_parameters() if "lora_B" in n]
        assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # the adapter really changed the model
    expected = _logits(module.model, loaded.tokenizer)
    export = export_hf(module.model, loaded.tokenizer, tmp_path / "hf", info={"global_step": 3})
    assert json.loads((export / EXPORT_INFO).read_text())["lora_merged"] is lora
    assert not (export / "adapter_config.json").exists()
    torch.testing.assert_close(_reload_logits(export, loaded.tokenizer), expected, atol=1e-4, rtol=0)
    # the default export copies before merging: the in-memory model is untouched
    torch.testing.assert_close(_logits(module.model, loaded.tokenizer), expected, atol=0, rtol=0)
    # exporting again replaces the directory atomically (no stray temporary directories)
    export_hf(module.model, loaded.tokenizer, export, merge=not lora)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    if lora:
        assert (export / "adapter_config.json").exists() and not (export / "model.safetensors").exists()


# ------------------------------------------------------------------------------------ resume, in process
def test_resume_mid_epoch_matches_an_uninterrupted_run(tmp_path):
    """Stop after 3 steps (mid-epoch), resume to 8 (across an epoch end): same batches, same weights."""
    data = write_dataset(tmp_path / "data.jsonl", 12)
    stage = SFTSettings(
        lr=3e-3,
        warmup_steps=2,
        schedule="cosine",
        batch_size=2,
        max_length=512,
        val_fraction=0.0,
        checkpoint_every_n_steps=1,
        seed=3,
    )

    def tiny():
        return load_model(source="tiny", dtype="float32", device="cpu", seed=1)

    ref = tiny()
    _, ref_module, ref_rec = _fit(ref.model, ref.tokenizer, data, tmp_path / "ref", 8, stage)

    first = tiny()
    _fit(first.model, first.tokenizer, data, tmp_path / "run", 8, stage, checkpointing=True, stop_at=3)
    ckpt = resolve_resume("auto", tmp_path / "run" / "checkpoints")
    assert ckpt is not None and torch.load(ckpt, weights_only=False)["global_step"] == 3
    second = tiny()  # fresh weights: everything must come from the checkpoint
    trainer, module, rec = _fit(
        second.model, second.tokenizer, data, tmp_path / "run", 8, stage, ckpt=ckpt, checkpointing=True
    )
    assert trainer.global_step == 8
    assert rec.batches == ref_rec.batches[3:]  # the data continues where it stopped, across the epoch end
    assert rec.losses == pytest.approx(ref_rec.losses[3:], rel=1e-4, abs=1e-5)
    for (name, a), b in zip(module.model.named_parameters(), ref_module.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)


def test_top_layer_training_leaves_the_rest_untouched_and_resumes_from_its_partial_checkpoint(tmp_path):
    """``model.train_top_layers=2`` of 4: the embeddings and layers 0-1 end bit-identical to the initial model,
    layers 2-3 change; checkpoints hold only the trainable tensors, and resuming from one on a fresh model
    (the frozen weights rebuilt from the config) ends where an uninterrupted run does."""
    data = write_dataset(tmp_path / "data.jsonl", 8)
    stage = SFTSettings(
        lr=3e-3, warmup_steps=1, batch_size=2, max_length=512, val_fraction=0.0, checkpoint_every_n_steps=1
    )

    def tiny():
        return load_model(
            source="tiny", dtype="float32", device="cpu", seed=1, tiny_num_layers=4, train_top_layers=2
        )

    initial = {n: p.detach().clone() for n, p in tiny().model.named_parameters()}
    ref = tiny()
    _, ref_module, _ = _fit(ref.model, ref.tokenizer, data, tmp_path / "ref", 4, stage)
    for name, param in ref_module.model.named_parameters():
        lower = "embed_tokens" in name or ".layers.0." in name or ".layers.1." in name
        assert torch.equal(param, initial[name]) is lower, name

    first = tiny()
    _fit(first.model, first.tokenizer, data, tmp_path / "run", 4, stage, checkpointing=True, stop_at=2)
    ckpt = resolve_resume("auto", tmp_path / "run" / "checkpoints")
    assert ckpt is not None
    saved = torch.load(ckpt, weights_only=False)["state_dict"]
    assert saved and not any("embed_tokens" in k or ".layers.0." in k for k in saved)
    second = tiny()
    _, module, _ = _fit(
        second.model, second.tokenizer, data, tmp_path / "run", 4, stage, ckpt=ckpt, checkpointing=True
    )
    for (name, a), b in zip(module.model.named_parameters(), ref_module.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)


def test_missing_sft_path_is_a_config_error(tmp_path):
    from toolmaster.run import run

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose("train", overrides=["stage=sft", "model=tiny", f"output_dir={tmp_path}"])
    finally:
        GlobalHydra.instance().clear()
    with pytest.raises(ConfigError, match="data.sft_path"):
        run(cfg)


# ------------------------------------------------------------------------------------------- subprocesses
def _command(run_dir: Path, data: Path, *overrides: str) -> list[str]:
    return tiny_sft_command(run_dir, data, *overrides)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def _checkpoint_step(path: Path) -> int | None:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=False, mmap=True)["global_step"])
    except Exception:  # noqa: BLE001 - not there yet / replaced while reading
        return None


def _logged_steps(run_dir: Path, key: str) -> list[int]:
    with open(run_dir / "logs" / "metrics.csv", newline="") as handle:
        return [int(row["step"]) for row in csv.DictReader(handle) if row.get(key)]


def test_killed_run_resumes_and_continues_the_step_count(tmp_path):
    data = write_dataset(tmp_path / "data.jsonl", 16)
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    command = _command(run_dir, data, "trainer.max_steps=6", "stage.checkpoint_every_n_steps=1")
    log_path = tmp_path / "first_run.log"
    with open(log_path, "wb") as log_file:  # a file, not a pipe: a full pipe would stall the run
        proc = subprocess.Popen(command, cwd=REPO, env=_env(), stdout=log_file, stderr=subprocess.STDOUT)
        try:
            deadline, seen_mtime = time.monotonic() + 240, None
            while time.monotonic() < deadline and proc.poll() is None:
                mtime = last.stat().st_mtime_ns if last.exists() else None
                if mtime is not None and mtime != seen_mtime:
                    seen_mtime = mtime
                    step = _checkpoint_step(last)
                    if step is not None and step >= 2:
                        break
                time.sleep(0.02)
            alive = proc.poll() is None
            proc.send_signal(signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    assert alive, "the run ended before it could be killed:\n" + log_path.read_text()[-3000:]
    assert proc.returncode == -signal.SIGKILL
    killed_at = _checkpoint_step(last)
    assert killed_at is not None and 2 <= killed_at < 6
    assert not (run_dir / "hf").exists()

    result = subprocess.run(
        [*command, "stage.resume=auto"], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "sft_summary.json").read_text())
    assert summary["global_step"] == 6 and summary["resumed_from"] == str(last)
    assert _checkpoint_step(last) == 6
    logged = _logged_steps(run_dir, "train/loss")
    assert logged[-(6 - killed_at) :] == list(range(killed_at, 6))  # continued, not restarted at 0
    assert logged[0] == 0  # the killed run's rows are kept (resumed runs append to logs/metrics.csv)
    assert summary["val_loss"] is not None and summary["val_loss"] > 0
    assert (run_dir / "hf" / "config.json").exists()


def test_ddp_cpu_two_processes_train_and_rank_zero_exports(tmp_path):
    data = write_dataset(tmp_path / "data.jsonl", 10)
    run_dir = tmp_path / "run"
    result = subprocess.run(
        _command(run_dir, data, "trainer=ddp_cpu", "trainer.max_steps=3"),
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=400,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "MEMBER: 2/2" in output  # the second process joined the gloo group
    summary = json.loads((run_dir / "sft_summary.json").read_text())
    assert summary["global_step"] == 3 and summary["val_loss"] > 0
    info = json.loads((run_dir / "hf" / EXPORT_INFO).read_text())
    assert info["global_step"] == 3
    assert [p.name for p in run_dir.iterdir() if p.name.startswith(".hf")] == []
    reloaded = load_model(source="hf", path=str(run_dir / "hf"), dtype="float32", device="cpu")
    assert _logits(reloaded.model, reloaded.tokenizer).isfinite().all()
    assert _logged_steps(run_dir, "train/loss") == [0, 1, 2]


def test_success_validation_syncs_an_engine_with_its_own_weights():
    """With ``sampler=vllm`` the SFT stage's success validation plays its episodes on an engine that keeps its
    own copy of the weights; it must be synced to the model being trained before every evaluation. A scripted
    engine stands in for vLLM here (the real engine is tested in test_vllm_sampler.py)."""
    from toolmaster.samplers.loop import RolloutConfig
    from toolmaster.samplers.scripted import ScriptedEngine
    from toolmaster.stages.sft.module import SuccessEval
    from toolmaster.worlds.toolworld import build_toolworld

    loaded = load_model(source="tiny", dtype="float32", device="cpu")
    synced: list[Any] = []

    class SyncedEngine(ScriptedEngine):
        def sync_weights(self, model: Any) -> None:
            synced.append(model)

    engine = SyncedEngine(loaded.tokenizer, lambda prompt: "<answer>42</answer>")
    world = build_toolworld(seed=0, n_train=2, n_test=2)
    evaluate = SuccessEval(
        world,
        "test_seen",
        2,
        RolloutConfig(max_turns=1, temperature=0.0),
        loaded.tokenizer,
        get_chat_format("chatml"),
        engine=engine,
    )
    metrics = evaluate(loaded.model)
    assert synced == [loaded.model] and metrics["episodes"] == 2 and metrics["valid_format"] == 1.0
    evaluate(loaded.model)
    assert len(synced) == 2
