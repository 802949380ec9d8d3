"""Feedback levels: how much a toolworld task's tool feedback reveals about what its docs leave out.

Every hidden convention a task's gold path depends on (a *quirk*) is revealed at one of three levels,
from least to most revealing:

- ``silent``: nothing is said. The call succeeds with a wrong result (a silent scale or unit, a stride,
  a lot size); only a trial with an input whose answer is known (a probe, or an echo of what was done)
  shows the convention, and the caller has to infer it from the numbers.
- ``example``: an error quotes an example the caller must adapt: an id in the wanted format for another
  number ("ids look like 'EMP-0007'"), a spec for another unit pair ("expected like 'KG2LB'"), a census
  field for another year.
- ``names_fix``: an error states the exact fix: the template ("expected 'DD.MM.YYYY'"), every accepted
  value ("use one of C2F, C2K, ..."; "fields: mayor, est, alt_ft"), the rule ("a=0, b=1, ..."), or the
  very value wanted ("did you mean 'EMP-0042'?").

A task's level is the least revealing level among its gold path's quirks (``silent < example <
names_fix``): the task is solved only if that quirk is found too. A task that depends on no quirk (the
documented reading happens to be right, e.g. a clock whose step is the minute the question asks in) is
``none``, a control for the others. Conventions that the execution result itself shows, so that reading
the answer needs no trial (renamed result fields, a unit printed beside a number, a timestamp layout), are
not quirks here; a number in a hidden unit is (``silent``), wherever it sits.

Each family states its quirks declaratively: a table quirk -> level (``FEEDBACK``) and a function of the
variant and the task kind that names the quirks a task's gold path depends on (``FamilySpec.feedback``).
``build_toolworld`` records them in ``Task.metadata["feedback"]`` (the level) and
``Task.metadata["feedback_quirks"]`` ({quirk: level}).

Per family (seen families first; "unless ..." names the draws where the documented reading happens to be
right, so the quirk is not on the gold path):

- convert (convert): spec, an example spec (example); evolved: a template (names_fix).
  Level example; evolved names_fix.
- currency (exchange): scale, amounts or results in cents / mills (silent); evolved: numeric codes, listed
  (names_fix). Level silent.
- dates (shift_days / shift_hours / shift_minutes): step, the offset's step (silent) unless it is the
  asked unit. Level silent or none.
- directory (by_number): id; the seen directory names the id, "did you mean 'EMP-0042'?" (names_fix), the
  evolved one shows an example id (example). (by_name): the search returns the id, as documented.
  Level names_fix, evolved example; by_name none.
- orders (units_left / units_total / packs_left): qty, packs or units (silent) unless what the question
  counts; total, in cents (silent; totals only). Level silent or none.
- cipher (encode / decode): stride (silent) unless 1 (evolved only); evolved letter keys, spelled out
  (names_fix). Level silent; evolved with stride 1 names_fix.
- shipping (weight_kg / weight_g): unit, the weight's unit (silent) unless the asked one. Silent or none.
- inventory (reserve): id, an example id (example); lot, qty counts lots (silent) unless 1.
  Level silent or example.
- recipes (cook): batch, servings count batches (silent) unless 1; evolved: recipe ids, an example id
  (example). Level silent, or none (seen) / example (evolved).
- sensors (reading): id (example); factor, readings scaled (silent) unless x1; evolved: the hour template
  (names_fix). Level silent or example.
- tickets (log_minutes / log_hours): id (example); unit, the time's unit (silent) unless the asked one.
  Level silent or example.
- temperature (F_to_C, ...): code, every code listed (names_fix); factor, tenths / hundredths (silent).
  Level silent.
- cityfacts (population / mayor / founded / elevation): field, every field listed (names_fix) unless the
  natural word is the key (mayor always, population sometimes). Level names_fix or none.
  (census): census, the field of another census year ('pop_1950' for 1990) (example). Level example.
- clock (hours / minutes): step, delta's step (silent) unless the asked unit. Level silent or none.
- geo (distance): point, template quoted (names_fix); unit, the distance unit (silent) unless km.
  Level silent or names_fix.
- booking (book): day, template quoted (names_fix); slot, span's slot length (silent) unless 60 minutes.
  Level silent or names_fix.

Two things were changed so that every level occurs in the seen and the unseen families, and so in every
split (and in the first 60 tasks of each test split: checked for seeds 0-39; the first 30 miss a level
in some split for 13 of those 40 seeds). Seen ``names_fix``: no non-evolved seen family named a fix, so
the seen directory's error now suggests the id ("did you mean 'EMP-0042'?") where it showed an example
id (its tasks are unchanged; the evolved directory still shows an example). Unseen ``example``: no
unseen family quoted an example, so ``cityfacts`` has a ``census`` kind (a third of its tasks, in draw
slots that were a second 'founded' and a second 'elevation'); its content is drawn from a stream of its
own (``substream``) and it is deduplicated as its slot's old task, so every other task of every split
keeps its query, answer, tools and state (cityfacts' ``conv_key`` now includes the census field's form).
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from typing import Any

SILENT = "silent"
EXAMPLE = "example"
NAMES_FIX = "names_fix"
NONE = "none"
LEVELS: tuple[str, ...] = (SILENT, EXAMPLE, NAMES_FIX)  # least to most revealing
ALL_LEVELS: tuple[str, ...] = (*LEVELS, NONE)  # every value of Task.metadata["feedback"]


def quirks(table: Mapping[str, str], *names: str) -> dict[str, str]:
    """{quirk: level} for the quirks ``names`` of a family's ``FEEDBACK`` table (a KeyError names a typo)."""
    return {name: table[name] for name in names}


def task_level(task_quirks: Mapping[str, str]) -> str:
    """The least revealing level among ``task_quirks``; ``none`` when the task depends on no quirk."""
    levels = list(task_quirks.values())
    unknown = set(levels) - set(LEVELS)
    if unknown:
        raise ValueError(f"unknown feedback level(s) {sorted(unknown)}; levels are {', '.join(LEVELS)}")
    return min(levels, key=LEVELS.index) if levels else NONE


def substream(*parts: Any) -> random.Random:
    """A private seeded stream keyed on values already drawn (JSON of ``parts``, never ``hash()``).

    For content added to a family after its draws were fixed: drawing it here instead of from the
    world's streams leaves every other draw of the world, and so every other task, unchanged.
    """
    return random.Random("toolworld:" + json.dumps(parts, sort_keys=True, default=str))


__all__ = [
    "ALL_LEVELS",
    "EXAMPLE",
    "LEVELS",
    "NAMES_FIX",
    "NONE",
    "SILENT",
    "quirks",
    "substream",
    "task_level",
]
