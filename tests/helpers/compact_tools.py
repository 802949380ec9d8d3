"""Parse a compact tool signature line back into the JSON schema it was rendered from (round-trip tests).

The grammar is the one ``toolmaster.protocol.tool_rendering`` documents:
``name(arg[?]: type ["description"] [one of v|v] [= default] [{extra json}], ...) [{extra json}] - description``.
"""

from __future__ import annotations

import json
import re
from typing import Any

_NAME = re.compile(r'"(?:[^"\\]|\\.)*"|[A-Za-z_][A-Za-z0-9_.\-]*')
_TYPE_WORD = re.compile(r"[A-Za-z_|]+")


class _Reader:
    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def peek(self, token: str) -> bool:
        return self.text.startswith(token, self.pos)

    def take(self, token: str) -> None:
        if not self.peek(token):
            raise ValueError(f"expected {token!r} at {self.pos}: {self.text[self.pos : self.pos + 30]!r}")
        self.pos += len(token)

    def name(self) -> str:
        match = _NAME.match(self.text, self.pos)
        if not match:
            raise ValueError(f"expected a name at {self.pos}: {self.text[self.pos : self.pos + 30]!r}")
        self.pos = match.end()
        token = match.group()
        return json.loads(token) if token.startswith('"') else token

    def json_value(self) -> Any:
        value, end = json.JSONDecoder().raw_decode(self.text, self.pos)
        self.pos = end
        return value

    def type_(self) -> dict[str, Any]:
        match = _TYPE_WORD.match(self.text, self.pos)
        if not match:
            raise ValueError(f"expected a type at {self.pos}")
        self.pos = match.end()
        word = match.group()
        if "|" in word:
            return {"type": word.split("|")}
        prop: dict[str, Any] = {} if word == "any" else {"type": word}
        if word == "array" and self.peek("["):
            self.take("[")
            prop["items"] = self.json_value() if self.peek("{") else self.type_()
            self.take("]")
        elif word == "object" and self.peek("{"):
            self.take("{")
            prop.update(self.arguments("}"))
            self.take("}")
        return prop

    def arguments(self, close: str) -> dict[str, Any]:
        properties: dict[str, Any] = {}
        required: list[str] = []
        while not self.peek(close):
            name = self.name()
            optional = self.peek("?")
            if optional:
                self.take("?")
            self.take(": ")
            prop = self.type_()
            if self.peek(' "'):
                self.take(" ")
                prop["description"] = self.json_value()
            if self.peek(" one of "):
                self.take(" one of ")
                values = [self.json_value()]
                while self.peek("|"):
                    self.take("|")
                    values.append(self.json_value())
                prop["enum"] = values
            if self.peek(" = "):
                self.take(" = ")
                prop["default"] = self.json_value()
            if self.peek(" {"):
                self.take(" ")
                prop.update(self.json_value())
            properties[name] = prop
            if not optional:
                required.append(name)
            if self.peek(", "):
                self.take(", ")
        return {"type": "object", "properties": properties, "required": required}


def parse_compact(line: str) -> dict[str, Any]:
    """The tool schema ``compact_signature`` rendered as ``line`` (tool description whitespace-normalised)."""
    reader = _Reader(line)
    name = reader.name()
    reader.take("(")
    parameters = reader.arguments(")")
    reader.take(")")
    if reader.peek(" {"):
        reader.take(" ")
        parameters.update(reader.json_value())
    schema: dict[str, Any] = {"name": name, "parameters": parameters}
    if reader.peek(" - "):
        reader.take(" - ")
        schema["description"] = line[reader.pos :]
        reader.pos = len(line)
    if reader.pos != len(line):
        raise ValueError(f"trailing text at {reader.pos}: {line[reader.pos :]!r}")
    return schema


def normalised(schema: dict[str, Any]) -> dict[str, Any]:
    """What a compact line keeps of a schema: empty descriptions dropped, whitespace in the tool's collapsed,
    ``required`` in property order, ``type: object`` on the parameters."""

    def prop(p: Any) -> Any:
        if not isinstance(p, dict):
            return p
        out = {k: v for k, v in p.items() if not (k == "description" and v in (None, ""))}
        if isinstance(out.get("items"), dict):
            out["items"] = prop(out["items"])
        if out.get("type") == "object" and out.get("properties"):
            out.update(params(out))
        return out

    def params(p: dict[str, Any]) -> dict[str, Any]:
        properties = {
            name: prop(v) if isinstance(v, dict) else {} for name, v in (p.get("properties") or {}).items()
        }
        required = [name for name in properties if name in set(p.get("required") or [])]
        extra = {k: v for k, v in p.items() if k not in {"type", "properties", "required"}}
        return {"type": "object", "properties": properties, "required": required, **extra}

    out: dict[str, Any] = {"name": schema["name"], "parameters": params(schema.get("parameters") or {})}
    description = " ".join(str(schema.get("description") or "").split())
    if description:
        out["description"] = description
    return out
