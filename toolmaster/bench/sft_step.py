"""SFT episodes per CPU-hour by precision, trained layers and tool rendering, side by side in one process.

Every variant trains a fresh copy of the same model for ``--steps`` AdamW steps on batches of the *same
episodes* (the first ``(steps + 1) x batch`` oracle trial-and-execution episodes, sorted by length and cut
into batches as ``stage=sft``'s bucketing does), after one warm-up step that is not timed, and reports
seconds per step, tokens per step, SFT episodes per CPU-hour, the speed-up over the first variant (in
episodes per hour) and the loss of its last step. A variant is
``<precision>[+top<N>][+compact][+mask][+logits][+batch<N>]``:

- ``fp32``: fp32 weights and compute (``trainer.precision=32-true`` with ``model.dtype=float32``);
- ``bf16-mixed``: fp32 master weights, forward under ``torch.autocast(cpu, bfloat16)``, what Lightning's
  ``bf16-mixed`` does on CPU (fast only where the CPU has native bf16: AVX512-BF16 / AMX);
- ``bf16``: bf16 weights, gradients and optimizer updates (``32-true`` on a bf16 model). Small updates are
  rounded away in bf16 weights; listed to show what that precision costs in loss, not as a recommendation;
- ``+top<N>``: ``model.train_top_layers=N`` (embeddings and lower layers frozen, no backward through them);
- ``+mask``: the attention mask passed to the model as before ``token_losses`` learnt to drop it for
  right-padded batches (SDPA's causal path; the same loss): the reference for that lever;
- ``+logits``: the vocabulary projected at every column some row labels, then a float32 log-softmax over all
  of them (``token_losses(fused_head=False)``), as before the fused head (``toolmaster.algorithms.fused_head``:
  only the labelled positions, in chunks; the same loss): the reference for that lever;
- ``+compact``: the episodes written with ``model.chat_format=chatml_compact`` (one signature line per tool
  and terse protocol rules, ``toolmaster.protocol.tool_rendering``) instead of ``chatml`` (JSON schemas);
- ``+batch<N>``: batches of N episodes instead of ``--batch`` (the first ``(steps + 1) x N`` episodes).

The default list starts with ``paper_small``'s SFT step on a CPU with native bf16 (``bf16-mixed+mask+logits``:
every layer, JSON tools, the padding mask, the plain head), then each lever alone, then ``paper_cpu``'s
(``bf16-mixed+top10+compact+logits+batch8``) and every lever at batch 4 (``bf16-mixed+top10+compact``). ``--profile`` adds, per
variant, where one step's time goes (forward / backward / optimizer; matmul / attention / the rest, from
``torch.profiler``) and the tokens of an episode by role.

    python -m toolmaster.bench.sft_step                        # synthesizes 64 oracle episodes per rendering
    python -m toolmaster.bench.sft_step --variants fp32,bf16-mixed --data <run>/synthesize/data.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

import torch

DEFAULT_VARIANTS = (
    "bf16-mixed+mask+logits,bf16-mixed+mask+logits+compact,bf16-mixed+mask+logits+top10,bf16-mixed+logits,"
    "bf16-mixed+mask,bf16-mixed+top10+compact+logits+batch8,bf16-mixed+top10+compact+logits,bf16-mixed+top10+compact"
)
PRECISIONS = ("fp32", "bf16-mixed", "bf16")
CHAT_FORMATS = {False: "chatml", True: "chatml_compact"}  # +compact -> the episodes' chat format


class Levers(NamedTuple):
    """What a variant name says: ``<precision>[+top<N>][+compact][+mask][+logits][+batch<N>]``."""

    precision: str
    top: int | None
    compact: bool
    mask: bool
    batch: int | None = None  # +batch<N>: this variant's batch size (default: --batch)
    logits: bool = False  # +logits: the plain head (every labelled column's logits, then log-softmax)

    def key(self, default_batch: int) -> tuple[bool, int]:
        """Which batches the variant trains on: (compact rendering, batch size)."""
        return self.compact, self.batch or default_batch


def parse_variant(variant: str) -> Levers:
    """``bf16-mixed+top15+compact`` -> (``bf16-mixed``, 15, True, False, None, False); ``fp32`` -> (``fp32``,
    None, False, False, None, False). Each lever at most once, in any order."""
    precision, *levers = variant.split("+")
    numbers: dict[str, int | None] = {"top": None, "batch": None}
    flags = {"compact": False, "mask": False, "logits": False}
    for lever in levers:
        name = lever.rstrip("0123456789")
        if lever in flags and not flags[lever]:
            flags[lever] = True
        elif name in numbers and lever[len(name) :].isdigit() and numbers[name] is None:
            numbers[name] = int(lever[len(name) :])
        else:
            precision = ""  # an unknown or repeated lever
    if numbers["batch"] == 0 or numbers["top"] == 0:
        precision = ""
    if precision not in PRECISIONS:
        raise SystemExit(
            f"sft_step: bad variant {variant!r}: <precision>[+top<N>][+compact][+mask][+logits][+batch<N>], precision one "
            f"of {', '.join(PRECISIONS)}"
        )
    return Levers(
        precision, numbers["top"], flags["compact"], flags["mask"], numbers["batch"], flags["logits"]
    )


def synthesize(out_dir: Path, tasks: int, chat_format: str = "chatml") -> Path:
    """Oracle episodes on the training split, written by ``stage=synthesize`` (a few seconds)."""
    command = [
        sys.executable, "-m", "toolmaster", "stage=synthesize", "teacher=oracle",
        f"data.train_limit={tasks}", f"model.chat_format={chat_format}", f"hydra.run.dir={out_dir}",
    ]  # fmt: skip
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return out_dir / "data.jsonl"


def train_step(
    model: Any, optimizer: Any, batch: dict[str, torch.Tensor], levers: Levers
) -> tuple[float, ...]:
    """One AdamW step with the variant's precision, mask and head; (forward, backward, optimizer) seconds and
    the loss."""
    from toolmaster.algorithms.logprobs import token_losses

    autocast = (
        torch.autocast("cpu", dtype=torch.bfloat16)
        if levers.precision == "bf16-mixed"
        else contextlib.nullcontext()
    )
    started = time.perf_counter()
    with autocast:
        total, count = token_losses(
            model, batch, causal_shortcut=not levers.mask, fused_head=not levers.logits
        )
        step_loss = total / count.clamp(min=1)
    forward = time.perf_counter()
    step_loss.backward()
    backward = time.perf_counter()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    done = time.perf_counter()
    return forward - started, backward - forward, done - backward, float(step_loss.detach())


def op_shares(model: Any, optimizer: Any, batch: dict[str, torch.Tensor], levers: Levers) -> dict[str, float]:
    """Shares of one profiled step's CPU time: matmul, attention and the rest."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        train_step(model, optimizer, batch, levers)
    shares = {"matmul": 0.0, "attention": 0.0, "other": 0.0}
    for event in prof.key_averages():
        name = event.key
        if "scaled_dot_product" in name or "flash_attention" in name:
            shares["attention"] += event.self_cpu_time_total
        elif name in ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear"):
            shares["matmul"] += event.self_cpu_time_total
        else:
            shares["other"] += event.self_cpu_time_total
    total = sum(shares.values()) or 1.0
    return {key: value / total for key, value in shares.items()}


