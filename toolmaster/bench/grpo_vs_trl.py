"""One GRPO step of this project vs one step of TRL's ``GRPOTrainer``, same model, tasks and limits.

    python -m toolmaster.bench.grpo_vs_trl            # make bench-trl; needs the bench extra (trl)

Both sides, in one process, one after the other, each from a fresh copy of SmolLM2-135M-Instruct in fp32 on CPU:

- the same ``--tasks`` toolworld train tasks of one family (``--family``, default ``convert``) of the
  ``per_family`` world (every task of a family offers the same tools, so TRL's one tool list is exactly
  each task's tool set; a stateless family, because TRL's plain ``tools=`` have no per-episode state),
  ``--group-size`` episodes per task, sampling at temperature 1.0, reward = the outcome reward (1 for a
  correct ``<answer>``), KL off, one update per step (``mu = 1``), learning rate 1e-6, the whole batch in
  one forward/backward (micro-batch = tasks x group);
- the same prompt text: Qwen2.5's tool format on both sides (``chat_format=qwen2.5`` here; TRL renders
  Qwen2.5's chat template, set on SmolLM2's tokenizer, which shares its ChatML tokens), tool schemas in
  ``<tools>``, execution calls in ``<tool_call>``, the protocol's instructions in the system turn;
- the same token limits: here ``--max-turns`` turns of at most ``--max-new-tokens`` new tokens; in TRL at most
  ``max_turns - 1`` tool-calling iterations and ``max_completion_length = max_turns x max_new_tokens`` for the
  whole completion (TRL has no per-turn limit, and counts tool results against that length).

What differs, by design of each framework: TRL's loop executes tool calls and regenerates (its
``_tool_call_loop``) with ``model.generate`` over padded batches; this project runs its own multi-turn sampler
(KV cache kept across turns, finished rows leave the batch) inside ``GRPOModule.training_step``. There is no
trial phase on either side by default (``--trial-budget 0``: TRL has no notion of trial calls); a positive
budget gives this project's episodes the trial phase and longer system prompt (more work on our side).
Episodes are sampled, so the two sides generate different numbers of tokens: both counts are printed.

Both models run the same attention (``toolmaster_sdpa``, which ``load_model`` selects on CPU: grouped-query
SDPA without copying key/value heads); TRL's model is switched to it explicitly, so the comparison is about the
frameworks, not the kernel.

Precision (``--precision``): ``32-true`` (default) trains both sides in fp32; ``bf16-mixed`` trains both under
bf16 autocast (Lightning's ``precision=bf16-mixed``, TRL's ``bf16=True``), fp32 master weights. Our side runs once
per entry of ``--rollout-dtypes`` (``stage.rollout_dtype``: ``auto``, the default, decodes with a bf16 copy under
``bf16-mixed`` and with the policy itself in fp32; ``bfloat16`` samples from a bf16 copy of an fp32 policy, the
way frameworks with a separate inference engine sample), each printed beside the one TRL run.
``--async-rollout`` adds a run with ``stage.async_rollout=true`` (``old_logprobs=sampler``; steps after the first
train on a batch rolled out during the previous update), printed with its ratio to the first run;
``--plain-head`` adds a run with ``stage.fused_head=false`` (every loss column's logits and a float32
log-softmax over them, as before ``toolmaster.algorithms.fused_head``), printed with its ratio to the first run;
``--skip-trl`` leaves TRL out; ``--cpu-isa avx2`` re-runs the bench with the math libraries capped to AVX2
(``toolmaster.cpu_isa``: a host without avx512_bf16, emulated).

Timed: the training step only (rollout, reward, advantages, update), from a callback around the step on
each side (Lightning's ``on_train_batch_start/end``, transformers' ``on_step_begin/end``); model loading and
trainer set-up are excluded. With ``--steps N > 1`` the first step is a warm-up and the rest are averaged.
"""

from __future__ import annotations

import argparse
import inspect
import re
import tempfile
import time
import warnings
from typing import Any

import torch

from toolmaster import cpu_isa
from toolmaster.envs.task import Task
from toolmaster.envs.tool import Tool
from toolmaster.errors import ToolMasterError

ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_PY_TYPES = {"string": str, "number": float, "integer": int, "boolean": bool, "array": list, "object": dict}


