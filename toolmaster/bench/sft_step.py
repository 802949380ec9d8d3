"""SFT step time by precision and by how many layers train, side by side in one process.

Every variant trains a fresh copy of the same model for ``--steps`` AdamW steps on the same batches (the
first ``--steps`` batches of ``stage=sft``'s own data loader over oracle trial-and-execution episodes), after
one warm-up step that is not timed, and reports seconds per step, the ratio to the first variant and the
loss of its last step. A variant is ``<precision>`` or ``<precision>+top<N>``:

- ``fp32``: fp32 weights and compute (``trainer.precision=32-true`` with ``model.dtype=float32``);
- ``bf16-mixed``: fp32 master weights, forward under ``torch.autocast(cpu, bfloat16)``, what Lightning's
  ``bf16-mixed`` does on CPU (fast only where the CPU has native bf16: AVX512-BF16 / AMX);
- ``bf16``: bf16 weights, gradients and optimizer updates (``32-true`` on a bf16 model). Small updates are
  rounded away in bf16 weights; listed to show what that precision costs in loss, not as a recommendation;
- ``+top<N>``: ``model.train_top_layers=N`` (embeddings and lower layers frozen, no backward through them).

    python -m toolmaster.bench.sft_step                        # synthesizes 64 oracle episodes first
    python -m toolmaster.bench.sft_step --data <run>/synthesize/data.jsonl --variants fp32,bf16-mixed
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

DEFAULT_VARIANTS = "fp32,fp32+top15,bf16-mixed,bf16-mixed+top15,bf16"
PRECISIONS = ("fp32", "bf16-mixed", "bf16")


def parse_variant(variant: str) -> tuple[str, int | None]:
    """``bf16-mixed+top15`` -> (``bf16-mixed``, 15); ``fp32`` -> (``fp32``, None)."""
    precision, marker, top = variant.partition("+top")
    if precision not in PRECISIONS or (marker and not top.isdigit()):
        raise SystemExit(
            f"sft_step: bad variant {variant!r}: <precision>[+top<N>], precision one of {', '.join(PRECISIONS)}"
        )
    return precision, int(top) if top else None


def synthesize(out_dir: Path, tasks: int) -> Path:
    """Oracle episodes on the training split, written by ``stage=synthesize`` (a few seconds)."""
    command = [
        sys.executable, "-m", "toolmaster", "stage=synthesize", "teacher=oracle",
        f"data.train_limit={tasks}", f"hydra.run.dir={out_dir}",
    ]  # fmt: skip
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return out_dir / "data.jsonl"


def time_variant(
    variant: str, batches: list[dict[str, torch.Tensor]], lr: float, seed: int, source: str = "smollm2"
) -> tuple[float, float]:
    """(seconds per step over all but the warm-up step, loss of the last step)."""
    from toolmaster.algorithms.logprobs import token_losses
    from toolmaster.models import load_model

    precision, top = parse_variant(variant)
    dtype = "bfloat16" if precision == "bf16" else "float32"
    model = load_model(source=source, dtype=dtype, device="cpu", seed=seed, train_top_layers=top).model
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    autocast = (
        torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16-mixed" else contextlib.nullcontext()
    )
    times, loss = [], float("nan")
    for batch in batches:
        started = time.perf_counter()
        with autocast:
            total, count = token_losses(model, batch)
            step_loss = total / count.clamp(min=1)
        step_loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - started)
        loss = float(step_loss.detach())
    timed = times[1:] or times
    return sum(timed) / len(timed), loss


def first_batches(
    data: Path, count: int, batch_size: int, max_length: int, seed: int
) -> list[dict[str, Any]]:
    from toolmaster.models.loading import load_tokenizer
    from toolmaster.protocol import get_chat_format
    from toolmaster.stages.sft.data import SFTDataModule

    module = SFTDataModule(
        data,
        load_tokenizer("smollm2"),
        get_chat_format("chatml"),
        batch_size=batch_size,
        max_length=max_length,
        val_fraction=0.0,
        seed=seed,
    )
    module.setup("fit")
    batches = []
    for batch in module.train_dataloader():
        batches.append(batch)
        if len(batches) == count:
            return batches
    raise SystemExit(f"sft_step: {data} gives only {len(batches)} batches of {batch_size}; need {count}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=None, help="SFT JSONL (default: synthesize one)")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"default: {DEFAULT_VARIANTS}")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per variant (+1 warm-up)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=1536)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source", default="smollm2", choices=["smollm2", "tiny"], help="tiny: for tests")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for variant in variants:
        parse_variant(variant)  # fail on a typo before any work

    from toolmaster.models.loading import cpu_has_fast_bf16

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or synthesize(Path(tmp) / "synthesize", 64)
        batches = first_batches(data, args.steps + 1, args.batch, args.max_length, args.seed)
    tokens = sum(int(b["attention_mask"].sum()) for b in batches[1:]) / max(1, len(batches) - 1)
    print(
        f"{args.source}, {args.steps} timed steps of batch {args.batch} "
        f"(~{tokens:.0f} tokens/step), {torch.get_num_threads()} threads, "
        f"native CPU bf16: {'yes' if cpu_has_fast_bf16() else 'no'}"
    )
    print(f"{'variant':<20} {'s/step':>8} {'ratio':>7} {'last loss':>10}")
    baseline = None
    for variant in variants:
        seconds, loss = time_variant(variant, batches, args.lr, args.seed, args.source)
        baseline = baseline or seconds
        print(f"{variant:<20} {seconds:>8.2f} {seconds / baseline:>7.2f} {loss:>10.4f}")


if __name__ == "__main__":
    main()