class Variant:
    """One variant's model and optimizer, stepped by ``time_variants``."""

    def __init__(self, variant: str, lr: float, seed: int, source: str, default_batch: int) -> None:
        from toolmaster.models import load_model

        self.name = variant
        self.levers = levers = parse_variant(variant)
        top = levers.top
        self.key = levers.key(default_batch)
        dtype = "bfloat16" if levers.precision == "bf16" else "float32"
        self.model = load_model(
            source=source, dtype=dtype, device="cpu", seed=seed, train_top_layers=top
        ).model
        self.model.train()
        self.optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=lr)
        self.parts: list[tuple[float, ...]] = []

    def step(self, batch: dict[str, torch.Tensor]) -> None:
        self.parts.append(train_step(self.model, self.optimizer, batch, self.levers))


def time_variants(
    variants: list[str],
    batches: dict[tuple[bool, int], list[dict[str, torch.Tensor]]],
    lr: float,
    seed: int,
    source: str = "smollm2",
    profile: bool = False,
    default_batch: int = 4,
) -> list[dict[str, Any]]:
    """Per variant: median seconds per step over all but the warm-up step (and the median forward / backward /
    optimizer parts), the loss of the last step and, with ``profile``, the op shares of one more step.

    The variants take turns, one step each, so a change in the machine's load (another process starting)
    slows every variant alike instead of the one that happened to be running: the ratios stay comparable.
    """
    runs = [Variant(variant, lr, seed, source, default_batch) for variant in variants]
    for index in range(min(len(b) for b in batches.values())):
        for run in runs:
            run.step(batches[run.key][index])
    results = []
    for run in runs:
        timed = run.parts[1:] or run.parts
        parts = [statistics.median(p[k] for p in timed) for k in range(3)]
        seconds = statistics.median(sum(p[:3]) for p in timed)
        result: dict[str, Any] = {"seconds": seconds, "parts": parts, "loss": run.parts[-1][3]}
        if profile:
            result["ops"] = op_shares(run.model, run.optimizer, batches[run.key][-1], run.levers)
        results.append(result)
    return results


