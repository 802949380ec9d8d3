"""The Trajectory: the one record passed from sampler to rewards, losses, metrics and data files.

Token ids are the ids the model actually saw and produced during the rollout (never re-tokenized), so
RL trains on exactly what was sampled. ``loss_mask`` is 1 on sampled tokens only; ``logprobs`` holds the
sampling log-probability of each sampled token (0.0 elsewhere).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, TypedDict

from toolmaster.protocol.phases import Phase


class Call(TypedDict):
    """One tool call of an episode as the trajectory records it (``CallRecord.to_dict()``)."""

    phase: str  # a Phase value: "trial" | "execution"
    name: str | None
    arguments: Any
    observation: str
    ok: bool
    error: str | None
    output_truncated: bool
    duration_s: float


@dataclass
class Trajectory:
    task_id: str
    split: str
    messages: list[dict[str, str]]
    tools: list[dict[str, Any]] = field(default_factory=list)  # JSON schemas of the episode's tools
    token_ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    prompt_length: int = 0
    calls: list[Call] = field(default_factory=list)
    answer: str | None = None
    correct: bool = False
    turns: int = 0
    format_errors: int = 0
    truncated: bool = False
    truncation_reason: str | None = None
    sample_index: int = 0
    trial_budget: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    reward: float | None = None
    reward_components: dict[str, float] = field(default_factory=dict)
    source: str = ""  # who produced it: a model path, a teacher name

    # ------------------------------------------------------------ derived views
    def calls_in(self, phase: str) -> list[Call]:
        return [c for c in self.calls if c["phase"] == phase]

    @property
    def num_trial_calls(self) -> int:
        return len(self.calls_in(Phase.TRIAL))

    @property
    def num_execution_calls(self) -> int:
        return len(self.calls_in(Phase.EXECUTION))

    @property
    def num_failed_calls(self) -> int:
        return sum(1 for c in self.calls if not c["ok"])

    @property
    def self_corrected(self) -> bool:
        """A failed call later followed by a successful call of the same tool (or any, if unnamed)."""
        failed: set[str | None] = set()
        for call in self.calls:
            if not call["ok"]:
                failed.add(call["name"])
            elif call["name"] in failed or None in failed:
                return True
        return False

    @property
    def valid_format(self) -> bool:
        """Ended with an answer and every turn parsed."""
        return self.answer is not None and self.format_errors == 0

    @property
    def num_generated_tokens(self) -> int:
        return int(sum(self.loss_mask))

    # ------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trajectory:
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown trajectory field(s) {sorted(unknown)}")
        return cls(**data)