def pick_tasks(world: Any, family: str, count: int) -> list[Task]:
    tasks = [t for t in world.tasks("train", None) if t.family == family]
    if len(tasks) < count:
        raise ToolMasterError(f"toolworld train has {len(tasks)} {family!r} task(s), asked for {count}")
    tasks = tasks[:count]
    if any(set(t.tool_names) != set(tasks[0].tool_names) for t in tasks):
        raise ToolMasterError(f"the {family!r} tasks do not share one tool set")
    if any(t.initial_state for t in tasks):
        raise ToolMasterError(f"family {family!r} is stateful; TRL's plain tools= cannot hold episode state")
    return tasks


def step_times(times: list[float]) -> float:
    """The reported step time: the only step, or the mean after the first (warm-up)."""
    return times[0] if len(times) == 1 else sum(times[1:]) / len(times[1:])


# ------------------------------------------------------------------------------------------ this project
def run_toolmaster(
    args: argparse.Namespace,
    world: Any,
    tasks: list[Task],
    model_dir: str,
    rollout_dtype: str | None = "auto",
    async_rollout: bool = False,
    fused_head: bool = True,
) -> dict[str, Any]:
    import pytorch_lightning as pl

    from toolmaster.models import load_model
    from toolmaster.protocol import get_chat_format
    from toolmaster.rewards import build_reward_group
    from toolmaster.samplers.loop import RolloutConfig
    from toolmaster.settings import GRPOSettings
    from toolmaster.stages.grpo.data import GRPODataModule
    from toolmaster.stages.grpo.module import GRPOModule

    pl.seed_everything(args.seed, verbose=False)
    loaded = load_model(path=model_dir, source="hf", dtype="float32", device="cpu", chat_format="qwen2.5")
    fmt = get_chat_format("qwen2.5")
    episodes = len(tasks) * args.group_size
    settings = GRPOSettings(
        tasks_per_step=len(tasks),
        group_size=args.group_size,
        lr=1e-6,
        micro_batch_size=episodes,
        log_trajectories_every=0,
        val_every_n_steps=None,
        resume=None,
        export=False,
        rollout_dtype=rollout_dtype,
        async_rollout=async_rollout,
        old_logprobs="sampler" if async_rollout else "recompute",
        fused_head=fused_head,
        seed=args.seed,
    )
    config = RolloutConfig(
        max_turns=args.max_turns,
        max_new_tokens=args.max_new_tokens,
        max_total_tokens=4096,
        trial_budget=args.trial_budget,
        temperature=1.0,
        n_samples=args.group_size,
        seed=args.seed,
        batch_size=episodes,
    )
    rewards = build_reward_group(
        {"outcome": {"_target_": "toolmaster.rewards.components.Outcome", "weight": 1.0}}
    )
    module = GRPOModule(loaded.model, loaded.tokenizer, fmt, world.suite, rewards, config, settings)

    times: list[float] = []
    phases: list[dict[str, float]] = []  # each step's train/time/* (rollout, score, update)

    class Timer(pl.Callback):
        def on_train_batch_start(self, *_: Any) -> None:
            self.started = time.perf_counter()

        def on_train_batch_end(self, trainer: Any, *_: Any) -> None:
            times.append(time.perf_counter() - self.started)
            metrics = trainer.callback_metrics
            phases.append(
                {k.split("/")[-1]: float(v) for k, v in metrics.items() if k.startswith("train/time/")}
            )

    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        precision=args.precision,
        max_steps=args.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[Timer()],
    )
    trainer.fit(module, datamodule=GRPODataModule(tasks, len(tasks), args.seed))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return {
        "times": times,
        "episodes": episodes,
        "generated_tokens": metrics.get("train/response_tokens", float("nan")) * episodes,
        "reward": metrics.get("train/reward/total"),
        # averaged like the step time (the first step is a warm-up when there are several)
        "phases": {k: step_times([p[k] for p in phases]) for k in (phases[0] if phases else {})},
    }


# ------------------------------------------------------------------------------------------------- TRL
def tool_function(tool: Tool) -> Any:
    """A plain Python function for TRL's ``tools=``: name, signature, type hints and a Google-style docstring
    built from the tool's JSON schema (transformers' ``get_json_schema`` reads those); the arguments are
    checked against the schema like the project's environment does, and a problem raises (TRL turns the
    exception into the tool result)."""
    props: dict[str, Any] = tool.parameters.get("properties", {})
    required = set(tool.parameters.get("required", []))

    def call(**arguments: Any) -> Any:
        problem = tool.check_arguments(arguments)
        if problem is not None:
            raise ValueError(problem)
        return tool.fn(**arguments, state={}) if tool.wants_state else tool.fn(**arguments)

    params, hints = [], {}
    for name, spec in props.items():
        hint = _PY_TYPES.get(spec.get("type"), str)
        hints[name] = hint if name in required else (hint | None)
        default = inspect.Parameter.empty if name in required else None
        params.append(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=hint)
        )
    call.__name__ = call.__qualname__ = tool.name
    call.__signature__ = inspect.Signature(params, return_annotation=str)  # type: ignore[attr-defined]
    call.__annotations__ = {**hints, "return": str}
    lines = [tool.description or tool.name, "", "Args:"]
    lines += [f"    {name}: {spec.get('description') or name}" for name, spec in props.items()]
    call.__doc__ = "\n".join(lines)
    return call


