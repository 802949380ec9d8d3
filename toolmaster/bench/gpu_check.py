"""One script a GPU machine runs in a few minutes, offline: the sharded trainer, vLLM weight sync, rollout speed.

    python -m toolmaster.bench.gpu_check                  # on a GPU: shape qwen2.5-0.5b, vLLM, ~5 min
    python -m toolmaster.bench.gpu_check --device cpu     # the same steps on CPU: tiny model, HF engine
    python -m toolmaster.bench.gpu_check --dry-run        # print the steps' commands, run nothing

Steps, each printed with its figures (``figure <name> = <value>`` lines, easy to grep):

1. model: a randomly initialised model of a real shape (``toolmaster.bench.shapes``, default qwen2.5-0.5b)
   saved as an HF checkpoint with SmolLM2's packaged tokenizer (nothing is downloaded); ``--device cpu``
   uses ``model=tiny`` instead;
2. data: ``stage=synthesize teacher=oracle`` (the scripted teacher: no model) on a few train tasks;
3. SFT: one step of ``stage=sft`` with the sharded trainer (``trainer=fsdp_gpu``, one GPU; ``fsdp_cpu`` with
   one process on CPU), its wall time and loss;
4. GRPO: one step of ``stage=grpo`` on the SFT export with the sharded trainer and ``sampler=vllm`` (sleep mode
   on CUDA): rollout, update, and the engine's weight sync from the shards; its phase times and reward;
5. sync: in this process, the model sharded with FSDP2 (world size 1) and streamed bucket by bucket into a
   colocated vLLM engine (``VLLMEngine.sync_weights``) after every weight was changed: the sync time, the peak
   gathered elements, and how many of 16 greedy tokens of vLLM agree with the changed HF model before and after;
5b. grpo_sync / grpo_async: four GRPO steps with the HF engine on one device, ``stage.async_rollout`` off and
   on (the overlapped path, ``toolmaster.stages.grpo.async_rollout``): mean step time after the first, and
   ``figure overlap.async_over_sync_step_time``;
6. rollout: ``toolmaster.bench.rollout --vllm`` (this project's HF sampler, ``model.generate`` and vLLM on the
   same episodes).

Exit status: 0 when every step ran, 1 otherwise (the failing step's output tail is printed). Each step has a
time limit; the whole run is sized to stay under 8 minutes on one H100/H200-class GPU. Not yet run on a GPU
(docs/cluster.md, "GPU check").
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Step:
    name: str
    command: list[str]
    timeout_s: int
    figures: dict[str, Any] = field(default_factory=dict)


def cli(*overrides: str) -> list[str]:
    return [sys.executable, "-m", "toolmaster", *overrides]


def plan(work: Path, device: str, shape: str, use_vllm: bool) -> list[Step]:
    """The subprocess steps (2-4 and 6) as command lines; step 1 and 5 run in this process."""
    gpu = device == "cuda"
    model = ["model=hf", f"model.path={work / 'model'}"] if gpu else ["model=tiny"]
    trainer = ["trainer=fsdp_gpu" if gpu else "trainer=fsdp_cpu", "trainer.devices=1"]
    quiet = ["trainer.enable_progress_bar=false", "logger=csv"]
    sampler = ["sampler=vllm", "sampler.engine.enable_sleep_mode=true"] if gpu else ["sampler=hf"]
    if use_vllm and not gpu:
        sampler = ["sampler=vllm"]
    synth = cli("stage=synthesize", "teacher=oracle", "data.train_limit=8", f"hydra.run.dir={work / 'synth'}")
    sft = cli(
        "stage=sft",
        *model,
        *trainer,
        *quiet,
        f"data.sft_path={work / 'synth' / 'data.jsonl'}",
        "stage.batch_size=4",
        "stage.max_length=1024",
        "stage.val_fraction=0",
        "trainer.max_steps=1",
        f"hydra.run.dir={work / 'sft'}",
    )
    # one GRPO step's size, shared by the sharded step and the sync / async pair below
    grpo_size = [
        "reward=shaped",
        "sampler.max_turns=2",
        "sampler.max_new_tokens=32",
        "sampler.max_total_tokens=1024",
        "stage.tasks_per_step=2",
        "stage.group_size=4",
    ]
    sft_export = ["stage=grpo", "model=hf", f"model.path={work / 'sft' / 'hf'}"]
    grpo = cli(
        *sft_export,
        *trainer,
        *quiet,
        *sampler,
        *grpo_size,
        "stage.micro_batch_size=4",
        "trainer.max_steps=1",
        f"hydra.run.dir={work / 'grpo'}",
    )
    steps = [Step("synthesize", synth, 120), Step("sft", sft, 150), Step("grpo", grpo, 180)]
    # the same GRPO steps with the HF engine, synchronous then overlapped (stage.async_rollout): both paths timed
    for name, overlapped in (("grpo_sync", "false"), ("grpo_async", "true")):
        run = cli(
            *sft_export,
            "trainer.devices=1",
            *quiet,
            "sampler=hf",
            *grpo_size,
            "stage.micro_batch_size=8",
            "stage.old_logprobs=sampler",
            f"stage.async_rollout={overlapped}",
            f"trainer.max_steps={OVERLAP_STEPS}",
            f"hydra.run.dir={work / name}",
        )
        steps.append(Step(name, run, 180))
    if gpu or use_vllm:
        bench = [sys.executable, "-m", "toolmaster.bench.rollout", "--vllm", "--repeats", "1"]
        bench += ["--random-shape", shape, "--batch", "32"] if gpu else ["--source", "tiny", "--batch", "4"]
        steps.append(Step("rollout", bench, 150))
    return steps


def save_random_model(shape: str, directory: Path) -> dict[str, Any]:
    """Step 1: a seeded random model of ``shape`` as an HF checkpoint (bf16) plus the packaged tokenizer."""
    import torch

    from toolmaster.bench.shapes import random_model

    start = time.perf_counter()
    lm = random_model(shape, torch.bfloat16, "cpu")
    lm.model.save_pretrained(str(directory))
    lm.tokenizer.save_pretrained(str(directory))
    params = sum(p.numel() for p in lm.model.parameters())
    return {"params_M": round(params / 1e6, 1), "save_s": round(time.perf_counter() - start, 1)}


def run_step(step: Step) -> tuple[bool, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    try:
        result = subprocess.run(step.command, capture_output=True, text=True, timeout=step.timeout_s, env=env)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return False, f"timed out after {step.timeout_s} s\n{out[-3000:]}"
    step.figures["wall_s"] = round(time.perf_counter() - start, 1)
    return result.returncode == 0, (result.stdout + result.stderr)


OVERLAP_STEPS = 4  # GRPO steps of each path in grpo_sync / grpo_async (the first is not overlapped)


def mean_step_seconds(run_dir: Path, first: int = 1) -> float | None:
    """Mean over logged GRPO steps (from the ``first``-th on) of rollout (or the wait for it) + score + update."""
    import csv

    totals = []
    for path in run_dir.rglob("metrics.csv"):
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                parts = [row.get(f"train/time/{k}") for k in ("rollout", "score", "update")]
                if all(parts):
                    totals.append(sum(float(v) for v in parts))  # type: ignore[arg-type]
    totals = totals[first:] or totals
    return round(sum(totals) / len(totals), 3) if totals else None


def read_figures(step: Step, work: Path, output: str) -> None:
    """The numbers worth printing from a finished step's run directory or output."""
    if step.name == "synthesize":
        path = work / "synth" / "data.jsonl"
        step.figures["episodes"] = sum(1 for _ in path.open()) if path.exists() else 0
    elif step.name == "sft":
        summary = json.loads((work / "sft" / "sft_summary.json").read_text())
        step.figures.update(global_step=summary["global_step"], train_loss=summary["train_loss"])
    elif step.name == "grpo":
        summary = json.loads((work / "grpo" / "grpo_summary.json").read_text())
        step.figures.update(grpo_steps=summary["grpo_steps"], train_reward=summary["train_reward"])
        step.figures.update(last_csv_values(work / "grpo", "train/time/"))
    elif step.name in ("grpo_sync", "grpo_async"):
        step.figures["step_s"] = mean_step_seconds(work / step.name)
    elif step.name == "rollout":
        for line in output.splitlines():
            match = re.match(
                r"(toolmaster sampler|model\.generate|vLLM engine)\s*:.*-> ([\d.]+) tokens/s", line
            )
            if match:
                step.figures[match.group(1).split()[0].lower() + "_tokens_per_s"] = float(match.group(2))


