"""Tool worlds: a ToolSuite plus tasks grouped by split (toolworld, user-defined YAML worlds)."""

from toolmaster.worlds.base import World

__all__ = ["World"]
