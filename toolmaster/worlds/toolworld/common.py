"""Shared pieces of the toolworld families: seeded names and phrasing, the records a family builds
(``Variant``, ``TaskDraft``, ``FamilySpec``, whose ``feedback`` names the quirks a task depends on and how
much their feedback reveals, see ``feedback.py``), the convention keys that split a family's hidden conventions
between train and test, observation parsing, and the ``Play`` helper the scripted policies use to issue
trial / execution / answer steps.

A family's ``make_variant`` draws one point of its convention space: every hidden rule goes into
``Variant.conv`` (small discrete choices: separators, units, scales, id formats, field names), seeded
incidental data that is not a convention (exchange rates, tariffs, the example an error quotes) into
``Variant.data``. ``Variant.convention`` is the canonical key of ``conv`` (stable JSON); the builder keys
the train / test_seen split on it (``held_out``), so a test convention never occurs in train.

Information discipline of the scripted policies: they may read a task's ``metadata["intent"]`` (the
structured content of the query, i.e. what any reader of the query knows) and a variant's ``roles`` and
``params`` (which tool is which and its argument names, i.e. what the tool schemas show). They never
read ``Variant.conv``, ``task.gold_calls``, ``task.answer`` or ``metadata["convention"]``: every
correction the expert makes is parsed from an observation it actually received.
"""

from __future__ import annotations

import json
import math
import random
import re
import zlib
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

from toolmaster.envs.environment import OVER_BUDGET, CallRecord
from toolmaster.envs.task import Task
from toolmaster.envs.tool import Tool
from toolmaster.protocol.phases import ActionKind
from toolmaster.worlds.scripted import Step

PolicyGen = Generator[Step, CallRecord, None]

# --------------------------------------------------------------------------------------------- names
_CONSONANTS = "bcdfghjklmnpqrstvwxz"
_VOWELS = "aeiouy"
_SHAPES = ("cc", "cvc", "cvcc", "ccvc", "vcc", "cvcv")


class NameGen:
    """Seeded obscure tool names ("qv_mtrx", "zorb_cv"), unique across one world."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()
        self.prefixes: set[str] = set()

    def tools(self, *suffix_sets: Sequence[str]) -> list[str]:
        """Names for one variant's tools under one fresh prefix, one per set of suffixes."""
        prefix = self.prefix()
        return [self.name(prefix, suffixes) for suffixes in suffix_sets]

    def prefix(self) -> str:
        while True:
            shape = self.rng.choice(_SHAPES)
            text = "".join(self.rng.choice(_CONSONANTS if ch == "c" else _VOWELS) for ch in shape)
            if text not in self.prefixes:
                self.prefixes.add(text)
                return text

    def name(self, prefix: str, suffixes: Sequence[str]) -> str:
        for suffix in self.rng.sample(list(suffixes), len(suffixes)):
            candidate = f"{prefix}_{suffix}"
            if candidate not in self.used:
                self.used.add(candidate)
                return candidate
        # every suggested suffix is taken under this prefix: add a seeded letter
        while True:
            candidate = f"{prefix}_{self.rng.choice(list(suffixes))}{self.rng.choice(_CONSONANTS)}"
            if candidate not in self.used:
                self.used.add(candidate)
                return candidate


def say(rng: random.Random, options: Sequence[str], **values: Any) -> str:
    """One of several phrasings, chosen by ``rng`` and filled with ``values``."""
    return rng.choice(list(options)).format(**values)


def fmt_num(x: float, digits: int = 4) -> str:
    """A number as a short exact-looking string: 3.0 -> '3', 2.50000 -> '2.5', -0.0 -> '0'."""
    value = round(float(x), digits)
    if value == 0:
        return "0"
    text = f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return text


def schema(props: dict[str, tuple[Any, str]], required: Sequence[str] | None = None) -> dict[str, Any]:
    """A JSON-schema object from {name: (type, description)}; every parameter is required by default."""
    return {
        "type": "object",
        "properties": {name: {"type": typ, "description": desc} for name, (typ, desc) in props.items()},
        "required": list(props) if required is None else list(required),
    }


# ------------------------------------------------------------------------------------------ records
@dataclass
class Variant:
    """One concrete version of a family: its tools, what the docs say they are for, and hidden rules."""

    family: str
    key: str  # "convert" / "convert~evolved"; the builder appends the task id under per-task variants
    evolved: bool
    tools: list[Tool]
    roles: dict[str, str]  # role ("main", "search", "decoy", ...) -> tool name; visible via the docs
    params: dict[str, dict[str, str]]  # role -> {logical argument -> schema argument name}
    conv: dict[str, Any] = field(default_factory=dict)  # hidden conventions; policies never read this
    data: dict[str, Any] = field(default_factory=dict)  # seeded incidentals (rates, examples); not keyed

    @property
    def convention(self) -> str:
        """The canonical key of the hidden convention: ``conv`` as stable JSON (sorted keys)."""
        return convention_key(self.conv)

    @property
    def tool_names(self) -> list[str]:
        return [tool.name for tool in self.tools]

    def args(self, role: str, **logical: Any) -> dict[str, Any]:
        """Arguments for the tool of ``role`` keyed by its real (schema) parameter names."""
        names = self.params[role]
        return {names[key]: value for key, value in logical.items()}

    def param_type(self, role: str, logical: str) -> Any:
        """The JSON type the schema declares for an argument (visible to any reader of the docs)."""
        tool = next(t for t in self.tools if t.name == self.roles[role])
        return tool.parameters["properties"][self.params[role][logical]].get("type")


