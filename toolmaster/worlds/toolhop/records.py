"""ToolHop's data file -> checked records (nothing of the functions' code runs here).

ToolHop (bytedance-research/ToolHop on Hugging Face, ``data/ToolHop.json``) is one JSON array of 995 records::

    {"id": 0,
     "question": "How many letters (exclude first and last) are in the first name of the designer of ...?",
     "answer": "4",
     "sub_task": {"<sub-question 1>": "<its answer>", ...},                 # the hops, in order
     "tools": {"<sub-question 1>": {"name": ..., "description": ..., "parameters": {JSON schema}}, ...},
     "functions": ["def geo_relationship_finder(location_name, entity_types=None):\\n ...", ...]}

``tools`` is a mapping (sub-question -> tool schema) in the released file; a plain list of schemas is accepted
too. Each ``functions`` entry is Python source; the function it defines is found by parsing (``ast``), never by
running it: the code runs only in the tool host's call processes (``toolmaster.worlds.toolhop.functions``). A
JSONL file (one record per line) is read as well. Every problem is one line naming the file and the record.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolmaster.errors import DataError
from toolmaster.worlds.files import read_json_records

REQUIRED = ("id", "question", "answer", "tools", "functions")


@dataclass(frozen=True)
class ToolHopRecord:
    id: str
    question: str
    answer: str
    tools: tuple[dict[str, Any], ...]
    sources: dict[str, tuple[str, ...]]  # function name -> the sources that define it (in file order)
    sub_task: dict[str, Any] = field(default_factory=dict)

    @property
    def tool_names(self) -> tuple[str, ...]:
        return tuple(tool["name"] for tool in self.tools)


def defined_function(source: str) -> str | None:
    """The name of the first top-level function ``source`` defines (None when it defines none)."""
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return node.name
    return None


def _tools(value: Any, where: str) -> tuple[dict[str, Any], ...]:
    schemas = list(value.values()) if isinstance(value, dict) else value
    if not isinstance(schemas, list) or not schemas:
        raise DataError(f"{where}: 'tools' must be a non-empty mapping (or list) of tool schemas")
    out = []
    for schema in schemas:
        if not isinstance(schema, dict) or not isinstance(schema.get("name"), str) or not schema["name"]:
            raise DataError(f"{where}: every tool schema needs a 'name' (got {str(schema)[:80]!r})")
        parameters = schema.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(parameters, dict) or parameters.get("type", "object") != "object":
            raise DataError(
                f"{where}: tool {schema['name']!r}: 'parameters' must be a JSON schema of an object"
            )
        out.append(
            {
                "name": schema["name"],
                "description": str(schema.get("description", "")),
                "parameters": {"type": "object", **{k: v for k, v in parameters.items() if k != "type"}},
            }
        )
    return tuple(out)


def _sources(value: Any, where: str) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise DataError(f"{where}: 'functions' must be a list of Python source strings")
    found: dict[str, list[str]] = {}
    for i, source in enumerate(value):
        try:
            name = defined_function(source)
        except SyntaxError as exc:
            raise DataError(
                f"{where}: functions[{i}] is not valid Python: {exc.msg} (line {exc.lineno})"
            ) from None
        if name is None:
            raise DataError(f"{where}: functions[{i}] defines no function")
        found.setdefault(name, []).append(source)
    return {name: tuple(sources) for name, sources in found.items()}


def parse_record(raw: Any, where: str) -> ToolHopRecord:
    if not isinstance(raw, dict):
        raise DataError(f"{where}: a ToolHop record must be a JSON object, got {type(raw).__name__}")
    missing = [key for key in REQUIRED if key not in raw]
    if missing:
        raise DataError(
            f"{where}: record is missing field(s) {missing}; a ToolHop record has {', '.join(REQUIRED)}"
        )
    where = f"{where} (id {raw['id']!r})"
    for key in ("question", "answer"):
        if not isinstance(raw[key], (str, int, float)) or not str(raw[key]).strip():
            raise DataError(f"{where}: '{key}' must be a non-empty string")
    sub_task = raw.get("sub_task") or {}
    if not isinstance(sub_task, dict):
        raise DataError(f"{where}: 'sub_task' must be a mapping of sub-question -> answer")
    return ToolHopRecord(
        id=str(raw["id"]),
        question=str(raw["question"]),
        answer=str(raw["answer"]),
        tools=_tools(raw["tools"], where),
        sources=_sources(raw["functions"], where),
        sub_task=dict(sub_task),
    )


def load_records(path: Path) -> list[ToolHopRecord]:
    """Every record of ``path`` (a JSON array or JSONL), checked; a DataError for the first bad one."""
    records = [parse_record(raw, f"{path}: record [{i}]") for i, raw in enumerate(read_json_records(path))]
    seen: set[str] = set()
    for record in records:
        if record.id in seen:
            raise DataError(f"{path}: duplicate record id {record.id!r}")
        seen.add(record.id)
    if not records:
        raise DataError(f"{path}: no ToolHop records")
    return records
