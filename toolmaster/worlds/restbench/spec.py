"""An OpenAPI spec (RestBench's ``specs/tmdb_oas.json``) -> one tool schema per GET endpoint.

Each operation of ``paths`` becomes an endpoint named ``get_<path>`` (``GET /movie/{movie_id}/credits`` ->
``get_movie_movie_id_credits``, see ``tool_name``): its arguments are the operation's path and query
parameters (path-level ``parameters`` merged in, ``$ref``s into the spec resolved), typed from each parameter's
``schema.type`` (Swagger 2's ``type`` too), path parameters required, query parameters required when the spec
says so. The description starts with the endpoint itself (``GET /movie/{movie_id}/credits``), then the
operation's summary or description. Only GET operations are built (all 54 of TMDB's are GET; RestBench's
Spotify split, whose PUT / POST / DELETE change an account, is not supported). ``servers[0].url`` is the
default base URL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolmaster.errors import DataError
from toolmaster.worlds.files import read_json

JSON_TYPES = ("string", "integer", "number", "boolean", "array", "object")
METHODS = ("get",)


def tool_name(method: str, path: str) -> str:
    """``GET /movie/{movie_id}/credits`` -> ``get_movie_movie_id_credits``."""
    slug = re.sub(r"[^0-9A-Za-z]+", "_", path).strip("_")
    return f"{method.lower()}_{slug}" if slug else method.lower()


def endpoint_key(text: str) -> tuple[str, str] | None:
    """``" GET /search/movie "`` -> ``("GET", "/search/movie")`` (None when it is not METHOD PATH)."""
    parts = text.split()
    if len(parts) != 2 or not parts[1].startswith("/"):
        return None
    return parts[0].upper(), parts[1]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments
    path_params: tuple[str, ...]
    query_params: tuple[str, ...]

    @property
    def name(self) -> str:
        return tool_name(self.method, self.path)


def _resolve(node: Any, spec: dict[str, Any], where: str) -> Any:
    if isinstance(node, dict) and "$ref" in node:
        ref = str(node["$ref"])
        if not ref.startswith("#/"):
            raise DataError(f"{where}: only local $refs (#/...) are supported, got {ref!r}")
        target: Any = spec
        for part in ref[2:].split("/"):
            if not isinstance(target, dict) or part not in target:
                raise DataError(f"{where}: $ref {ref!r} points nowhere")
            target = target[part]
        return _resolve(target, spec, where)
    return node


def _parameter(raw: Any, spec: dict[str, Any], where: str) -> tuple[str, str, bool, dict[str, Any]]:
    param = _resolve(raw, spec, where)
    if not isinstance(param, dict) or "name" not in param or "in" not in param:
        raise DataError(f"{where}: a parameter needs 'name' and 'in'")
    schema = _resolve(param.get("schema") or {}, spec, where)
    kind = schema.get("type", param.get("type", "string"))
    prop: dict[str, Any] = {"type": kind if kind in JSON_TYPES else "string"}
    if param.get("description"):
        prop["description"] = " ".join(str(param["description"]).split())[:200]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        prop["enum"] = list(schema["enum"])
    required = param["in"] == "path" or bool(param.get("required"))
    return str(param["name"]), str(param["in"]), required, prop


def _endpoint(
    method: str, path: str, operation: dict[str, Any], shared: list[Any], spec: dict, limit: int
) -> Endpoint:
    where = f"spec paths.{path}.{method}"
    properties: dict[str, Any] = {}
    required: list[str] = []
    path_params: list[str] = []
    query_params: list[str] = []
    for raw in [*shared, *(operation.get("parameters") or [])]:
        name, place, needed, prop = _parameter(raw, spec, where)
        if place not in ("path", "query"):
            continue  # headers and cookies (the token) are the client's, not the model's
        properties[name] = prop
        (path_params if place == "path" else query_params).append(name)
        if needed and name not in required:
            required.append(name)
    missing = [p for p in re.findall(r"\{([^}]+)\}", path) if p not in path_params]
    for name in missing:  # a path template variable the spec forgot to declare
        properties[name] = {"type": "string"}
        path_params.append(name)
        required.append(name)
    about = " ".join(str(operation.get("summary") or operation.get("description") or "").split())
    description = f"{method.upper()} {path}" + (f": {about}" if about else "")
    parameters: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        parameters["required"] = required
    return Endpoint(
        method.upper(),
        path,
        description[:limit],
        parameters,
        tuple(dict.fromkeys(path_params)),
        tuple(dict.fromkeys(query_params)),
    )


def load_spec(path: Path, max_description_chars: int = 300) -> tuple[str | None, list[Endpoint]]:
    """(the spec's first server URL or None, its GET endpoints in file order)."""
    spec = read_json(path)
    if not isinstance(spec, dict) or not isinstance(spec.get("paths"), dict):
        raise DataError(f"{path}: an OpenAPI spec is a JSON object with 'paths'")
    endpoints: list[Endpoint] = []
    names: dict[str, str] = {}
    for route, item in spec["paths"].items():
        if not isinstance(item, dict):
            raise DataError(f"{path}: paths.{route} must be a mapping of methods")
        shared = item.get("parameters") or []
        for method, operation in item.items():
            if method.lower() not in METHODS or not isinstance(operation, dict):
                continue
            endpoint = _endpoint(method.lower(), route, operation, shared, spec, max_description_chars)
            if endpoint.name in names:
                raise DataError(
                    f"{path}: {route} and {names[endpoint.name]} both become tool {endpoint.name!r}"
                )
            names[endpoint.name] = route
            endpoints.append(endpoint)
    if not endpoints:
        raise DataError(f"{path}: no GET operations under 'paths'")
    servers = spec.get("servers") or []
    base = servers[0].get("url") if servers and isinstance(servers[0], dict) else None
    return (str(base) if base else None), endpoints