def convention_key(conv: dict[str, Any]) -> str:
    return json.dumps(conv, sort_keys=True, separators=(",", ":"), default=list)


HELD_OUT_BUCKETS = 3  # one bucket in three of a seen family's conventions is reserved for test_seen


def held_out(family: str, convention: str) -> bool:
    """Whether a (family, convention) belongs to test_seen rather than train: a stable hash (crc32, never
    ``hash()``), the same for every seed, so the partition is fixed and disjoint by construction."""
    return zlib.crc32(f"{family}|{convention}".encode()) % HELD_OUT_BUCKETS == 0


@dataclass
class TaskDraft:
    """What a family's task generator returns; the builder adds id, split, tools and metadata."""

    kind: str
    query: str
    answer: str
    gold_calls: list[dict[str, Any]]
    intent: dict[str, Any]
    convention: str
    initial_state: dict[str, Any] = field(default_factory=dict)
    dedupe: str = ""  # what the builder compares to refuse a repeated draw; the query when empty


@dataclass(frozen=True)
class FamilySpec:
    """A family module's entry points."""

    name: str
    short: str
    seen: bool
    make_variant: Callable[[random.Random, NameGen, bool], Variant]
    make_task: Callable[[Variant, random.Random], TaskDraft]
    expert: Callable[[Variant, Task, random.Random], PolicyGen]
    docs_only: Callable[[Variant, Task, random.Random], PolicyGen]
    feedback: Callable[[Variant, str], dict[str, str]]
    """{quirk: feedback level} of the quirks a task of (variant, kind) depends on (``feedback.py``)."""


def gold(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


# -------------------------------------------------------------------------------- observation parsing
_NUM = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def load_json(text: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


def first_number(text: str) -> float | None:
    match = _NUM.search(text or "")
    return float(match.group()) if match else None


def quoted(text: str) -> list[str]:
    """Every single-quoted string in ``text`` (as Python's repr writes them in error messages)."""
    return re.findall(r"'([^']*)'", text or "")


def field_value(record: Any, *names: str) -> Any:
    """The first of ``names`` present in a JSON object (None when absent or not an object)."""
    if isinstance(record, dict):
        for name in names:
            if name in record:
                return record[name]
    return None


def nearest_power_of_ten(ratio: float) -> float:
    if ratio <= 0 or not math.isfinite(ratio):
        return 1.0
    return 10.0 ** round(math.log10(ratio))


def infer_id(example: str, number: int) -> str | None:
    """Build the id of ``number`` in the format of ``example`` ('EMP-0007' -> 'EMP-0042')."""
    match = re.fullmatch(r"(\D*)(\d+)(\D*)", example)
    if not match:
        return None
    pre, digits, post = match.groups()
    width = len(digits) if digits.startswith("0") else 0
    return f"{pre}{number:0{width}d}{post}"


def refused(record: CallRecord | None) -> bool:
    return record is not None and record.error == OVER_BUDGET


# ------------------------------------------------------------------------------------- policy helper
class Play:
    """Step factory for a scripted policy; remembers whether the episode still accepts trial calls.

    Use inside a policy generator: ``rec = yield from play.trial(...)`` returns the CallRecord, or None
    when trials are refused (budget 0 or spent), after which the policy falls back to execution calls.
    """

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.trials_ok = True

    def say(self, options: Sequence[str], **values: Any) -> str:
        return say(self.rng, options, **values)

    def trial(
        self, name: str, arguments: dict[str, Any], thought: str
    ) -> Generator[Step, CallRecord, CallRecord | None]:
        if not self.trials_ok:
            return None
        record = yield Step(ActionKind.TRIAL, name, dict(arguments), thought=thought)
        if refused(record):
            self.trials_ok = False
            return None
        return record

    def call(
        self, name: str, arguments: dict[str, Any], thought: str
    ) -> Generator[Step, CallRecord, CallRecord]:
        record = yield Step(ActionKind.CALL, name, dict(arguments), thought=thought)
        return record

    def call_as_documented(
        self, variant: Variant, role: str = "main", *, retry: bool = False, **logical: Any
    ) -> Generator[Step, CallRecord, CallRecord]:
        """Call the tool of ``role`` with ``logical`` arguments as its description reads (the docs-only
        baseline); ``retry`` words the thought as another attempt after an error."""
        name = variant.roles[role]
        thought = self.say(DOCS_RETRY) if retry else self.say(DOCS_CALL, tool=name)
        return (yield from self.call(name, variant.args(role, **logical), thought))

    def answer(self, text: str | None, thought: str = "") -> Step:
        if text is None:
            text = "unknown"
            thought = thought or self.say(NO_ANSWER)
        return Step(ActionKind.ANSWER, answer=text, thought=thought or self.say(ANSWER_THOUGHTS, answer=text))


ANSWER_THOUGHTS = (
    "The result gives the answer: {answer}.",
    "Done; the answer is {answer}.",
    "That settles it: {answer}.",
    "I have what I need: {answer}.",
)
NO_ANSWER = (
    "The tool keeps rejecting my calls; I cannot get a result.",
    "No usable result came back, so I have to give up.",
    "I could not make the tool work.",
)
DOCS_RETRY = (
    "That failed; try another wording the description allows.",
    "An error. The doc gives nothing more, so try a variant.",
    "It did not work; one more attempt from the description.",
)
DOCS_CALL = (
    "Call {tool} as its description reads.",
    "{tool} matches the task; call it directly.",
    "Use {tool} with the values from the question.",
)
