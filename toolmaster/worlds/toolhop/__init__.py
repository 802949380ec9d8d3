"""``tools=toolhop``: the user's ToolHop file (995 multi-hop queries, each with its own Python tools) as a world.

Built from ``tools.world.path`` (``records.py``; nothing of ToolHop is in this repository). Every query becomes a
task offering that query's tools (3-7, one per hop), filed in the suite as ``<query id>/<tool name>`` because
different queries define different functions under one name; each tool runs its source only in the tool host's
call processes, with the per-call timeout ``tools.timeout_s`` (``functions.py``). Success is ToolHop's own
answer check (``scorer.py``); splits are by query (``splits.py``: train / test_seen / test_unseen, and ``all``
for ToolHop's table). ``metadata.category`` is the number of hops, so eval also reports one row per hop count.

The user turn carries ToolHop's answer-format instructions (dates YYYY-MM-DD, names Firstname Lastname, numbers
as digits), for ToolHop's two tool-use scenarios: ``prompt="mandatory"`` (a tool for every step, the answer
from a tool) or ``"free"``.

Departures from ToolHop's evaluation (docs/benchmarks.md has the full list): the instructions are paraphrased,
not ToolHop's wording (give ``instructions`` with a ``{question}`` placeholder to use any text, the official one
included); the system prompt is this framework's protocol (trial phase, one call per assistant turn, an
``<answer>`` ends the episode) instead of native function calling with parallel calls, so ToolHop's limit of
9 model turns means ``sampler.max_turns=9`` plus the trial budget; tool results are shown as returned (a string
unquoted) rather than JSON-encoded, and errors as this framework's error observations. Arguments are not
type-checked before the call (``strict_types: false``; ToolHop's functions check their own inputs), but unknown
or missing argument names are refused before the function runs.
"""

from __future__ import annotations

from typing import Literal

from toolmaster.envs.task import Task
from toolmaster.envs.tool import Tool, ToolSuite
from toolmaster.errors import ConfigError, DataError
from toolmaster.worlds.base import World
from toolmaster.worlds.files import existing_file
from toolmaster.worlds.toolhop.functions import ToolHopFunction
from toolmaster.worlds.toolhop.records import ToolHopRecord, load_records
from toolmaster.worlds.toolhop.scorer import MATCHES
from toolmaster.worlds.toolhop.splits import split_records

SCORER = "toolmaster.worlds.toolhop.scorer:score"
SOURCE = "bytedance-research/ToolHop on Hugging Face, file data/ToolHop.json"
FORMAT_RULES = (
    "Give a short final answer. Write a date as YYYY-MM-DD, a person's name as Firstname Lastname, and a "
    "number in digits, without words or leading zeros."
)
PROMPTS = {
    "mandatory": (
        "Answer the question with the tools. Use a tool for every step and do not rely on your own knowledge: "
        "the final answer must come from a tool. " + FORMAT_RULES + "\nQuestion: {question}"
    ),
    "free": "Answer the question; you may use the tools. " + FORMAT_RULES + "\nQuestion: {question}",
}


def _template(prompt: str, instructions: str | None) -> str:
    if instructions is not None:
        if "{question}" not in instructions:
            raise ConfigError("tools.world.instructions must contain the placeholder {question}")
        return instructions
    if prompt not in PROMPTS:
        raise ConfigError(f"tools.world.prompt: unknown {prompt!r}; available: {', '.join(PROMPTS)}")
    return PROMPTS[prompt]


def _tools(record: ToolHopRecord, max_result_chars: int) -> dict[str, Tool]:
    """Suite key -> tool, for one record's tool schemas."""
    out = {}
    for schema in record.tools:
        fn = ToolHopFunction(schema["name"], record.sources.get(schema["name"], ()), max_result_chars)
        try:
            tool = Tool(
                schema["name"], schema["description"], dict(schema["parameters"]), fn, family="toolhop"
            )
        except ValueError as exc:
            raise DataError(f"ToolHop record {record.id!r}: {exc}") from None
        out[f"{record.id}/{schema['name']}"] = tool
    return out


def build_toolhop_world(
    path: str,
    prompt: Literal["mandatory", "free"] = "mandatory",
    instructions: str | None = None,
    match: Literal["official", "strict"] = "official",
    test_fraction: float = 0.2,
    split_seed: int = 0,
    max_result_chars: int = 20_000,
) -> World:
    """The ToolHop world of the file at ``path`` (ToolHop.json: a JSON array, or JSONL)."""
    file = existing_file(path, "tools.world.path", "ToolHop.json", f"download it from {SOURCE}")
    template = _template(prompt, instructions)
    if match not in MATCHES:
        raise ConfigError(f"tools.world.match: unknown {match!r}; available: {', '.join(MATCHES)}")
    if max_result_chars < 100:
        raise ConfigError(f"tools.world.max_result_chars must be >= 100, got {max_result_chars}")
    records = load_records(file)
    try:
        by_split = split_records(records, test_fraction, split_seed)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    suite = ToolSuite()
    keys: dict[str, list[str]] = {}
    for record in records:
        tools = _tools(record, max_result_chars)
        suite.tools.update(tools)
        keys[record.id] = list(tools)
    splits: dict[str, list[Task]] = {}
    for split, members in by_split.items():
        splits[split] = [
            Task(
                id=f"toolhop-{record.id}",
                query=template.replace("{question}", record.question),
                answer=record.answer,
                tool_names=keys[record.id],
                split=split,
                family="toolhop",
                metadata={
                    "toolhop_id": record.id,
                    "question": record.question,
                    "sub_task": record.sub_task,
                    "category": f"{len(record.tools)}_hops",
                    "match": match,
                },
                scorer=SCORER,
            )
            for record in members
        ]
    suite.origin = {
        "_target_": "toolmaster.worlds.toolhop.build_toolhop_world",
        "path": str(file),
        "prompt": prompt,
        "instructions": instructions,
        "match": match,
        "test_fraction": test_fraction,
        "split_seed": split_seed,
        "max_result_chars": max_result_chars,
    }
    return World(name="toolhop", suite=suite, splits=splits)
