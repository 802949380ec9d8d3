"""Shared quirk primitives of the toolworld families, and the expert-side parsers that undo them.

A family is a few of these quirks around a small domain. Each primitive has a tool side (draw the hidden
convention per variant, apply it inside a tool, word the error that gives it away) and an expert side
(parse the revealing observation). The same trial skill therefore transfers between families:

- ``Template``: an undocumented text format for an argument ('DD.MM.YYYY', '(LON;LAT)'); a wrong value
  raises an error quoting the template, which the expert reads back with ``Template.learn``.
- ``IdFormat``: an id format (prefix, separator, zero padding, case, prefix or suffix style); a bare
  number raises an error quoting an example id, which ``learn_id`` turns into the wanted id.
- silent scales (``draw_factor`` / ``snap``): a number read or reported in a hidden unit; a probe with
  an obvious input (a reference value the question gives, a known distance, an echo of what was done)
  shows the ratio, which ``snap`` rounds to the nearest public candidate.
- ``draw_keys`` / ``pick``: record fields whose names are drawn per variant from public synonyms.
- ``consume``: an action that uses up something in the episode state; there is no undo tool, so only a
  trial (run on the sandbox) is a safe place to find out what the action really does. A refusal names
  what the call needed ("... this needs 360"), which ``needed`` reads back.
- decoys are ordinary tools (a ``ToolSpec`` beside the main one) that return something related but not
  the answer.

``gather`` runs several argument checks and reports every problem in one error, so one trial reveals
all of a call's hidden formats. Every convention a primitive draws is a plain JSON value (``spec()``),
so a variant's ``conv`` stays hashable into a canonical key.

The plumbing around them is declarative: ``draw_names`` draws a variant's tool and argument names,
and ``variant`` builds its tools from one ``ToolSpec`` per role (doc, arguments by logical name,
function), so a family's ``make_variant`` reads as its quirks and a few specs.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from toolmaster.envs.tool import Tool
from toolmaster.worlds.toolworld.common import NameGen, Variant, field_value, infer_id, load_json, schema

# ------------------------------------------------------------------------------------------ plumbing


Choices = Sequence[str] | Sequence[Sequence[str]] | Mapping[bool, Sequence[str]]
"""Names to draw from: one list for every variant, or a (base, evolved) pair / {False: ..., True: ...}."""


def _options(choices: Choices, evolved: bool) -> list[str]:
    """The names of ``choices`` that a base (or evolved) variant draws from."""
    if all(isinstance(choice, str) for choice in choices):
        return list(choices)  # type: ignore[arg-type]
    return list(choices[evolved])  # type: ignore[index]


def draw_names(
    rng: random.Random,
    names: NameGen,
    evolved: bool,
    tools: Mapping[str, Choices],
    args: Mapping[str, Choices],
) -> tuple[dict[str, str], dict[str, str]]:
    """Tool names per role (suffixes under one fresh prefix) and argument names per logical argument.

    Draws in a fixed order: the prefix, each role's name, then each argument's name.
    """
    prefix = names.prefix()
    roles = {role: names.name(prefix, _options(options, evolved)) for role, options in tools.items()}
    params = {logical: rng.choice(_options(options, evolved)) for logical, options in args.items()}
    return roles, params


@dataclass(frozen=True)
class ToolSpec:
    """One tool of a variant before its names are known: a one-line doc, the arguments keyed by
    *logical* name ({logical: (json type, description)}, in schema order) and the function it runs."""

    doc: str
    args: Mapping[str, tuple[Any, str]]
    fn: Callable[..., Any]


def variant(
    family: str,
    evolved: bool,
    roles: Mapping[str, str],
    params: Mapping[str, str],
    conv: dict[str, Any],
    *,
    data: dict[str, Any] | None = None,
    **tools: ToolSpec,
) -> Variant:
    """The variant whose tools are ``tools`` (role -> spec, in suite order), named by ``roles`` and with
    their logical arguments renamed through ``params`` (as ``draw_names`` returns them).

    The variant's per-role argument map (``Variant.params``) is derived from the specs, so it always
    matches the schemas.
    """
    if set(tools) != set(roles):
        raise ValueError(f"{family}: tools for roles {sorted(tools)}, names for roles {sorted(roles)}")
    built = [
        Tool(
            roles[role],
            spec.doc,
            schema({params[logical]: typed for logical, typed in spec.args.items()}),
            spec.fn,
            family=family,
        )
        for role, spec in tools.items()
    ]
    return Variant(
        family=family,
        key=family + ("~evolved" if evolved else ""),
        evolved=evolved,
        tools=built,
        roles=dict(roles),
        params={role: {logical: params[logical] for logical in spec.args} for role, spec in tools.items()},
        conv=conv,
        data={} if data is None else data,
    )


def gather(*checks: Callable[[], Any]) -> list[Any]:
    """Run every check; raise one ValueError naming all failures, else return the checks' values."""
    values, problems = [], []
    for check in checks:
        try:
            values.append(check())
        except (ValueError, LookupError) as exc:
            problems.append(str(exc.args[0]) if exc.args else type(exc).__name__)
    if problems:
        raise ValueError("; ".join(problems))
    return values


