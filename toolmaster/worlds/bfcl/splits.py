"""Scenario splits: entry i of the four multi-turn categories is one scenario; a split holds whole scenarios.

A scenario's classes decide its split: only seen classes -> ``train`` or ``test_seen`` (a seeded draw of
``n_test_seen`` scenarios), only unseen classes -> ``test_unseen`` (classes never seen in training), one class
of each -> ``test_mixed``. Any other mix (none in bfcl-eval 2026.3.23) is left out. With the default classes
(seen GorillaFileSystem, MathAPI, TwitterAPI, VehicleControlAPI) the 200 scenarios split 76 / 80 / 44.
"""

from __future__ import annotations

import random

TRAIN, TEST_SEEN, TEST_UNSEEN, TEST_MIXED = "train", "test_seen", "test_unseen", "test_mixed"
SPLITS = (TRAIN, TEST_SEEN, TEST_UNSEEN, TEST_MIXED)


def scenario_splits(
    scenario_classes: list[list[str]], seen: set[str], unseen: set[str], n_test_seen: int, seed: int
) -> dict[int, str]:
    """Scenario index -> split name (scenarios fitting no split are absent)."""
    out: dict[int, str] = {}
    seen_only: list[int] = []
    for index, classes in enumerate(scenario_classes):
        n_seen = sum(c in seen for c in classes)
        n_unseen = sum(c in unseen for c in classes)
        if n_seen + n_unseen != len(classes):
            continue
        if n_unseen == 0:
            seen_only.append(index)
        elif n_seen == 0:
            out[index] = TEST_UNSEEN
        elif n_seen == 1 and n_unseen == 1:
            out[index] = TEST_MIXED
    held_out = set(random.Random(seed).sample(seen_only, min(n_test_seen, len(seen_only))))
    for index in seen_only:
        out[index] = TEST_SEEN if index in held_out else TRAIN
    return out
