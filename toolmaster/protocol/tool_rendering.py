"""How the protocol lists tools in the system prompt for chat formats without a native tool format.

Two renderings (``ChatFormat.tool_rendering``, chosen by ``model.chat_format``: ``chatml`` renders ``json``,
``chatml_compact`` renders ``compact``):

- ``json``: one JSON schema per line, exactly the tool's schema (the default; what earlier runs trained on).
- ``compact``: one signature line per tool, about a third of the tokens on toolworld and BFCL
  (``python -m toolmaster.bench.sft_step --renderings json,compact`` prints both)::

      rp_cv(conv: string "conversion spec", x: number "amount") - Unit converter.
      bk_find(city: string, day?: integer = 1, tags?: array[string]) - Search rooms.

  An argument is ``name[?]: type ["description"] [one of a|b] [= default]``; ``?`` marks an optional
  argument; ``array[T]`` an array of ``T``; ``object{...}`` an object with its properties rendered the same
  way (``object`` alone when it has none). Keywords this grammar has no place for (``anyOf``, ``pattern``,
  ``minimum``, ...) follow the argument as compact JSON, so no schema information is lost. Strings (names,
  descriptions, enum values, defaults) are JSON-quoted where they would otherwise be ambiguous, so the line
  parses back into the schema it came from (``tests/helpers/compact_tools.py`` does, for the round-trip
  tests).

Departure from the paper: the paper's models render tools natively (Qwen2.5's ``<tools>`` block); this is a
token-saving rendering for small models on CPU, where every prompt token is paid on every turn.
"""

from __future__ import annotations

import json
import re
from typing import Any

RENDERINGS = ("json", "compact")
# property keywords the compact grammar renders itself; any other keyword is appended as JSON
_OWN_KEYS = {"type", "description", "enum", "default", "items", "properties", "required"}
_BARE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*\Z")


def render_tools(tool_schemas: list[dict[str, Any]], rendering: str = "json") -> str:
    """The tools block of the system prompt: one line per tool in the chosen rendering."""
    if rendering == "json":
        return "\n".join(
            json.dumps(schema, ensure_ascii=False, separators=(", ", ": ")) for schema in tool_schemas
        )
    if rendering == "compact":
        return "\n".join(compact_signature(schema) for schema in tool_schemas)
    raise ValueError(f"unknown tool rendering {rendering!r}; choose one of {', '.join(RENDERINGS)}")


def compact_signature(schema: dict[str, Any]) -> str:
    """``name(arg: type "desc", opt?: type = default) - description.`` for one tool schema."""
    params = schema.get("parameters") or {}
    line = f"{_name(str(schema['name']))}({_arguments(params)})"
    description = " ".join(str(schema.get("description") or "").split())  # one line per tool
    extra = {k: v for k, v in params.items() if k not in {"type", "properties", "required"}}
    if extra:
        line += " " + _json(extra)
    return f"{line} - {description}" if description else line


def _arguments(params: dict[str, Any]) -> str:
    properties: dict[str, Any] = params.get("properties") or {}
    required = set(params.get("required") or [])
    return ", ".join(
        _argument(name, prop if isinstance(prop, dict) else {}, name in required)
        for name, prop in properties.items()
    )


def _argument(name: str, prop: dict[str, Any], required: bool) -> str:
    text = f"{_name(name)}{'' if required else '?'}: {_type(prop)}"
    description = prop.get("description")
    if description not in (None, ""):
        text += " " + json.dumps(str(description), ensure_ascii=False)
    if "enum" in prop:
        text += " one of " + "|".join(_value(v) for v in prop["enum"])
    if "default" in prop:
        text += " = " + _value(prop["default"])
    extra = {k: v for k, v in prop.items() if k not in _OWN_KEYS}
    if prop.get("type") not in ("array", "object"):  # items/properties only mean something on those
        extra.update({k: prop[k] for k in ("items", "properties", "required") if k in prop})
    elif prop.get("type") == "array" and "items" in prop and not isinstance(prop["items"], dict):
        extra["items"] = prop["items"]  # a tuple schema: no array[T] for it
    elif prop.get("type") == "object" and not prop.get("properties"):
        extra.update({k: prop[k] for k in ("properties", "required") if k in prop})
    if extra:
        text += " " + _json(extra)
    return text


def _type(prop: dict[str, Any]) -> str:
    kind = prop.get("type", "any")
    if isinstance(kind, list):  # a union of types
        return "|".join(str(k) for k in kind)
    if kind == "array" and isinstance(prop.get("items"), dict):
        return f"array[{_type(prop['items'])}]" if _plain(prop["items"]) else f"array[{_json(prop['items'])}]"
    if kind == "object" and prop.get("properties"):
        return "object{" + _arguments(prop) + "}"
    return str(kind)


def _plain(items: dict[str, Any]) -> bool:
    """Items that ``array[T]`` says everything about (a bare type, or an object of such properties)."""
    if set(items) == {"type"} and isinstance(items["type"], str):
        return True
    return items.get("type") == "object" and set(items) <= {"type", "properties", "required"}


def _name(name: str) -> str:
    return name if _BARE.match(name) else json.dumps(name, ensure_ascii=False)


def _value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