# ------------------------------------------------------------------------- undocumented text format
class Template:
    """A text format of a few values: literal text around upper-case tokens ('DD.MM.YYYY').

    ``tokens`` maps each token to the regular expression of its value; ``render`` substitutes already
    formatted strings, ``parse`` returns the token values of a matching text (or None).
    """

    def __init__(self, text: str, tokens: Mapping[str, str]) -> None:
        self.text = text
        self.tokens = dict(tokens)
        order = sorted(self.tokens, key=len, reverse=True)
        self._split = re.compile("(" + "|".join(re.escape(token) for token in order) + ")")
        parts = self._split.split(text)
        self.fields = [part for part in parts if part in self.tokens]
        regex = "".join(
            f"(?P<{part}>{self.tokens[part]})" if part in self.tokens else re.escape(part) for part in parts
        )
        self._regex = re.compile(regex)

    def render(self, **values: str) -> str:
        return "".join(values[part] if part in self.tokens else part for part in self._split.split(self.text))

    def parse(self, text: Any) -> dict[str, str] | None:
        match = self._regex.fullmatch(str(text).strip())
        return match.groupdict() if match else None

    def read(self, arg: str, value: Any) -> dict[str, str]:
        """The token values of ``value``, or a ValueError that quotes the template."""
        parsed = self.parse(value)
        if parsed is None:
            raise ValueError(f"bad {arg} {value!r}; expected '{self.text}'")
        return parsed

    @classmethod
    def learn(cls, observation: str, tokens: Mapping[str, str]) -> Template | None:
        """Expert side: the template an error quoted ("expected 'DD.MM.YYYY'"), if any."""
        for text in re.findall(r"expected '([^']*)'", observation or ""):
            if any(token in text for token in tokens):
                return cls(text, tokens)
        return None


# --------------------------------------------------------------------------------------- id formats
@dataclass(frozen=True)
class IdFormat:
    """An id format: 'SKU-0042' (prefix style) or '0042-WH' (suffix style); case and padding drawn."""

    tag: str
    sep: str
    width: int
    suffix: bool
    lower: bool

    EXAMPLE = 7  # the example number errors show: small, so the zero padding is visible

    @classmethod
    def draw(cls, rng: random.Random, tags: Sequence[str], suffix: bool) -> IdFormat:
        return cls(
            tag=rng.choice(list(tags)),
            sep=rng.choice(("-", "_", "#", ":", "")),
            width=rng.choice((0, 3, 4, 5)),
            suffix=suffix,
            lower=rng.random() < 0.3,
        )

    def spec(self) -> dict[str, Any]:
        return asdict(self)

    def render(self, number: int) -> str:
        tag = self.tag.lower() if self.lower else self.tag
        digits = f"{number:0{self.width}d}"
        return f"{digits}{self.sep}{tag}" if self.suffix else f"{tag}{self.sep}{digits}"

    def parse(self, text: Any) -> int | None:
        match = re.fullmatch(r"\D*(\d+)\D*", str(text).strip())
        if match is None or self.render(int(match.group(1))) != str(text).strip():
            return None
        return int(match.group(1))

    def read(self, noun: str, value: Any) -> int:
        """The number of a well-formed id, or a LookupError that shows an example id."""
        number = self.parse(value)
        if number is None:
            raise LookupError(f"no {noun} {str(value)!r}; ids look like '{self.render(self.EXAMPLE)}'")
        return number


def learn_id(observation: str, number: int) -> str | None:
    """Expert side: the id of ``number`` in the format of the example an error showed (or None)."""
    match = re.search(r"look like '([^']*)'", observation or "")
    return infer_id(match.group(1), number) if match else None


# ------------------------------------------------------------------------------------- silent scales
def draw_factor(rng: random.Random, candidates: Sequence[float]) -> float:
    return rng.choice(list(candidates))


def snap(observed: float, expected: float, candidates: Sequence[float]) -> float:
    """Expert side: the public candidate factor nearest (in log space) to ``observed / expected``."""
    if not expected or not observed or observed / expected <= 0:
        return 1.0
    ratio = observed / expected
    return min(candidates, key=lambda c: abs(math.log(c) - math.log(ratio)))


def echoed_amount(text: Any) -> tuple[float, str] | None:
    """Expert side: (number, unit) from an echo like '90 min' or '2.5 kg' (None when absent)."""
    match = re.fullmatch(r"\s*([-+]?\d+(?:\.\d+)?)\s*([A-Za-z]+)\s*", str(text))
    return (float(match.group(1)), match.group(2)) if match else None


# ------------------------------------------------------------------------------------ renamed fields
def draw_keys(rng: random.Random, synonyms: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Record field names per logical field, drawn from public synonym lists."""
    return {logical: rng.choice(list(options)) for logical, options in synonyms.items()}


def pick(observation: str, synonyms: Sequence[str]) -> Any:
    """Expert side: the value of whichever synonym the JSON record of ``observation`` uses."""
    return field_value(load_json(observation), *synonyms)


# ------------------------------------------------------------------------------- irreversible state
def consume(pool: dict[str, Any], key: str, amount: float, noun: str) -> float:
    """Take ``amount`` of ``pool[key]`` for good (no undo); refuse, naming the need, when short."""
    have = pool[key]
    if amount > have:
        raise ValueError(f"only {have:g} {noun} left; this needs {amount:g}")
    pool[key] = have - amount
    return pool[key]


def needed(observation: str) -> float | None:
    """Expert side: what a refused ``consume`` said the call needed ("... this needs 360")."""
    match = re.search(r"this needs ([-+]?\d+(?:\.\d+)?)", observation or "")
    return float(match.group(1)) if match else None


__all__ = [
    "Choices",
    "IdFormat",
    "Template",
    "ToolSpec",
    "consume",
    "draw_factor",
    "draw_keys",
    "draw_names",
    "echoed_amount",
    "gather",
    "learn_id",
    "needed",
    "pick",
    "snap",
    "variant",
]
