"""BFCL function docs -> the JSON-schema tool definitions this framework shows and checks.

BFCL writes Python-flavoured type names; they map to JSON Schema as: ``dict`` -> ``object``, ``float`` ->
``number``, ``tuple`` / ``list`` -> ``array``, ``int`` -> ``integer``, ``str`` -> ``string``, ``bool`` ->
``boolean``, and ``any`` drops the type (anything is accepted). Nested ``properties`` and ``items`` are
converted recursively; descriptions, ``required``, ``enum`` and ``default`` are kept, the ``response`` block
(what the function returns) is not shown to the model.
"""

from __future__ import annotations

from typing import Any

TYPE_NAMES = {
    "dict": "object",
    "object": "object",
    "float": "number",
    "number": "number",
    "tuple": "array",
    "list": "array",
    "array": "array",
    "int": "integer",
    "integer": "integer",
    "str": "string",
    "string": "string",
    "bool": "boolean",
    "boolean": "boolean",
    "null": "null",
}
KEPT = ("description", "required", "enum", "default")


def convert_type(name: Any) -> str | None:
    """A BFCL type name -> the JSON-schema type (None for ``any`` or a name it does not know)."""
    return TYPE_NAMES.get(str(name).lower()) if name is not None else None


def convert_schema(node: dict[str, Any]) -> dict[str, Any]:
    """One BFCL parameter node (recursively) -> JSON Schema."""
    out: dict[str, Any] = {}
    json_type = convert_type(node.get("type"))
    if json_type is not None:
        out["type"] = json_type
    for key in KEPT:
        if key in node:
            out[key] = node[key]
    if isinstance(node.get("properties"), dict):
        out["properties"] = {name: convert_schema(spec) for name, spec in node["properties"].items()}
    if isinstance(node.get("items"), dict):
        out["items"] = convert_schema(node["items"])
    return out


def tool_schema(doc: dict[str, Any]) -> dict[str, Any]:
    """A BFCL function doc -> ``{"name", "description", "parameters"}`` with an object-typed parameters schema."""
    parameters = convert_schema(doc.get("parameters") or {})
    parameters["type"] = "object"
    parameters.setdefault("properties", {})
    return {"name": doc["name"], "description": doc.get("description", ""), "parameters": parameters}