def same_episode_batches(
    data: Path, count: int, batch_size: int, max_length: int, source: str
) -> list[dict[str, Any]]:
    """``count`` batches of the file's first ``count x batch_size`` episodes, sorted by length and cut in
    order (the bucketing of ``stage=sft``, without its shuffle): two files of the same tasks in the same order
    (one per rendering) give batches of the same episodes."""
    from toolmaster.models.loading import load_tokenizer
    from toolmaster.protocol import get_chat_format
    from toolmaster.stages.sft.data import collate, encode_records, load_sft_records

    tokenizer = load_tokenizer(source)
    records = load_sft_records(data)[: count * batch_size]
    if len(records) < count * batch_size:
        raise SystemExit(f"sft_step: {data} has {len(records)} episodes; need {count * batch_size}")
    examples, _ = encode_records(records, tokenizer, get_chat_format("chatml"), max_length)
    examples.sort(key=len)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return [collate(examples[i : i + batch_size], pad) for i in range(0, len(examples), batch_size)]


def role_tokens(data: Path, source: str, limit: int) -> dict[str, float]:
    """Mean tokens per episode by role over the file's first ``limit`` episodes (``trainable``: the loss)."""
    from toolmaster.models.loading import load_tokenizer
    from toolmaster.protocol import get_chat_format
    from toolmaster.stages.sft.data import load_sft_records

    tokenizer = load_tokenizer(source)
    fmt = get_chat_format("chatml")
    records = load_sft_records(data)[:limit]
    counts: dict[str, float] = {"system": 0, "user": 0, "assistant": 0, "tool": 0, "trainable": 0}
    for record in records:
        for message in record.messages:
            for text, trainable in fmt.message_segments(message):
                n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
                counts[message["role"]] += n
                counts["trainable"] += n if trainable else 0
    return {role: value / max(1, len(records)) for role, value in counts.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, default=None, help="SFT JSONL for chatml variants (default: synthesize)"
    )
    parser.add_argument("--compact-data", type=Path, default=None, help="SFT JSONL for +compact variants")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"default: {DEFAULT_VARIANTS}")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per variant (+1 warm-up)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=1536)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true", help="where each variant's step time goes")
    parser.add_argument("--source", default="smollm2", choices=["smollm2", "tiny"], help="tiny: for tests")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    parsed = [parse_variant(variant) for variant in variants]  # fail on a typo before any work

    from toolmaster.models.loading import cpu_has_fast_bf16

    keys = sorted({levers.key(args.batch) for levers in parsed})
    most = (args.steps + 1) * max(batch for _, batch in keys)
    batches: dict[tuple[bool, int], list[dict[str, Any]]] = {}
    roles: dict[bool, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        files: dict[bool, Path] = {}
        for compact in sorted({compact for compact, _ in keys}):
            given = args.compact_data if compact else args.data
            files[compact] = given or synthesize(
                Path(tmp) / CHAT_FORMATS[compact], max(64, most), CHAT_FORMATS[compact]
            )
            roles[compact] = role_tokens(files[compact], args.source, most)
        for compact, batch in keys:
            batches[(compact, batch)] = same_episode_batches(
                files[compact], args.steps + 1, batch, args.max_length, args.source
            )
    print(
        f"{args.source}, {args.steps} timed steps per variant (+1 warm-up) on the file's first episodes (the same "
        f"episodes for the same batch size), {torch.get_num_threads()} threads, native CPU bf16: "
        f"{'yes' if cpu_has_fast_bf16() else 'no'}"
    )
    for compact, counts in roles.items():
        print(
            f"tokens per episode, {CHAT_FORMATS[compact]}: "
            + ", ".join(f"{role} {value:.0f}" for role, value in counts.items())
        )
    header = (
        f"{'variant':<28} {'s/step':>7} {'tok/step':>8} {'episodes/h':>10} {'speed-up':>8} {'last loss':>9}"
    )
    print(header + ("   fwd/bwd/opt s   matmul/attn/other" if args.profile else ""))
    baseline = None
    results = time_variants(variants, batches, args.lr, args.seed, args.source, args.profile, args.batch)
    for variant, levers, result in zip(variants, parsed, results):
        compact, batch = levers.key(args.batch)
        timed = batches[(compact, batch)][1:] or batches[(compact, batch)]
        tokens = sum(int(b["attention_mask"].sum()) for b in timed) / len(timed)
        per_hour = batch * 3600 / result["seconds"]
        baseline = baseline or per_hour
        line = (
            f"{variant:<28} {result['seconds']:>7.2f} {tokens:>8.0f} {per_hour:>10.0f} "
            f"{per_hour / baseline:>8.2f} {result['loss']:>9.4f}"
        )
        if args.profile:
            fwd, bwd, opt = result["parts"]
            ops = result["ops"]
            line += f"   {fwd:.2f}/{bwd:.2f}/{opt:.2f}   {ops['matmul']:.2f}/{ops['attention']:.2f}/{ops['other']:.2f}"
        print(line)


if __name__ == "__main__":
    main()
