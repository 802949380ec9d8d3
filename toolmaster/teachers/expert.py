"""Programmatic teachers for worlds whose tasks carry ground truth (toolworld).

``oracle``: plays the world's scripted expert through the real environment, so every observation is
genuine. In the trial phase the expert probes the unfamiliar tools (including realistic wrong guesses at
argument formats, corrected from the error messages), then executes and answers. Its reasoning phrasing is
drawn from several variants with a seeded RNG, so a student does not learn one template.

``teacher.execution_slips=p`` (oracle only, default 0): a fraction p of the episodes first slips on an
execution call and corrects it from the error (``toolmaster.teachers.slips``; the slip's turn carries no SFT
loss).

``teacher.trials=when_needed`` (oracle only, default ``always``): tasks that the expert solves with trials
refused are written without trials, correcting from execution errors (``toolmaster.teachers.trial_mix``).

``direct``: golden direct-execution trajectories: the task's ground-truth calls executed straight away
(no trials, trial budget 0 in the prompt), with genuine observations, then the golden answer. This is the
"imitate golden trajectories" baseline.

Both write exactly the messages the rollout loop would produce for the same actions (same system prompt,
same markup, same observation text), so SFT data and RL rollouts share one format.
"""

from __future__ import annotations

import random
from collections.abc import Generator
from typing import Any

from toolmaster.envs.environment import TRIAL, CallRecord, ToolEnv
from toolmaster.envs.task import Task
from toolmaster.errors import ConfigError
from toolmaster.protocol.chat_format import ChatFormat
from toolmaster.protocol.phases import ActionKind
from toolmaster.protocol.prompt import observation_text, opening_messages
from toolmaster.teachers.base import PlayRequest, Progress
from toolmaster.teachers.slips import with_slips
from toolmaster.teachers.trial_mix import TRIALS_MODES, trial_only_when_needed
from toolmaster.trajectory import Trajectory
from toolmaster.worlds.base import World
from toolmaster.worlds.scripted import Policy, ScriptedEpisode, Step, run_policy

DIRECT_THOUGHTS = (
    "I will call {name} with {args_text}.",
    "{name} should give what I need; calling it with {args_text}.",
    "Next step: {name} on {args_text}.",
    "Using {name} now.",
    "Let me run {name} with {args_text}.",
)
DIRECT_ANSWER_THOUGHTS = (
    "That gives the answer.",
    "I have what I need.",
    "Done; answering.",
    "The result answers the task.",
)


def direct_policy(task: Task, rng: random.Random) -> Generator[Step, CallRecord, None]:
    """Golden direct execution: the ground-truth calls, in order, then the golden answer."""
    for call in task.gold_calls:
        args_text = ", ".join(f"{k}={v!r}" for k, v in call["arguments"].items()) or "no arguments"
        thought = rng.choice(DIRECT_THOUGHTS).format(name=call["name"], args_text=args_text)
        yield Step(ActionKind.CALL, call["name"], dict(call["arguments"]), thought=thought)
    yield Step(ActionKind.ANSWER, answer=task.answer, thought=rng.choice(DIRECT_ANSWER_THOUGHTS))


def episode_messages(
    episode: ScriptedEpisode, schemas: list[dict[str, Any]], trial_budget: int, fmt: ChatFormat
) -> list[dict[str, str]]:
    """Render a scripted episode as the protocol's conversation."""
    tags = fmt.tags
    messages = opening_messages(fmt, episode.task.query, schemas, trial_budget)
    trials = 0
    for step, record in zip(episode.steps, episode.records):
        think = tags.wrap_think(step.thought) if step.thought else ""
        if step.kind == ActionKind.ANSWER:
            messages.append({"role": "assistant", "content": think + tags.wrap_answer(str(step.answer))})
            break
        kind = ActionKind.TRIAL if step.kind == ActionKind.TRIAL else ActionKind.CALL
        message = {
            "role": "assistant",
            "content": think + tags.wrap_call(kind, step.name or "", step.arguments or {}),
        }
        if not step.train:
            message["train"] = False  # SFT keeps the turn as context, without loss on it
        messages.append(message)
        assert record is not None
        is_trial = record.phase == TRIAL
        trials += is_trial
        messages.append(
            {"role": "tool", "content": observation_text(record.observation, is_trial, trials, trial_budget)}
        )
    return messages


