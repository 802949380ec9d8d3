"""Tools that call the methods of BFCL's executable API classes, with the instances kept in the episode state.

An episode's state starts as plain JSON (``{"bfcl": {"classes", "config", "long_context"}}``, the task's
``initial_state``) and gets its class instances on the first call (``state["instances"]``), created from the
entry's ``initial_config`` exactly as BFCL's checker creates its own. The environment deep-copies the state
for trials and for each call, so the trial sandbox holds its own instances and a trial never reaches the real
ones. ``BfclMethod`` is a small picklable callable (no closure), so tools can also run in another process.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from toolmaster.envs.tool import Tool
from toolmaster.worlds.bfcl.package import api_class, function_docs, new_instance
from toolmaster.worlds.bfcl.schema import tool_schema

STATE_KEY = "bfcl"
INSTANCES_KEY = "instances"


def initial_state(classes: list[str], config: dict[str, Any], long_context: bool) -> dict[str, Any]:
    return {STATE_KEY: {"classes": list(classes), "config": config, "long_context": long_context}}


def instances(state: dict[str, Any]) -> dict[str, Any]:
    """The state's class instances, created on first use from the scenario in ``state["bfcl"]``."""
    if INSTANCES_KEY not in state:
        spec = state[STATE_KEY]
        state[INSTANCES_KEY] = {
            name: new_instance(name, spec["config"], spec["long_context"]) for name in spec["classes"]
        }
    return state[INSTANCES_KEY]


@dataclass(frozen=True)
class BfclMethod:
    """Calls ``class_name.method`` on the episode's instance of that class."""

    class_name: str
    method: str

    def __call__(self, state: dict[str, Any], **arguments: Any) -> Any:
        found = instances(state)
        if self.class_name not in found:
            raise RuntimeError(
                f"{self.method} belongs to {self.class_name}, which this task does not involve"
            )
        return getattr(found[self.class_name], self.method)(**arguments)


def class_tools(class_name: str) -> list[Tool]:
    """One Tool per function doc of ``class_name`` (family = the class name)."""
    return [
        Tool(**tool_schema(doc), fn=BfclMethod(class_name, doc["name"]), family=class_name)
        for doc in function_docs(class_name)
    ]


def parameter_names(class_name: str, method: str) -> list[str]:
    """The method's parameter names in order (to name the positional arguments of a ground-truth call)."""
    signature = inspect.signature(getattr(api_class(class_name), method))
    return [name for name in signature.parameters if name != "self"]
