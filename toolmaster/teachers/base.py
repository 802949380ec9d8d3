"""What a teacher is: ``play(request)`` writes trial-and-execution episodes of the requested tasks.

``stage=synthesize`` builds a teacher from the ``teacher`` group, asks it for ``samples_per_task`` episodes of
each task of a chunk (``PlayRequest``: the world, the tasks, the chat format and the tools' limits) and
keeps the episodes its rewards score as data. The teachers (``ExpertTeacher`` for oracle / direct,
``GoldTrialsTeacher``, ``OpenAITeacher``) share nothing else: each plays the episodes its own way (a scripted
expert through a fresh environment per episode, gold calls with trials in front, or a remote model through the
shared rollout loop) and returns them as ``Trajectory`` records in the request's task order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from toolmaster.envs.task import Task
from toolmaster.protocol.chat_format import ChatFormat
from toolmaster.trajectory import Trajectory
from toolmaster.worlds.base import World

# Called with the number of episodes just finished (a tqdm bar's ``update``).
Progress = Callable[[int], None]


@dataclass(frozen=True)
class PlayRequest:
    """The episodes a teacher is asked for: ``samples_per_task`` of each task, under the tools' limits."""

    world: World
    tasks: list[Task]
    trial_budget: int
    fmt: ChatFormat
    samples_per_task: int = 1
    timeout_s: float = 5.0
    max_observation_chars: int = 600
    tokenizer: Any = (
        None  # the student's tokenizer: a chat-API teacher counts tokens in the student's vocabulary
    )


@runtime_checkable
class Teacher(Protocol):
    """Writes the episodes of a ``PlayRequest``; ``name`` is recorded as each kept episode's ``teacher``."""

    @property
    def name(self) -> str: ...

    def play(self, request: PlayRequest, progress: Progress | None = None) -> list[Trajectory]: ...