def run_trl(args: argparse.Namespace, world: Any, tasks: list[Task], model_dir: str) -> dict[str, Any]:
    try:
        from datasets import Dataset
        from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
        from trl import GRPOConfig, GRPOTrainer
        from trl.chat_template_utils import qwen2_5_chat_template

        from toolmaster.models.attention import use_gqa_attention
    except ImportError as exc:
        raise ToolMasterError(
            f"this benchmark needs the bench extra: pip install -e '.[bench]' ({exc})"
        ) from None
    from toolmaster.protocol import get_chat_format
    from toolmaster.protocol.prompt import build_messages

    fmt = get_chat_format("qwen2.5")
    by_id = {t.id: t for t in tasks}
    tools = [tool_function(world.suite.tools[name]) for name in tasks[0].tool_names]
    rows = [
        {
            # the system turn's text: the protocol's instructions; the template adds the tools, like fmt does
            "prompt": build_messages(t.query, [], 0, fmt.tags, include_tools=False),
            "task_id": t.id,
        }
        for t in tasks
    ]

    def outcome(completions: list[list[dict[str, Any]]], task_id: list[str], **_: Any) -> list[float]:
        scores = []
        for messages, tid in zip(completions, task_id):
            text = next((m.get("content") or "" for m in reversed(messages) if m["role"] == "assistant"), "")
            found = ANSWER.search(text)
            scores.append(1.0 if by_id[tid].check(found.group(1).strip() if found else None) else 0.0)
        return scores

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.chat_template = qwen2_5_chat_template  # SmolLM2's template ignores tools=
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    use_gqa_attention(model)  # the attention kernel this project's load_model picks on CPU, for a fair match
    times: list[float] = []
    generated: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *_: Any, **__: Any) -> None:
            self.started = time.perf_counter()

        def on_step_end(self, *_: Any, **__: Any) -> None:
            times.append(time.perf_counter() - self.started)

        def on_log(self, _args: Any, _state: Any, _control: Any, logs: dict | None = None, **__: Any) -> None:
            if logs and "completions/mean_length" in logs:
                generated.append(float(logs["completions/mean_length"]))

    episodes = len(tasks) * args.group_size
    with tempfile.TemporaryDirectory() as out:
        config = GRPOConfig(
            output_dir=out,
            per_device_train_batch_size=episodes,
            num_generations=args.group_size,
            gradient_accumulation_steps=1,
            max_completion_length=args.max_turns * args.max_new_tokens,
            max_tool_calling_iterations=args.max_turns - 1,
            max_steps=args.steps,
            learning_rate=1e-6,
            beta=0.0,
            num_iterations=1,
            temperature=1.0,
            loss_type="dapo",  # token-level mean over the batch, like stage.aggregation=token_mean
            use_cpu=True,
            bf16=args.precision == "bf16-mixed",
            gradient_checkpointing=False,
            report_to="none",
            save_strategy="no",
            logging_steps=1,
            disable_tqdm=True,
            dataloader_num_workers=0,
            seed=args.seed,
        )
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=[outcome],
            args=config,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            tools=tools,
            callbacks=[Timer()],
        )
        trainer.train()
    log = next((entry for entry in reversed(trainer.state.log_history) if "reward" in entry), {})
    return {
        "times": times,
        "episodes": episodes,
        "generated_tokens": (generated[-1] if generated else float("nan")) * episodes,
        "reward": log.get("reward"),
        "phases": {},
    }