class ExpertTeacher:
    """Plays a scripted policy per task through a fresh ToolEnv and returns trajectories."""

    def __init__(
        self,
        kind: str = "oracle",
        seed: int = 0,
        max_steps: int = 12,
        execution_slips: float = 0.0,
        trials: str = "always",
    ) -> None:
        if kind not in ("oracle", "direct"):
            raise ValueError(f"teacher kind must be 'oracle' or 'direct', got {kind!r}")
        if not 0.0 <= execution_slips <= 1.0:
            raise ConfigError(f"teacher.execution_slips={execution_slips} must be a fraction in [0, 1]")
        if kind == "direct" and execution_slips:
            raise ConfigError(
                "teacher.execution_slips: the direct teacher writes golden episodes, without slips"
            )
        if trials not in TRIALS_MODES:
            raise ConfigError(f"teacher.trials={trials!r} must be one of {', '.join(TRIALS_MODES)}")
        if kind == "direct" and trials != "always":
            raise ConfigError("teacher.trials: the direct teacher writes golden episodes, without trials")
        self.kind = kind
        self.trials = trials
        self.seed = seed
        self.max_steps = max_steps
        self.execution_slips = execution_slips

    @property
    def name(self) -> str:
        return self.kind

    def _policy(self, world: World, task: Task) -> Policy:
        if self.kind == "direct":
            return direct_policy
        from toolmaster.worlds.toolworld import expert_policy

        try:
            return expert_policy(world, task)
        except KeyError:
            raise ConfigError(
                f"teacher=oracle plays only toolworld tasks, and task {task.id!r} of world {world.name!r} is not "
                "one; use teacher=gold_trials (trials, then the task's gold calls) for other worlds"
            ) from None

    def play(self, request: PlayRequest, progress: Progress | None = None) -> list[Trajectory]:
        """``samples_per_task`` scripted episodes of each task, each through a fresh environment."""
        world, fmt = request.world, request.fmt
        timeout_s, max_observation_chars = request.timeout_s, request.max_observation_chars
        budget = 0 if self.kind == "direct" else request.trial_budget
        out: list[Trajectory] = []
        for task in request.tasks:
            for k in range(request.samples_per_task):
                seed = f"{self.seed}:{task.id}:{k}"
                env = ToolEnv(world.suite, budget, timeout_s, max_observation_chars)
                policy = self._policy(world, task)
                if self.trials == "when_needed" and budget > 0:
                    policy = trial_only_when_needed(
                        policy,
                        task,
                        lambda: ToolEnv(world.suite, 0, timeout_s, max_observation_chars),
                        lambda seed=seed: random.Random(seed),
                        self.max_steps,
                    )
                rng = random.Random(seed)
                if self.execution_slips:
                    parameters = {name: world.suite.tools[name].parameters for name in task.tool_names}
                    slip_rng = random.Random(f"{self.seed}:{task.id}:{k}:slips")
                    policy = with_slips(policy, parameters, self.execution_slips, slip_rng)
                episode = run_policy(policy, task, env, rng, self.max_steps)
                schemas = [tool.schema for tool in env.tools.values()]
                messages = episode_messages(episode, schemas, budget, fmt)
                out.append(
                    Trajectory(
                        task_id=task.id,
                        split=task.split,
                        messages=messages,
                        tools=schemas,
                        calls=[r.to_dict() for r in env.records],
                        answer=episode.answer,
                        correct=episode.correct,
                        turns=sum(1 for m in messages if m["role"] == "assistant"),
                        sample_index=k,
                        trial_budget=budget,
                        counters=dict(env.counters),
                        source=self.kind,
                    )
                )
                if progress is not None:
                    progress(1)
        return out
