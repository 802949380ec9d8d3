"""Typed records behind the plain config groups (``tools``, ``sampler``, ``data``, ``stage``).

Each group's YAML names one of these as ``_target_``; ``toolmaster.config.validate`` binds the YAML against
the signature (unknown keys, types, Literal choices) and instantiates it to run the range checks below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass
class EnvSettings:
    """``tools`` group: the world to build and how its environment runs calls.

    ``isolation``: ``process`` runs every call in a fork of a tool host (``toolmaster.envs.toolhost``),
    ``thread`` the old in-process path (debugging). ``memory_limit_mb`` / ``cpu_limit_s``: per-call
    RLIMIT_AS / RLIMIT_CPU of the call's process (process isolation only); null = no limit.
    """

    world: dict[str, Any]
    trial_budget: int = 2
    timeout_s: float = 5.0
    max_observation_chars: int = 600
    isolation: Literal["process", "thread"] = "process"
    memory_limit_mb: int | None = None
    cpu_limit_s: float | None = None
    strict_types: bool = True  # false: no argument type checks (worlds whose checker does not type-check)

    def __post_init__(self) -> None:
        _check(self.trial_budget >= 0, f"tools.trial_budget must be >= 0, got {self.trial_budget}")
        _check(self.timeout_s > 0, f"tools.timeout_s must be > 0, got {self.timeout_s}")
        _check(self.max_observation_chars >= 50, "tools.max_observation_chars must be >= 50")
        self.isolation_settings()  # range checks of the isolation options

    def isolation_settings(self) -> Any:
        """The ``toolmaster.envs.calls.Isolation`` these options describe."""
        from toolmaster.envs.calls import Isolation

        return Isolation(self.isolation, self.memory_limit_mb, self.cpu_limit_s)


@dataclass
class SamplerSettings:
    """``sampler`` group: which engine generates turns, sampling options and episode limits.

    ``engine`` is a partial ``_target_`` node of the engine class (its keys are the engine's arguments, bound by
    the config validation); ``toolmaster.samplers.engines.make_engine`` builds it around the model."""

    engine: dict[str, Any] = field(
        default_factory=lambda: {"_target_": "toolmaster.samplers.hf.HFEngine", "_partial_": True}
    )
    temperature: float = 1.0
    top_p: float = 1.0
    n_samples: int = 1
    seed: int = 0
    batch_size: int = 8
    max_turns: int = 8
    max_new_tokens: int = 160
    max_total_tokens: int = 2048
    max_steps_per_user_turn: int | None = None  # assistant turns per user turn of a multi-turn task

    def __post_init__(self) -> None:
        _check(self.temperature >= 0, f"sampler.temperature must be >= 0, got {self.temperature}")
        _check(0 < self.top_p <= 1, f"sampler.top_p must be in (0, 1], got {self.top_p}")
        for key in ("n_samples", "batch_size", "max_turns", "max_new_tokens", "max_total_tokens"):
            _check(getattr(self, key) >= 1, f"sampler.{key} must be >= 1, got {getattr(self, key)}")
        _check(
            self.max_steps_per_user_turn is None or self.max_steps_per_user_turn >= 1,
            "sampler.max_steps_per_user_turn must be >= 1 or null",
        )
        _check("_target_" in self.engine, "sampler.engine needs a _target_ (an engine class)")


@dataclass
class DataSettings:
    """``data`` group: which tasks (and, for SFT, which trajectory files) a stage uses."""

    train_split: str = "train"
    # None: the world's own splits but ``train_split`` (``toolmaster.build.eval_splits_of``)
    eval_splits: list[str] | None = None
    eval_limit: int | None = 20
    train_limit: int | None = None
    # the first ``train_offset`` tasks of ``train_split`` are skipped (e.g. GRPO on tasks SFT never saw)
    train_offset: int = 0
    sft_path: str | None = None

    def __post_init__(self) -> None:
        _check(
            self.eval_splits is None or len(self.eval_splits) > 0,
            "data.eval_splits must name at least one split, or be null (the world's own splits)",
        )
        _check(self.eval_limit is None or self.eval_limit >= 1, "data.eval_limit must be >= 1 or null")
        _check(self.train_offset >= 0, f"data.train_offset must be >= 0, got {self.train_offset}")

    def train_tasks(self, world: Any) -> list[Any]:
        """The training tasks: ``train_limit`` tasks of ``train_split`` after the first ``train_offset``."""
        tasks = world.tasks(self.train_split)[self.train_offset :]
        return tasks[: self.train_limit] if self.train_limit is not None else tasks


@dataclass
class EvalSettings:
    """``stage=eval``: evaluate a model over ``data.eval_splits``."""

    name: Literal["eval"] = "eval"
    temperature: float | None = 0.0  # overrides sampler.temperature (greedy by default); null keeps it
    n_samples: int | None = None  # overrides sampler.n_samples; pass@k needs n >= k
    pass_k: list[int] = field(default_factory=lambda: [1])
    write_trajectories: bool = True

    def __post_init__(self) -> None:
        _check(all(k >= 1 for k in self.pass_k), "stage.pass_k values must be >= 1")


@dataclass
class SynthesizeSettings:
    """``stage=synthesize``: a teacher plays ``data.train_split`` tasks; kept episodes go to a JSONL dataset."""

    output_path: str
    name: Literal["synthesize"] = "synthesize"
    samples_per_task: int = 1
    keep: Literal["correct", "all"] = "correct"
    dedupe: bool = True
    chunk_size: int = 16

    def __post_init__(self) -> None:
        _check(self.samples_per_task >= 1, "stage.samples_per_task must be >= 1")
        _check(self.chunk_size >= 1, "stage.chunk_size must be >= 1")


@dataclass
class SFTSettings:
    """``stage=sft``: supervised fine-tuning on trajectory JSONL (``data.sft_path``) with Lightning.

    ``resume``: ``auto`` continues from ``<output_dir>/checkpoints/last.ckpt`` when it exists, a path resumes
    from that checkpoint, null starts fresh. ``val_every_n_steps`` null validates once per epoch.
    """

    name: Literal["sft"] = "sft"
    lr: float = 1e-5
    weight_decay: float = 0.0
    warmup_steps: int = 10
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    min_lr_ratio: float = 0.0
    batch_size: int = 8
    max_length: int = 2048
    val_fraction: float = 0.05
    bucket_size: int = 256
    fused_head: bool = True
    seed: int = 0
    resume: str | None = "auto"
    checkpoint_every_n_steps: int = 50
    export: bool = True
    merge: bool = True
    val_every_n_steps: int | None = None
    val_success_split: str | None = None
    val_success_limit: int = 8

    def __post_init__(self) -> None:
        _check(self.lr > 0, f"stage.lr must be > 0, got {self.lr}")
        _check(self.weight_decay >= 0, f"stage.weight_decay must be >= 0, got {self.weight_decay}")
        _check(self.warmup_steps >= 0, f"stage.warmup_steps must be >= 0, got {self.warmup_steps}")
        _check(0 <= self.min_lr_ratio <= 1, f"stage.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        for key in (
            "batch_size",
            "max_length",
            "bucket_size",
            "checkpoint_every_n_steps",
            "val_success_limit",
        ):
            _check(getattr(self, key) >= 1, f"stage.{key} must be >= 1, got {getattr(self, key)}")
        _check(0 <= self.val_fraction < 1, f"stage.val_fraction must be in [0, 1), got {self.val_fraction}")
        _check(
            self.val_every_n_steps is None or self.val_every_n_steps >= 1,
            "stage.val_every_n_steps must be >= 1 or null",
        )


@dataclass
class GRPOSettings:
    """``stage=grpo``: multi-turn GRPO in the tool environment with Lightning (``toolmaster.stages.grpo``).

    One GRPO step = ``tasks_per_step`` tasks per process x ``group_size`` episodes each, then ``mu`` optimizer
    updates on them. ``trainer.max_steps`` counts GRPO steps. ``resume`` as in ``SFTSettings``.
    ``val_every_n_steps`` null: no validation; ``log_trajectories_every`` 0: no trajectory samples.
    """

    name: Literal["grpo"] = "grpo"
    tasks_per_step: int = 4
    group_size: int = 8
    mu: int = 1
    lr: float = 1e-6
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: Literal["cosine", "linear", "constant"] = "constant"
    min_lr_ratio: float = 0.0
    clip_eps: float = 0.2
    clip_eps_high: float | None = None
    advantage: Literal["grpo", "dr_grpo"] = "grpo"
    aggregation: Literal["token_mean", "sequence_mean", "dr_grpo_constant"] = "token_mean"
    kl_coef: float = 0.0
    drop_truncated: bool = False
    old_logprobs: Literal["recompute", "sampler"] = "recompute"
    micro_batch_size: int = 4
    share_prompts: bool = True
    fused_head: bool = True
    filter_groups: Literal["reward", "success"] | None = None
    max_refill_rounds: int = 2
    async_rollout: bool = False
    rollout_dtype: str | None = "auto"
    pass_rate_samples: int = 0
    pass_rate_min: float = 0.0
    pass_rate_max: float = 1.0
    pass_rate_candidates: int | None = None
    log_trajectories_every: int = 10
    val_every_n_steps: int | None = None
    resume: str | None = "auto"
    checkpoint_every_n_steps: int = 50
    export: bool = True
    merge: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("tasks_per_step", "mu", "micro_batch_size", "checkpoint_every_n_steps"):
            _check(getattr(self, key) >= 1, f"stage.{key} must be >= 1, got {getattr(self, key)}")
        _check(
            self.group_size >= 2,
            f"stage.group_size must be >= 2 (advantages are relative to the group), got {self.group_size}",
        )
        _check(self.lr > 0, f"stage.lr must be > 0, got {self.lr}")
        _check(self.weight_decay >= 0, f"stage.weight_decay must be >= 0, got {self.weight_decay}")
        _check(self.warmup_steps >= 0, f"stage.warmup_steps must be >= 0, got {self.warmup_steps}")
        _check(0 <= self.min_lr_ratio <= 1, f"stage.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        _check(self.clip_eps >= 0, f"stage.clip_eps must be >= 0, got {self.clip_eps}")
        _check(
            self.clip_eps_high is None or self.clip_eps_high >= 0,
            f"stage.clip_eps_high must be >= 0 or null, got {self.clip_eps_high}",
        )
        _check(self.kl_coef >= 0, f"stage.kl_coef must be >= 0, got {self.kl_coef}")
        _check(
            self.filter_groups in (None, "reward", "success"),
            f"stage.filter_groups must be null, reward or success, got {self.filter_groups!r}",
        )
        _check(
            self.max_refill_rounds >= 0, f"stage.max_refill_rounds must be >= 0, got {self.max_refill_rounds}"
        )
        _check(
            self.advantage in ("grpo", "dr_grpo"),
            f"stage.advantage must be grpo or dr_grpo, got {self.advantage!r}",
        )
        _check(
            self.aggregation in ("token_mean", "sequence_mean", "dr_grpo_constant"),
            f"stage.aggregation must be token_mean, sequence_mean or dr_grpo_constant, got {self.aggregation!r}",
        )
        _check(
            self.old_logprobs in ("recompute", "sampler"),
            f"stage.old_logprobs must be recompute or sampler, got {self.old_logprobs!r}",
        )
        _check(
            not self.async_rollout or self.old_logprobs == "sampler",
            "stage.async_rollout=true trains on episodes sampled one step earlier: set stage.old_logprobs=sampler"
            " so that the clipped ratio corrects for the lag",
        )
        _check(
            self.rollout_dtype in (None, "auto", "bfloat16", "float16"),
            f"stage.rollout_dtype must be auto, bfloat16, float16 or null, got {self.rollout_dtype!r}",
        )
        _check(
            self.pass_rate_samples >= 0, f"stage.pass_rate_samples must be >= 0, got {self.pass_rate_samples}"
        )
        _check(
            0.0 <= self.pass_rate_min < self.pass_rate_max <= 1.0,
            "stage.pass_rate_min and pass_rate_max must satisfy 0 <= min < max <= 1, got "
            f"{self.pass_rate_min} and {self.pass_rate_max}",
        )
        _check(
            self.pass_rate_candidates is None or self.pass_rate_candidates >= 1,
            f"stage.pass_rate_candidates must be >= 1 or null, got {self.pass_rate_candidates}",
        )
        _check(
            self.log_trajectories_every >= 0,
            f"stage.log_trajectories_every must be >= 0, got {self.log_trajectories_every}",
        )
        _check(
            self.val_every_n_steps is None or self.val_every_n_steps >= 1,
            "stage.val_every_n_steps must be >= 1 or null",
        )


_STEP_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
# The keys each kind of pipeline step may have (see toolmaster.stages.pipeline).
_STEP_KEYS = {
    "run": {"kind", "overrides", "on_demand"},
    "multirun": {"kind", "overrides", "params", "on_demand"},
    "report": {"kind", "module", "args"},
}


def _check_step(name: str, step: Any) -> None:
    import re

    _check(
        bool(re.fullmatch(_STEP_NAME, name)), f"stage.steps: bad step name {name!r} (letters, digits, _.-)"
    )
    _check(isinstance(step, dict), f"stage.steps.{name} must be a mapping (overrides: [...], kind: ...)")
    kind = step.get("kind", "run")
    _check(
        kind in _STEP_KEYS, f"stage.steps.{name}.kind must be one of {', '.join(_STEP_KEYS)}, got {kind!r}"
    )
    unknown = sorted(set(step) - _STEP_KEYS[kind])
    _check(
        not unknown,
        f"stage.steps.{name}: unknown key {unknown[0] if unknown else ''!r} for a {kind} step; "
        f"allowed: {', '.join(sorted(_STEP_KEYS[kind]))}",
    )
    _check(
        isinstance(step.get("on_demand", False), bool), f"stage.steps.{name}.on_demand must be true or false"
    )
    if kind == "report":
        _check(
            isinstance(step.get("module"), str) and bool(step["module"]),
            f"stage.steps.{name}.module must name a Python module (run as python -m <module> <args>)",
        )
        args = step.get("args", [])
        _check(
            isinstance(args, list) and all(isinstance(a, str) for a in args),
            f"stage.steps.{name}.args must be a list of strings, got {args!r}",
        )
        return
    overrides = step.get("overrides")
    _check(
        isinstance(overrides, list) and all(isinstance(o, str) for o in overrides),
        f"stage.steps.{name}.overrides must be a list of strings, got {overrides!r}",
    )
    params = step.get("params", {})
    _check(
        isinstance(params, dict)
        and all(
            isinstance(v, list) and v and all(not isinstance(x, (dict, list)) for x in v)
            for v in params.values()
        ),
        f"stage.steps.{name}.params must map config keys to non-empty lists of values, got {params!r}",
    )


@dataclass
class PipelineSettings:
    """``stage=pipeline``: run other stages in order, each as its own ``python -m toolmaster`` process.

    ``steps``: step name -> ``{overrides: [...]}`` (Hydra overrides; ``{run_dir}`` is the pipeline's output
    directory, ``{model}`` its ``model`` choice); ``common_overrides`` go before every step's own (later
    overrides win). A step's ``kind`` is ``run`` (default: one job), ``multirun`` (a Hydra sweep through the
    configured launcher, its sweep dimensions in ``params``: key -> list of values) or ``report`` (``python -m
    <module> <args>``, run every time); ``on_demand: true`` runs a step only when a later step that runs names
    its folder. ``compare``: row label -> the steps behind that row, the last one an eval step (a single name is
    accepted); the row's wall time is the sum over its steps. ``dry_run`` prints every step's command line and
    runs nothing. See ``toolmaster.stages.pipeline``.
    """

    name: Literal["pipeline"] = "pipeline"
    steps: dict[str, Any] = field(default_factory=dict)
    common_overrides: list[str] = field(default_factory=list)
    compare: dict[str, Any] = field(default_factory=dict)
    echo: bool = False  # also stream each step's output to the console (it always goes to <step>/step.log)
    dry_run: bool = False  # print the steps' command lines (and which would run), run nothing

    def __post_init__(self) -> None:
        for name, step in self.steps.items():
            _check_step(name, step)
        for where, overrides in [("common_overrides", self.common_overrides)] + [
            (f"steps.{n}.overrides", s.get("overrides", [])) for n, s in self.steps.items()
        ]:
            for override in overrides:
                key = override.split("=", 1)[0].lstrip("+~")
                _check("=" in override, f"stage.{where}: {override!r} is not a key=value override")
                _check(
                    not key.startswith(("hydra.run", "hydra.sweep")),
                    f"stage.{where}: {override!r}: the pipeline sets each step's run dir itself",
                )
        for label, names in self.compare.items():
            names = [names] if isinstance(names, str) else names
            _check(
                isinstance(names, list) and len(names) > 0,
                f"stage.compare.{label} must be a step name or a list of step names",
            )
            unknown = [n for n in names if n not in self.steps]
            _check(
                not unknown,
                f"stage.compare.{label}: unknown step {unknown[0] if unknown else ''!r}; "
                f"steps: {', '.join(self.steps)}",
            )
