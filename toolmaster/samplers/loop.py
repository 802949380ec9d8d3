"""The engine-agnostic multi-turn rollout loop (model <-> environment).

Up to ``batch_size`` episodes are live at once. With an engine that offers ``generate_continuous`` (the HF
engine) batching is continuous at token granularity: the moment one episode ends its turn, its call runs and
its next turn (or a queued episode) joins the running batch. Other engines (vLLM, the OpenAI teacher,
scripted) get one ``generate`` call per turn for every live episode (continuous batching at turn
granularity: finished episodes leave and queued ones join between turns). Each
generation is parsed into an action; calls run in the episode's ``ToolEnv`` (trial phase on the sandbox,
execution phase on the real state; under process isolation each episode's tools live in processes forked
from the suite's tool host, closed when the episode finishes); the observation becomes a tool turn. Token ids are appended
incrementally and never re-tokenized, so the ids RL trains on are the ids that were sampled.

Limits: ``max_turns`` (assistant turns per episode), ``max_new_tokens`` (per turn) and
``max_total_tokens`` (whole episode, prompt included). Hitting any of them ends the episode with
``truncated=True`` and a ``truncation_reason``; a turn cut by ``max_new_tokens`` is never parsed as a
valid action. Tokens the loop appends itself (an end-of-turn token after a stop string, newlines, tool
turns) have loss mask 0 and log-prob 0.

Several user turns (``Task.follow_ups``): an ``<answer>`` ends the current user turn; when the task has a
next one, its user message (announcing any tools added in that turn) is appended and the episode goes on,
else the episode ends. ``max_steps_per_user_turn`` caps the assistant turns spent on one user turn (None = only
``max_turns`` counts). Success is ``Task.score`` (the task's scorer over the trajectory and the final real
state, or the answer check).

A prompt that alone fills ``max_total_tokens`` cannot produce a single token: such an episode ends at once
with ``truncation_reason="prompt_too_long"`` and the rollout logs a warning with the count and the longest
prompt, so a too-small budget never hides behind a plain truncation rate.

Departure from the paper: one action per assistant turn (the paper's prompts allow several calls per
turn); it keeps the protocol unambiguous for small models and costs only extra turns.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from toolmaster.envs.environment import EXECUTION, TRIAL, ToolEnv
from toolmaster.envs.task import Task
from toolmaster.envs.tool import ToolSuite
from toolmaster.protocol.actions import parse_action
from toolmaster.protocol.chat_format import ChatFormat
from toolmaster.protocol.phases import ActionKind
from toolmaster.protocol.prompt import observation_text, opening_messages, user_turn_message
from toolmaster.protocol.tokenize import SegmentTokenizer, tokenize_conversation, tokenize_segments
from toolmaster.samplers.base import Generation, GenerationEngine, SamplingParams, TurnRequest
from toolmaster.trajectory import Trajectory

log = logging.getLogger(__name__)
PROMPT_TOO_LONG = "prompt_too_long"


@dataclass
class RolloutConfig:
    max_turns: int = 8
    max_new_tokens: int = 160
    max_total_tokens: int = 2048
    trial_budget: int = 2
    tool_timeout_s: float = 5.0
    max_observation_chars: int = 600
    temperature: float = 1.0
    top_p: float = 1.0
    n_samples: int = 1
    seed: int = 0
    batch_size: int = 8
    continuous: bool = True  # token-level continuous batching where the engine offers it
    max_steps_per_user_turn: int | None = None  # assistant turns per user turn (None: only max_turns)
    strict_types: bool = True  # check argument types against the tool schemas


@dataclass
class _Episode:
    task: Task
    sample_index: int
    env: ToolEnv
    tool_schemas: list[dict]
    messages: list[dict[str, str]]
    ids: list[int]
    mask: list[int]
    logprobs: list[float]
    prompt_length: int
    turns: int = 0
    format_errors: int = 0
    answer: str | None = None
    done: bool = False
    truncation_reason: str | None = None
    extra: dict = field(default_factory=dict)
    final_state: dict | None = None  # the real state at the end, kept for a task scorer (read before closing)
    user_turn: int = 0
    turn_steps: int = 0  # assistant turns in the current user turn

    def extend(self, ids: list[int], mask: int, logprobs: list[float] | None = None) -> None:
        self.ids.extend(ids)
        self.mask.extend([mask] * len(ids))
        self.logprobs.extend(logprobs if logprobs is not None else [0.0] * len(ids))

    def truncate(self, reason: str) -> None:
        self.done = True
        self.truncation_reason = reason


class RolloutRunner:
    """Holds what is shared by every episode of a rollout: engine, tokenizer, format, tools, limits."""

    def __init__(
        self,
        engine: GenerationEngine,
        tokenizer,
        fmt: ChatFormat,
        suite: ToolSuite,
        config: RolloutConfig,
    ):
        self.engine = engine
        self.tokenizer = tokenizer
        self.fmt = fmt
        self.suite = suite
        self.config = config
        self.encoder = SegmentTokenizer(tokenizer)
        self.eos_id = tokenizer.eos_token_id
        self.newline = self.encoder.encode("\n")
        self.generation_prompt = self.encoder.encode(fmt.generation_prompt())
        self.too_long: list[int] = []  # prompt lengths of episodes whose prompt alone exceeded the budget
        self.open_envs: list[ToolEnv] = []

    # ------------------------------------------------------------------ setup
    def new_episode(self, task: Task, sample_index: int) -> _Episode:
        cfg = self.config
        env = ToolEnv(
            self.suite,
            cfg.trial_budget,
            cfg.tool_timeout_s,
            cfg.max_observation_chars,
            strict_types=cfg.strict_types,
        )
        env.reset(task)
        self.open_envs.append(env)
        schemas = [tool.schema for tool in env.tools.values()]
        messages = opening_messages(
            self.fmt, task.query, schemas, cfg.trial_budget, multi_turn=bool(task.follow_ups)
        )
        ids, _ = tokenize_conversation(self.encoder, self.fmt, messages, schemas, add_generation_prompt=True)
        ep = _Episode(
            task, sample_index, env, schemas, messages, ids, [0] * len(ids), [0.0] * len(ids), len(ids)
        )
        if len(ids) >= cfg.max_total_tokens:
            self.too_long.append(len(ids))
            ep.truncate(PROMPT_TOO_LONG)
        return ep

    def next_user_turn(self, ep: _Episode) -> bool:
        """After an answer: open the task's next user turn (True), or report that none is left (False)."""
        if ep.user_turn + 1 >= ep.task.num_user_turns:
            return False
        ep.user_turn += 1
        ep.turn_steps = 0
        follow_up = ep.task.follow_ups[ep.user_turn - 1]
        added = ep.env.begin_user_turn(ep.user_turn, list(follow_up.get("add_tools", [])))
        message = user_turn_message(
            follow_up["query"], [tool.schema for tool in added], self.fmt.tool_rendering
        )
        ep.messages.append(message)
        ids, _ = tokenize_segments(self.fmt.message_segments(message), self.encoder)
        ep.extend(ids, 0)
        return True

    # ------------------------------------------------------------------- turn
    def apply(self, ep: _Episode, gen: Generation, cap: int | None = None) -> None:
        self.apply_all([(ep, gen, cap)])

    def apply_all(self, turns: list[tuple[_Episode, Generation, int | None]]) -> None:
        """Apply a batch of finished turns; their tool calls run concurrently (one per episode)."""
        pending = [self._begin(ep, gen, cap) for ep, gen, cap in turns]
        for finish in pending:
            if finish is not None:
                finish()

    def _begin(self, ep: _Episode, gen: Generation, cap: int | None) -> Callable[[], None] | None:
        """Append the turn and start its call; returns what completes the turn (None when it ended)."""
        cfg = self.config
        ep.extend(gen.token_ids, 1, gen.logprobs)
        if gen.finish_reason != "eos":
            ep.extend([self.eos_id], 0)
        ep.extend(self.newline, 0)
        ep.messages.append({"role": "assistant", "content": gen.text})
        ep.turns += 1
        ep.turn_steps += 1
        if gen.finish_reason == "length":
            limited_by_episode = cap is not None and cap < cfg.max_new_tokens
            ep.truncate("max_total_tokens" if limited_by_episode else "max_new_tokens")
            return None
        action = parse_action(gen.text, self.fmt.tags)
        if action.kind == ActionKind.ANSWER:
            ep.extra.setdefault("answers", []).append(action.answer)
            if not self.next_user_turn(ep):
                ep.answer = action.answer
                ep.done = True
                return None
            self._continue(ep)
            return None
        if action.kind in (ActionKind.TRIAL, ActionKind.CALL):
            phase = TRIAL if action.kind == ActionKind.TRIAL else EXECUTION
            wait = ep.env.start(action.name, action.arguments, phase)
            return lambda: self._observe(ep, wait().observation, phase)
        ep.format_errors += 1
        if action.intended is not None:
            phase = TRIAL if action.intended == ActionKind.TRIAL else EXECUTION
            record = ep.env.invalid(phase, gen.text, action.error or "unreadable call")
            return lambda: self._observe(ep, record.observation, phase)
        return lambda: self._observe(ep, f"Format error: {action.error}", None)

    def _observe(self, ep: _Episode, observation: str, phase: str | None) -> None:
        """Append the observation as a tool turn, then the next generation prompt (or end the episode)."""
        cfg = self.config
        observation = observation_text(observation, phase == TRIAL, ep.env.trials_used, cfg.trial_budget)
        message = {"role": "tool", "content": observation}
        ep.messages.append(message)
        ids, _ = tokenize_segments(self.fmt.message_segments(message), self.encoder)
        ep.extend(ids, 0)
        limit = cfg.max_steps_per_user_turn
        if limit is not None and ep.turn_steps >= limit:
            ep.truncate("max_steps_per_user_turn")
            return
        self._continue(ep)

    def _continue(self, ep: _Episode) -> None:
        """End the episode at a limit, or open the next assistant turn."""
        cfg = self.config
        if ep.turns >= cfg.max_turns:
            ep.truncate("max_turns")
        elif len(ep.ids) + len(self.generation_prompt) >= cfg.max_total_tokens:
            ep.truncate("max_total_tokens")
        else:
            ep.extend(self.generation_prompt, 0)

    # -------------------------------------------------------------------- run
    def run(self, tasks: list[Task], progress: Callable[[int], None] | None = None) -> list[Trajectory]:
        clear = getattr(self.engine, "clear", None)  # cached KV must not outlive this rollout's weights
        if clear is not None:
            clear()
        self.too_long = []
        try:
            if self.config.continuous and hasattr(self.engine, "generate_continuous"):
                finished = self._run_continuous(tasks, progress)
            else:
                finished = self._run_by_turns(tasks, progress)
        finally:
            if clear is not None:
                clear()
            for env in self.open_envs:  # episodes still open after an error
                env.close()
            self.open_envs.clear()
        cfg = self.config
        order = {
            (task.id, k): i for i, (task, k) in enumerate((t, k) for t in tasks for k in range(cfg.n_samples))
        }
        finished.sort(key=lambda ep: order[(ep.task.id, ep.sample_index)])
        if self.too_long:
            log.warning(
                "%d of %d episodes have a prompt longer than sampler.max_total_tokens=%d (longest %d tokens): "
                "they ended before their first token (truncation_reason=%s); raise sampler.max_total_tokens",
                len(self.too_long),
                len(finished),
                cfg.max_total_tokens,
                max(self.too_long),
                PROMPT_TOO_LONG,
            )
        return [self.to_trajectory(ep) for ep in finished]

    def _run_continuous(self, tasks: list[Task], progress: Callable[[int], None] | None) -> list[_Episode]:
        cfg = self.config
        release = getattr(self.engine, "release", None)
        queue = deque((task, k) for task in tasks for k in range(cfg.n_samples))
        finished: list[_Episode] = []
        live: dict[int, tuple[_Episode, int]] = {}  # engine key -> (episode, this turn's token cap)

        def finish(ep: _Episode) -> None:
            self.close_episode(ep)
            finished.append(ep)
            if release is not None:
                release([id(ep)])
            if progress is not None:
                progress(1)

        def next_turn(ep: _Episode) -> TurnRequest | None:
            if ep.done:  # ended before its first turn (prompt too long)
                finish(ep)
                return None
            cap = min(cfg.max_new_tokens, cfg.max_total_tokens - len(ep.ids))
            if cap <= 0:
                ep.truncate("max_total_tokens")
                finish(ep)
                return None
            live[id(ep)] = (ep, cap)
            return TurnRequest(id(ep), ep.ids, cap)

        def refill() -> list[TurnRequest]:
            requests = []
            while queue and len(live) < cfg.batch_size:
                request = next_turn(self.new_episode(*queue.popleft()))
                if request is not None:
                    requests.append(request)
            return requests

        def on_finish(results: list[tuple[Hashable, Generation]]) -> list[TurnRequest]:
            requests = []
            turns = [(*live.pop(key), gen) for key, gen in results]  # type: ignore[arg-type]
            self.apply_all([(ep, gen, cap) for ep, cap, gen in turns])
            for ep, _, _ in turns:
                if ep.done:
                    finish(ep)
                elif (request := next_turn(ep)) is not None:
                    requests.append(request)
            return requests + refill()

        params = SamplingParams(cfg.temperature, cfg.top_p, cfg.max_new_tokens, cfg.seed * 100_003)
        self.engine.generate_continuous(refill(), params, on_finish)  # type: ignore[attr-defined]
        return finished

    def _run_by_turns(self, tasks: list[Task], progress: Callable[[int], None] | None) -> list[_Episode]:
        cfg = self.config
        release = getattr(self.engine, "release", None)
        queue = deque((task, k) for task in tasks for k in range(cfg.n_samples))
        finished: list[_Episode] = []
        live: list[_Episode] = []
        call_index = 0
        while queue or live:
            while queue and len(live) < cfg.batch_size:
                live.append(self.new_episode(*queue.popleft()))
            caps = [min(cfg.max_new_tokens, cfg.max_total_tokens - len(ep.ids)) for ep in live]
            for ep, cap in zip(live, caps):
                if cap <= 0 and not ep.done:
                    ep.truncate("max_total_tokens")
            turn = [(ep, cap) for ep, cap in zip(live, caps) if not ep.done]
            if turn:
                params = SamplingParams(
                    cfg.temperature, cfg.top_p, cfg.max_new_tokens, cfg.seed * 100_003 + call_index
                )
                call_index += 1
                gens = self.engine.generate(
                    [ep.ids for ep, _ in turn],
                    params,
                    [cap for _, cap in turn],
                    [ep.messages for ep, _ in turn],
                    keys=[id(ep) for ep, _ in turn],
                )
                self.apply_all([(ep, gen, cap) for (ep, cap), gen in zip(turn, gens)])
            still = []
            for ep in live:
                if ep.done:
                    self.close_episode(ep)
                    finished.append(ep)
                    if release is not None:
                        release([id(ep)])
                    if progress is not None:
                        progress(1)
                else:
                    still.append(ep)
            live = still
        return finished

    def close_episode(self, ep: _Episode) -> None:
        """End the episode's tool processes, first keeping its real state when the task's scorer may read it."""
        if ep.task.scorer is not None:
            try:
                ep.final_state = ep.env.state
            except RuntimeError as exc:  # ToolHostError: a state that cannot leave its process
                log.warning("task %s: the final state cannot be read for its scorer (%s)", ep.task.id, exc)
        ep.env.close()

    def to_trajectory(self, ep: _Episode) -> Trajectory:
        trajectory = Trajectory(
            task_id=ep.task.id,
            split=ep.task.split,
            messages=ep.messages,
            tools=ep.tool_schemas,
            token_ids=ep.ids,
            loss_mask=ep.mask,
            logprobs=ep.logprobs,
            prompt_length=ep.prompt_length,
            calls=[record.to_dict() for record in ep.env.records],
            answer=ep.answer,
            correct=False,
            turns=ep.turns,
            format_errors=ep.format_errors,
            truncated=ep.truncation_reason is not None,
            truncation_reason=ep.truncation_reason,
            sample_index=ep.sample_index,
            trial_budget=self.config.trial_budget,
            counters=dict(ep.env.counters),
        )
        trajectory.correct = ep.task.score(trajectory, ep.final_state)
        return trajectory


def rollout(
    engine: GenerationEngine,
    tokenizer,
    fmt: ChatFormat,
    suite: ToolSuite,
    tasks: list[Task],
    config: RolloutConfig,
    progress: Callable[[int], None] | None = None,
) -> list[Trajectory]:
    """Play ``config.n_samples`` episodes of every task; trajectories come back in task order."""
    return RolloutRunner(engine, tokenizer, fmt, suite, config).run(tasks, progress)
