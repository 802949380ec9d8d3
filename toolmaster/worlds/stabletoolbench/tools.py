"""ToolEnv2404 tool files -> tools whose calls go to a running StableToolBench virtual API server.

A tool file (``<tools_dir>/<category>/<standard tool name>.json``) holds ``tool_name``, ``tool_description``
and ``api_list``: per API ``name``, ``description``, ``method``, ``required_parameters`` and
``optional_parameters`` (each ``{name, type, description, default}``, types ``STRING`` / ``NUMBER`` /
``BOOLEAN`` / ...). Each API becomes one tool named ``<api>_for_<tool>`` (``names.py``) with a JSON schema:
``NUMBER`` -> integer, ``BOOLEAN`` -> boolean, anything else -> string (as ToolBench maps them, here without
regard to case), the example value kept as ``example_value``; parameter names are standardized.

A call is one ``POST <server_url>`` (StableToolBench's ``/virtual``) with ``category``, ``tool_name`` (the
standard tool name), ``api_name`` (the pure API name), ``tool_input`` (the arguments as a JSON string),
``strip`` and ``toolbench_key``; the server answers ``{"error": "...", "response": ...}``. The observation is
``response``; a non-empty ``error``, an HTTP error status, an answer that is not that JSON, a refused connection
or no answer within ``request_timeout_s`` raise, which the tool environment turns into an error observation.
The key is read from ``$key_env`` in the call's process, sent in the body and the ``toolbench_key`` header as
ToolBench's client does, and redacted from anything that comes back.

Departures from ToolBench's client: optional parameters are offered for every API (ToolBench's converter
drops them when an API has no required parameter, an indentation slip); the description is this framework's
short line rather than ToolBench's "This is the subfunction for tool ..." template; the observation is the
``response`` alone (ToolBench shows the whole JSON, ``error`` included); no 2-second sleep between calls.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from toolmaster.worlds.remote import http_request, read_secret, redact
from toolmaster.worlds.stabletoolbench.names import api_name, change_name, function_name, standardize

TYPES = {"NUMBER": "integer", "INTEGER": "integer", "BOOLEAN": "boolean", "STRING": "string"}
MAX_DESCRIPTION = 256


def parameter_schema(parameter: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A ToolBench parameter -> (standardized name, JSON-schema property)."""
    name = change_name(standardize(str(parameter.get("name", ""))))
    prop: dict[str, Any] = {"type": TYPES.get(str(parameter.get("type", "STRING")).upper(), "string")}
    about = " ".join(str(parameter.get("description") or "").split())
    if about:
        prop["description"] = about[:MAX_DESCRIPTION]
    default = parameter.get("default")
    if default is not None and str(default) != "":
        prop["example_value"] = default
    return name, prop


def api_schema(api: dict[str, Any], tool: dict[str, Any], standard_tool: str) -> dict[str, Any]:
    """``{"name", "description", "parameters"}`` of one API of a tool file."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    for parameter in api.get("required_parameters") or []:
        name, prop = parameter_schema(parameter)
        if name:
            properties[name] = prop
            required.append(name)
    for parameter in api.get("optional_parameters") or []:
        name, prop = parameter_schema(parameter)
        if name and name not in properties:
            properties[name] = prop
    about = " ".join(str(api.get("description") or "").split())
    description = f"{api.get('name')} of tool {tool.get('tool_name', standard_tool)}" + (
        f": {about}" if about else ""
    )
    parameters: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        parameters["required"] = required
    return {
        "name": function_name(str(api.get("name", "")), standard_tool),
        "description": description[:MAX_DESCRIPTION],
        "parameters": parameters,
    }


class VirtualApiError(RuntimeError):
    """The virtual API server answered with an error (HTTP status, ``error`` field, or not its JSON)."""


@dataclass(frozen=True)
class VirtualApi:
    """One API of a tool, called through the virtual API server (a picklable callable: no key inside)."""

    server_url: str
    category: str
    tool_name: str  # the standard tool name (the tool file's name)
    api: str  # the pure API name
    key_env: str | None
    strip: str = "truncate"
    request_timeout_s: float = 25.0

    def payload(self, arguments: dict[str, Any], key: str) -> dict[str, Any]:
        return {
            "category": self.category,
            "tool_name": self.tool_name,
            "api_name": self.api,
            "tool_input": json.dumps(arguments, ensure_ascii=False),
            "strip": self.strip,
            "toolbench_key": key,
        }

    def __call__(self, **arguments: Any) -> Any:
        key = read_secret(self.key_env, "tools.world.key_env", "ToolBench key") if self.key_env else ""
        body = json.dumps(self.payload(arguments, key)).encode()
        headers = {"Content-Type": "application/json", "accept": "application/json"}
        if key:
            headers["toolbench_key"] = key
        status, text = http_request(
            "POST", self.server_url, body=body, headers=headers, timeout_s=self.request_timeout_s
        )
        text = redact(text, [key])
        if status != 200:
            raise VirtualApiError(
                f"the virtual API server answered HTTP {status}: {' '.join(text.split())[:300]}"
            )
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            raise VirtualApiError(f"the virtual API server's answer is not JSON: {text[:300]!r}") from None
        if not isinstance(data, dict) or "response" not in data:
            raise VirtualApiError(f"the virtual API server's answer has no 'response': {text[:300]!r}")
        if data.get("error"):
            raise VirtualApiError(f"API error: {' '.join(str(data['error']).split())[:300]}")
        return data["response"]


def pure_api_name(api: dict[str, Any]) -> str:
    return api_name(str(api.get("name", "")))