def last_csv_values(run_dir: Path, prefix: str) -> dict[str, float]:
    import csv

    values: dict[str, float] = {}
    for path in run_dir.rglob("metrics.csv"):
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                for key, value in row.items():
                    if key.startswith(prefix) and value:
                        values[key.removeprefix(prefix) + "_s"] = round(float(value), 2)
    return values


def weight_sync(model_dir: Path | None, device: str, bucket_numel: int = 16 * 1024 * 1024) -> dict[str, Any]:
    """Step 5: shard the model (world size 1), stream it into a colocated vLLM engine bucket by bucket, time
    the sync, and compare 16 greedy tokens of vLLM with the HF model's on one prompt."""
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    from toolmaster.models import load_model
    from toolmaster.samplers.base import SamplingParams
    from toolmaster.samplers.vllm_engine import VLLMEngine
    from toolmaster.training.gather import gathered
    from toolmaster.training.sharding import shard_model

    if not dist.is_initialized():
        rendezvous = Path(tempfile.mkdtemp(prefix="toolmaster-pg-")) / "rendezvous"
        backend = "nccl" if device == "cuda" else "gloo"
        dist.init_process_group(backend, init_method=f"file://{rendezvous}", rank=0, world_size=1)
    if model_dir is not None:
        lm = load_model(source="hf", path=str(model_dir), dtype="bfloat16", device=device)
    else:
        lm = load_model(source="tiny", dtype="float32", device=device)
    prompt = lm.tokenizer("Call the weather tool for Paris, then answer.")["input_ids"]
    model = shard_model(lm.model, init_device_mesh(device, (1,)))
    engine = VLLMEngine(  # starts from the checkpoint (or a snapshot), then syncs once
        model,
        lm.tokenizer,
        model_path=str(model_dir) if model_dir is not None else None,
        max_model_len=1024,
        gpu_memory_utilization=0.3,
        sync_bucket_numel=bucket_numel,
    )
    # change the policy (every weight x -1.5), so only a working sync makes the engine agree with it again
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(-1.5)
        with gathered(model):
            ids = torch.tensor([prompt], device=device)
            expected = model.generate(ids, do_sample=False, max_new_tokens=16, min_new_tokens=16)[
                0, len(prompt) :
            ]
    greedy = SamplingParams(temperature=0.0, max_new_tokens=16)
    stale = engine.generate([prompt], greedy, [16])[0].token_ids[:16]
    start = time.perf_counter()
    engine.sync_weights(model)
    if device == "cuda":
        torch.cuda.synchronize()
    sync_s = time.perf_counter() - start
    got = engine.generate([prompt], greedy, [16])[0].token_ids[:16]
    agree = sum(int(a == b) for a, b in zip(got, expected.tolist()))
    agree_stale = sum(int(a == b) for a, b in zip(stale, expected.tolist()))
    params = sum(t.numel() for t in model.parameters())
    return {
        "sync_s": round(sync_s, 3),
        "params_M": round(params / 1e6, 1),
        "bucket_numel": bucket_numel,
        "peak_gathered_numel": engine.last_sync_peak_numel,
        "greedy_tokens_agreeing_of_16": agree,
        "before_sync_agreeing_of_16": agree_stale,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda if available")
    parser.add_argument("--shape", default="qwen2.5-0.5b", help="toolmaster.bench.shapes name (GPU runs)")
    parser.add_argument(
        "--vllm", action="store_true", help="on CPU too: vLLM sampler, sync and rollout steps"
    )
    parser.add_argument("--workdir", default=None, help="default: a temporary directory")
    parser.add_argument("--dry-run", action="store_true", help="print the steps' commands and exit")
    args = parser.parse_args(argv)
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: --device cuda but no CUDA device is visible", file=sys.stderr)
        return 2
    use_vllm = device == "cuda" or args.vllm
    with tempfile.TemporaryDirectory(prefix="toolmaster-gpu-check-") as tmp:
        work = Path(args.workdir or tmp)
        steps = plan(work, device, args.shape, use_vllm)
        if args.dry_run:
            for step in steps:
                print(f"[{step.name}] {shlex.join(step.command)}")
            return 0
        name = torch.cuda.get_device_name(0) if device == "cuda" else f"CPU ({os.cpu_count()} cores)"
        print(f"gpu_check on {name}, torch {torch.__version__}, work dir {work}")
        started = time.perf_counter()
        ok = True
        if device == "cuda":
            report("model", save_random_model(args.shape, work / "model"))
        for step in steps:
            success, output = run_step(step)
            if success:
                read_figures(step, work, output)
            else:
                ok = False
                print(f"[{step.name}] FAILED: {shlex.join(step.command)}\n{output[-3000:]}")
            report(step.name, step.figures)
            if not success and step.name in ("synthesize", "sft"):
                break  # later steps need this one's output
        timed = {step.name: step.figures.get("step_s") for step in steps}
        if timed.get("grpo_sync") and timed.get("grpo_async"):
            report(
                "overlap", {"async_over_sync_step_time": round(timed["grpo_async"] / timed["grpo_sync"], 3)}
            )
        if use_vllm and ok:
            try:
                report("sync", weight_sync(work / "model" if device == "cuda" else None, device))
            except Exception as exc:  # noqa: BLE001 - report and fail, the other figures stand
                ok = False
                print(f"[sync] FAILED: {type(exc).__name__}: {exc}")
        report("total", {"wall_s": round(time.perf_counter() - started, 1)})
    return 0 if ok else 1


def report(step: str, figures: dict[str, Any]) -> None:
    for key, value in figures.items():
        print(f"figure {step}.{key} = {value}")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
