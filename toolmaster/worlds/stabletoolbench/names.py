"""ToolBench's name normalisation, which StableToolBench's server applies to the names it is sent.

A tool's file in ToolEnv2404 is ``<category>/<standardized tool name>.json``; a function the model calls is
``<api>_for_<tool>`` (the last 64 characters), where ``<api>`` is the standardized API name with Python-ish
keywords renamed (``id`` -> ``is_id``), and parameter names are standardized the same way. Standardizing
replaces every character outside ``a-z A-Z 0-9 _``, ``^`` and the CJK range U+4E00-U+9FA5 by ``_``, collapses
runs of ``_``, lower-cases, trims ``_`` at both ends and prefixes ``get_`` to a leading digit. The server
standardizes again on its side; the rules are idempotent, so both sides agree.
"""

from __future__ import annotations

import re

_OUTSIDE = re.compile(r"[^\u4e00-\u9fa5^a-zA-Z0-9_]")
_RUNS = re.compile(r"_{2,}")
RENAMED = ("from", "class", "return", "false", "true", "id", "and")
MAX_FUNCTION_NAME = 64


def standardize(text: str) -> str:
    name = _RUNS.sub("_", _OUTSIDE.sub("_", text)).lower().strip("_")
    return f"get_{name}" if name[:1].isdigit() else name


def change_name(name: str) -> str:
    return f"is_{name}" if name in RENAMED else name


def api_name(name: str) -> str:
    """The pure API name the server is sent (``api_name`` of its request)."""
    return change_name(standardize(name))


def standardize_category(category: str) -> str:
    """A category as a folder name: spaces, commas and slashes become ``_``, doubled ``_`` collapsed once."""
    return re.sub(r"[ ,/]", "_", category).replace("__", "_")


def function_name(api: str, standard_tool: str) -> str:
    """The name the model calls: ``<pure api>_for_<standard tool>``, its last 64 characters."""
    return f"{api_name(api)}_for_{standard_tool}"[-MAX_FUNCTION_NAME:]
