"""A World bundles the tools of a suite with its tasks, grouped by split."""

from __future__ import annotations

from dataclasses import dataclass, field

from toolmaster.envs.task import Task
from toolmaster.envs.tool import ToolSuite
from toolmaster.errors import ConfigError


@dataclass
class World:
    name: str
    suite: ToolSuite
    splits: dict[str, list[Task]] = field(default_factory=dict)

    def tasks(self, split: str, limit: int | None = None) -> list[Task]:
        if split not in self.splits:
            raise ConfigError(
                f"world {self.name!r} has no split {split!r}; available: {', '.join(self.splits)}"
            )
        tasks = self.splits[split]
        return tasks[:limit] if limit is not None else tasks
