"""Tools, tasks and the per-episode tool environment (trial sandbox + real state)."""

from toolmaster.envs.environment import CallRecord, ToolEnv
from toolmaster.envs.task import Task
from toolmaster.envs.tool import Tool, ToolSuite

__all__ = ["CallRecord", "Task", "Tool", "ToolEnv", "ToolSuite"]