# ------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m toolmaster.bench.grpo_vs_trl",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--tasks", type=int, default=2, help="tasks per step (default 2)")
    parser.add_argument("--group-size", type=int, default=4, help="episodes per task (default 4)")
    parser.add_argument("--max-turns", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=64, help="per turn (default 64)")
    parser.add_argument("--trial-budget", type=int, default=0, help="this project's trial calls (default 0)")
    parser.add_argument("--family", default="convert", help="toolworld family of the tasks (default convert)")
    parser.add_argument("--steps", type=int, default=1, help="steps per side; > 1: first is a warm-up")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--precision", default="32-true", choices=["32-true", "bf16-mixed"], help="both sides"
    )
    parser.add_argument(
        "--rollout-dtypes",
        default="auto",
        help="comma-separated stage.rollout_dtype values, one run of our side each (auto, bfloat16, null)",
    )
    parser.add_argument(
        "--async-rollout",
        action="store_true",
        help="one more run of our side with stage.async_rollout=true (the first --rollout-dtypes entry)",
    )
    parser.add_argument(
        "--plain-head",
        action="store_true",
        help="one more run of our side with stage.fused_head=false (the first --rollout-dtypes entry)",
    )
    parser.add_argument("--skip-trl", action="store_true", help="our side only (no ratio to TRL)")
    cpu_isa.add_argument(parser)
    args = parser.parse_args(argv)
    status = cpu_isa.rerun_if_capped(parser, args, "toolmaster.bench.grpo_vs_trl", argv)
    if status is not None:
        return status
    rollout_dtypes = [None if v in ("null", "none") else v for v in args.rollout_dtypes.split(",")]
    if unknown := [v for v in rollout_dtypes if v not in (None, "auto", "bfloat16", "float16")]:
        parser.error(f"--rollout-dtypes: {unknown[0]!r} is not one of auto, bfloat16, float16, null")
    if args.max_turns < 2:
        parser.error("--max-turns must be >= 2 (a tool call and an answer)")
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)

    from toolmaster.models.loading import smollm2_dir
    from toolmaster.worlds.toolworld import build_toolworld

    try:
        model_dir = str(smollm2_dir(None))
        # the per_family world: every task of a family offers one tool set, as TRL's one tool list needs
        world = build_toolworld(seed=args.seed, variants="per_family")
        tasks = pick_tasks(world, args.family, args.tasks)
        variants = [(f"rollout_dtype={dtype}", dtype, False, True) for dtype in rollout_dtypes]
        if args.async_rollout:
            variants.append(
                (f"rollout_dtype={rollout_dtypes[0]}, async_rollout", rollout_dtypes[0], True, True)
            )
        if args.plain_head:
            variants.append(
                (f"rollout_dtype={rollout_dtypes[0]}, fused_head=false", rollout_dtypes[0], False, False)
            )
        runs = [
            (label, run_toolmaster(args, world, tasks, model_dir, dtype, overlap, fused))
            for label, dtype, overlap, fused in variants
        ]
        trl = None if args.skip_trl else run_trl(args, world, tasks, model_dir)
    except ToolMasterError as exc:
        print(f"toolmaster.bench.grpo_vs_trl: error: {exc}")
        return 1

    trl_s = step_times(trl["times"]) if trl is not None else None
    print()
    print(
        f"SmolLM2-135M-Instruct, precision {args.precision}, CPU x{torch.get_num_threads()} threads; {args.tasks}"
        f" '{args.family}' tasks x G={args.group_size} = {runs[0][1]['episodes']} episodes, <= {args.max_turns} turns x "
        f"{args.max_new_tokens} new tokens, trial budget {args.trial_budget} (ours)"
    )
    print(cpu_isa.describe())
    print("| side | step s | generated tokens | tokens/s | mean reward |")
    print("|---|---|---|---|---|")
    sides = [(f"toolmaster GRPOModule, {label}", side) for label, side in runs]
    for name, side in [*sides, *([("TRL GRPOTrainer", trl)] if trl is not None else [])]:
        seconds, tokens, reward = step_times(side["times"]), side["generated_tokens"], side["reward"]
        print(
            f"| {name} | {seconds:.1f} | {tokens:.0f} | {tokens / seconds:.1f} | "
            f"{'' if reward is None else f'{reward:.2f}'} |"
        )
    for name, side in sides:
        ours_s = step_times(side["times"])
        if side["phases"]:
            # packing outside update, logging, Lightning's loop (a background rollout overlaps the step)
            other = ours_s - sum(v for k, v in side["phases"].items() if k != "rollout_background")
            print(
                f"{name} phases (s, averaged like the step): "
                + ", ".join(f"{k} {v:.1f}" for k, v in side["phases"].items())
                + f", other {other:.1f}"
            )
        if trl_s is not None:
            print(f"ratio ({name} / TRL step time): {ours_s / trl_s:.2f}")
        if name != sides[0][0]:
            print(
                f"ratio ({name} / {sides[0][0]} step time): {ours_s / step_times(sides[0][1]['times']):.2f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
