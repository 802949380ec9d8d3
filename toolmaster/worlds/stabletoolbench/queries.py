"""StableToolBench's query files -> the APIs each query offers, found in the user's ToolEnv2404 tool files.

A query file (``solvable_queries/test_instruction/<group>.json``: G1_instruction, G1_category, G1_tool,
G2_instruction, G2_category, G3_instruction) is a JSON array of queries::

    {"query": "...", "query_id": 588,
     "api_list": [{"category_name": "Data", "tool_name": "TheClique", "api_name": "Transfermarkt search", ...}],
     "relevant APIs": [["TheClique", "Transfermarkt search"], ...]}

Each query offers every API of its ``api_list``, looked up in ``<tools_dir>/<category>/<standard tool>.json``
(the folder also tried with the category standardized). As in ToolBench's runner, a query naming a tool that
is not in the tool folder is skipped (counted in ``skipped``); an API missing from its tool file is left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolmaster.errors import DataError
from toolmaster.worlds.files import read_json
from toolmaster.worlds.stabletoolbench.names import api_name, standardize, standardize_category


@dataclass(frozen=True)
class OfferedApi:
    category: str  # the category folder's name
    standard_tool: str  # the tool file's name
    tool: dict[str, Any] = field(repr=False)  # the tool file
    api: dict[str, Any] = field(repr=False)  # its api_list entry

    @property
    def key(self) -> str:
        """The suite key: one tool per (category, tool, API), shared by every query that offers it."""
        return f"{self.category}/{self.standard_tool}/{api_name(str(self.api.get('name', '')))}"


@dataclass(frozen=True)
class Query:
    group: str
    query_id: str
    text: str
    apis: tuple[OfferedApi, ...]
    relevant: tuple[tuple[str, str], ...]  # (tool name, api name) pairs as the file lists them


class ToolFiles:
    """Reads (once) the tool files of a ToolEnv2404 ``tools`` folder."""

    def __init__(self, tools_dir: Path) -> None:
        self.tools_dir = tools_dir
        self.cache: dict[Path, dict[str, Any] | None] = {}

    def find(self, category: str, tool_name: str) -> tuple[str, str, dict[str, Any]] | None:
        """(category folder, standard tool name, tool file) for a query's tool, or None when absent."""
        stem = standardize(tool_name)
        for folder in dict.fromkeys([category, standardize_category(category)]):
            path = self.tools_dir / folder / f"{stem}.json"
            if path not in self.cache:
                self.cache[path] = self._read(path) if path.is_file() else None
            if self.cache[path] is not None:
                return folder, stem, self.cache[path]  # type: ignore[return-value]
        return None

    @staticmethod
    def _read(path: Path) -> dict[str, Any]:
        data = read_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("api_list"), list):
            raise DataError(
                f"{path}: a ToolEnv2404 tool file is a JSON object with 'tool_name' and 'api_list'"
            )
        return data


def _api_entry(tool: dict[str, Any], name: str) -> dict[str, Any] | None:
    wanted = api_name(name)
    for api in tool["api_list"]:
        if isinstance(api, dict) and api_name(str(api.get("name", ""))) == wanted:
            return api
    return None


def read_queries(path: Path, group: str, tools: ToolFiles) -> tuple[list[Query], int]:
    """The queries of one query file whose tools are all present, and how many were skipped."""
    data = read_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: a StableToolBench query file is a JSON array of queries")
    queries: list[Query] = []
    skipped = 0
    for i, raw in enumerate(data):
        where = f"{path}: query [{i}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("query"), str) or "api_list" not in raw:
            raise DataError(f"{where}: a query needs 'query' (a string) and 'api_list'")
        apis: dict[str, OfferedApi] = {}
        complete = True
        for item in raw["api_list"]:
            if not isinstance(item, dict) or not {"category_name", "tool_name", "api_name"} <= set(item):
                raise DataError(f"{where}: every api_list entry needs category_name, tool_name and api_name")
            found = tools.find(str(item["category_name"]), str(item["tool_name"]))
            if found is None:
                complete = False
                break
            folder, stem, tool = found
            api = _api_entry(tool, str(item["api_name"]))
            if api is not None:
                offered = OfferedApi(folder, stem, tool, api)
                apis.setdefault(offered.key, offered)
        if not complete or not apis:
            skipped += 1
            continue
        relevant = tuple(
            (str(pair[0]), str(pair[1])) for pair in raw.get("relevant APIs", []) if len(pair) >= 2
        )
        queries.append(
            Query(group, str(raw.get("query_id", i)), raw["query"], tuple(apis.values()), relevant)
        )
    return queries, skipped
