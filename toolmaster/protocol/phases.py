"""The protocol's vocabulary as typed string enums: episode phases and the kinds of model actions.

``Phase`` is where a tool call runs: ``trial`` (exploratory, on a sandbox copy of the state, limited by the
trial budget) or ``execution`` (on the real state). ``ActionKind`` is what one model turn is: a ``trial`` call,
an execution ``call``, an ``answer``, or ``invalid`` markup. Both are ``StrEnum``s, so members compare equal to
their strings (``Phase.TRIAL == "trial"``), serialise as those strings in JSON, and code or data that still
uses plain strings keeps working.
"""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    """Where a tool call runs: ``trial`` (sandbox copy of the state) or ``execution`` (the real state)."""

    TRIAL = "trial"
    EXECUTION = "execution"


class ActionKind(StrEnum):
    """What one model turn is: a ``trial`` call, an execution ``call``, an ``answer`` or invalid markup."""

    TRIAL = "trial"
    CALL = "call"
    ANSWER = "answer"
    INVALID = "invalid"

    @property
    def phase(self) -> Phase | None:
        """The phase a call of this kind runs in (None for answers and invalid turns)."""
        return {ActionKind.TRIAL: Phase.TRIAL, ActionKind.CALL: Phase.EXECUTION}.get(self)
