"""``teacher=gold_trials``: trial-and-execution episodes for any world whose tasks carry gold calls.

No LLM and no world-specific expert: the teacher plays each task through the real environment (so every
observation is genuine) and writes exactly the conversation the rollout loop would hold for the same actions.
Per user turn (single-turn tasks have one):

1. Trials, while the episode's trial budget lasts: before a tool's first real use it is tested in the sandbox.
   The sandbox is forked from the real state when the user turn begins, so the teacher replays the turn's gold
   calls as trials in order, up to the last one whose tool is still untested; each trial then sees the state
   the real call will see (when the budget cannot cover that replay, only the untested tools are tried, on the
   state the turn started from). With probability ``wrong_first_p`` (seeded) the first trial of a tool is a
   plausible wrong argument format (an argument name without its underscores, else a required argument left
   out); its real error observation is read and the next trial uses the gold arguments (a self-correction).
2. Execution: the turn's gold calls on the real state, in order.
3. An answer ends the turn: ``task.answer`` at the last turn when the task has one, else a short closing
   line; a turn without gold calls (the request cannot be done yet: a missing tool or a missing parameter)
   is answered by saying what is missing.

With ``trial_budget=0`` it writes golden direct-execution episodes (the imitation baseline) for multi-turn
worlds too. Success is ``Task.score`` (the task's scorer, e.g. BFCL's checker, else the answer check).
Departure from the toolworld ``oracle``: the wrong guesses come from generic perturbations of the gold
arguments, not from knowledge of each tool's hidden conventions.
"""

from __future__ import annotations

import random
from typing import Any

from toolmaster.envs.environment import EXECUTION, TRIAL, CallRecord, ToolEnv
from toolmaster.envs.task import Task
from toolmaster.envs.tool import Tool
from toolmaster.protocol.chat_format import ChatFormat
from toolmaster.protocol.phases import ActionKind
from toolmaster.protocol.prompt import observation_text, opening_messages, user_turn_message
from toolmaster.teachers.base import PlayRequest, Progress
from toolmaster.trajectory import Trajectory

FIRST_TRIAL = (
    "{name} is new to me; test it in a trial with {args}.",
    "Before using {name} for real, try it in the sandbox with {args}.",
    "Let me see what {name} returns for {args} in a trial.",
)
WRONG_TRIAL = (
    "{name} is new to me; try it in a trial with {args}.",
    "Guessing the format of {name}: a trial with {args}.",
)
CORRECTION = (
    "That failed: {error} Retry {name} in a trial with {args}.",
    "The error says: {error} So the trial of {name} needs {args}.",
)
REPLAY_TRIAL = (
    "Replay {name} with {args} in the sandbox so the next trial sees the right state.",
    "In the sandbox, first {name} with {args}, as the real run will.",
)
EXECUTE = (
    "Now for real: {name} with {args}.",
    "Call {name} with {args}.",
    "Next step: {name} on {args}.",
)
EXECUTE_AFTER_FAILURE = ("The last call failed: {error} Go on with {name} with {args}.",)
DONE = ("Done.", "That is done.", "Finished.")
CANNOT = (
    "I cannot do this yet: I am missing a tool or some information. Please tell me what is missing.",
    "I need more information or another tool to do this. Could you provide it?",
)


def args_text(arguments: dict[str, Any]) -> str:
    text = ", ".join(f"{key}={value!r}" for key, value in arguments.items()) or "no arguments"
    return text if len(text) <= 120 else text[:117] + "..."


def short_error(observation: str, limit: int = 160) -> str:
    text = observation.split(": ", 1)[-1] if observation.startswith("Error") else observation
    return text if len(text) <= limit else text[: limit - 3] + "..."


def wrong_arguments(call: dict[str, Any], tool: Tool) -> dict[str, Any] | None:
    """A plausible wrong argument format the environment rejects, or None when none fits."""
    arguments = dict(call["arguments"])
    for key in arguments:
        squashed = key.replace("_", "")
        if squashed != key and squashed not in tool.parameters.get("properties", {}):
            return {(squashed if k == key else k): v for k, v in arguments.items()}
    required = [key for key in tool.parameters.get("required", []) if key in arguments]
    if required:
        arguments.pop(required[-1])
        return arguments
    return None


class GoldTrialsTeacher:
    """Writes trial-then-gold-execution episodes; see the module docstring."""

    def __init__(
        self, seed: int = 0, wrong_first_p: float = 0.5, strict_types: bool = True, name: str = "gold_trials"
    ) -> None:
        if not 0 <= wrong_first_p <= 1:
            raise ValueError(f"wrong_first_p must be in [0, 1], got {wrong_first_p}")
        self.seed = seed
        self.wrong_first_p = wrong_first_p
        self.strict_types = strict_types
        self.name = name

    def play(self, request: PlayRequest, progress: Progress | None = None) -> list[Trajectory]:
        """``samples_per_task`` episodes of each task: trials, then its gold calls, through the environment."""
        out = []
        for task in request.tasks:
            if not task.gold_calls and task.num_user_turns == 1:
                raise ValueError(f"teacher=gold_trials needs gold calls; task {task.id!r} has none")
            for k in range(request.samples_per_task):
                rng = random.Random(f"{self.seed}:{task.id}:{k}")
                with ToolEnv(
                    request.world.suite,
                    request.trial_budget,
                    request.timeout_s,
                    request.max_observation_chars,
                    strict_types=self.strict_types,
                ) as env:  # closing ends the episode's tool processes (process isolation)
                    out.append(_Episode(self, task, env, request.fmt, rng, k).play())
                if progress is not None:
                    progress(1)
        return out


class _Episode:
    """One teacher episode: the environment, the conversation so far and the tools tested."""

    def __init__(
        self,
        teacher: GoldTrialsTeacher,
        task: Task,
        env: ToolEnv,
        fmt: ChatFormat,
        rng: random.Random,
        k: int,
    ) -> None:
        self.teacher, self.task, self.env, self.fmt, self.rng, self.k = teacher, task, env, fmt, rng, k
        env.reset(task)
        self.schemas = [tool.schema for tool in env.tools.values()]
        self.messages = opening_messages(
            fmt, task.query, self.schemas, env.trial_budget, multi_turn=bool(task.follow_ups)
        )
        self.tested: set[str] = set()
        self.answer: str | None = None

    def act(self, kind: ActionKind, name: str, arguments: dict[str, Any], thought: str) -> CallRecord:
        tags = self.fmt.tags
        self.messages.append(
            {"role": "assistant", "content": tags.wrap_think(thought) + tags.wrap_call(kind, name, arguments)}
        )
        phase = TRIAL if kind == ActionKind.TRIAL else EXECUTION
        record = self.env.execute(name, arguments, phase)
        text = observation_text(
            record.observation, phase == TRIAL, self.env.trials_used, self.env.trial_budget
        )
        self.messages.append({"role": "tool", "content": text})
        return record

    def say(self, options: tuple[str, ...], **fields: Any) -> str:
        return self.rng.choice(options).format(**fields)

    def trials(self, gold: list[dict[str, Any]]) -> None:
        untested = [i for i, call in enumerate(gold) if call["name"] not in self.tested]
        if not untested:
            return
        plan = gold[: untested[-1] + 1]
        if len(plan) > self.env.trial_budget - self.env.trials_used:
            plan = [
                gold[i] for i in untested
            ]  # no budget to replay: test the new tools on the turn's start state
        for call in plan:
            left = self.env.trial_budget - self.env.trials_used
            if left <= 0:
                return
            name, arguments = call["name"], dict(call["arguments"])
            if name in self.tested:
                self.act(
                    ActionKind.TRIAL,
                    name,
                    arguments,
                    self.say(REPLAY_TRIAL, name=name, args=args_text(arguments)),
                )
                continue
            self.tested.add(name)
            tool = self.env.tools.get(name)
            wrong = wrong_arguments(call, tool) if tool is not None else None
            if wrong is not None and left >= 2 and self.rng.random() < self.teacher.wrong_first_p:
                record = self.act(
                    ActionKind.TRIAL, name, wrong, self.say(WRONG_TRIAL, name=name, args=args_text(wrong))
                )
                if not record.ok:
                    thought = self.say(
                        CORRECTION,
                        error=short_error(record.observation),
                        name=name,
                        args=args_text(arguments),
                    )
                    self.act(ActionKind.TRIAL, name, arguments, thought)
                    continue
            self.act(
                ActionKind.TRIAL, name, arguments, self.say(FIRST_TRIAL, name=name, args=args_text(arguments))
            )

    def user_turn(self, turn: int) -> None:
        task = self.task
        if turn > 0:
            follow_up = task.follow_ups[turn - 1]
            added = self.env.begin_user_turn(turn, list(follow_up.get("add_tools", [])))
            self.messages.append(
                user_turn_message(
                    follow_up["query"], [tool.schema for tool in added], self.fmt.tool_rendering
                )
            )
        gold = [call for call in task.gold_calls if int(call.get("user_turn", 0)) == turn]
        self.trials(gold)
        last: CallRecord | None = None
        for call in gold:
            name, arguments = call["name"], dict(call["arguments"])
            if last is not None and not last.ok:
                thought = self.say(
                    EXECUTE_AFTER_FAILURE,
                    error=short_error(last.observation),
                    name=name,
                    args=args_text(arguments),
                )
            else:
                thought = self.say(EXECUTE, name=name, args=args_text(arguments))
            last = self.act(ActionKind.CALL, name, arguments, thought)
        if not gold:
            answer = self.say(CANNOT)
        elif turn == task.num_user_turns - 1 and task.answer:
            answer = task.answer
        else:
            answer = self.say(DONE)
        tags = self.fmt.tags
        self.messages.append({"role": "assistant", "content": tags.wrap_answer(answer)})
        self.answer = answer

    def play(self) -> Trajectory:
        for turn in range(self.task.num_user_turns):
            self.user_turn(turn)
        trajectory = Trajectory(
            task_id=self.task.id,
            split=self.task.split,
            messages=self.messages,
            tools=self.schemas,
            calls=[record.to_dict() for record in self.env.records],
            answer=self.answer,
            turns=sum(1 for m in self.messages if m["role"] == "assistant"),
            sample_index=self.k,
            trial_budget=self.env.trial_budget,
            counters=dict(self.env.counters),
            source=self.teacher.name,
        )
        trajectory.correct = self.task.score(trajectory, self.env.state)
        return trajectory
