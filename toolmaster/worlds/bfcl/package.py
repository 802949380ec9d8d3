"""Access to the installed ``bfcl-eval`` package: its data files and its executable API classes.

Nothing of BFCL is copied into this repository; every file is read from the installed package at run time.
The package is found with ``importlib.util.find_spec`` (importing ``bfcl_eval`` itself runs nothing), and
only the modules that are needed are imported: the API classes (standard library plus ``mpmath``) and the
multi-turn checker. ``BFCL_PROJECT_ROOT`` is pointed at a temporary directory before any BFCL import, so a
BFCL module that creates its result folders writes there and never into site-packages.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import json
import os
import tempfile
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from toolmaster.errors import ConfigError

PACKAGE = "bfcl_eval"
VERSION = "2026.3.23"
CATEGORIES = ("base", "miss_func", "miss_param", "long_context")
# The eight executable classes of the multi-turn categories, with their function-doc and module files.
CLASS_FILES = {
    "GorillaFileSystem": "gorilla_file_system",
    "MathAPI": "math_api",
    "MessageAPI": "message_api",
    "TwitterAPI": "posting_api",
    "TicketAPI": "ticket_api",
    "TradingBot": "trading_bot",
    "TravelAPI": "travel_booking",
    "VehicleControlAPI": "vehicle_control",
}
STATELESS = ("MathAPI",)  # BFCL loads no scenario into these
SOURCE_PACKAGE = f"{PACKAGE}.eval_checker.multi_turn_eval.func_source_code"


def _isolate_writes() -> None:
    os.environ.setdefault("BFCL_PROJECT_ROOT", str(Path(tempfile.gettempdir()) / "toolmaster-bfcl"))


@cache
def package_dir() -> Path:
    """The installed ``bfcl_eval`` directory; one-line ConfigError when the package is missing."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"tools=bfcl needs the PyPI package bfcl-eval=={VERSION}: run `make bfcl` "
            f"(pip install --no-deps bfcl-eval=={VERSION} mpmath)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def data_dir() -> Path:
    return package_dir() / "data"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise ConfigError(f"bfcl-eval data file {path} is missing (expected bfcl-eval=={VERSION})")
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def load_entries(category: str) -> list[dict[str, Any]]:
    """The entries of ``multi_turn_<category>`` and their ground truth (``entry["ground_truth"]``)."""
    if category not in CATEGORIES:
        raise ConfigError(
            f"unknown BFCL multi-turn category {category!r}; available: {', '.join(CATEGORIES)}"
        )
    name = f"BFCL_v4_multi_turn_{category}.json"
    entries = read_jsonl(data_dir() / name)
    answers = {a["id"]: a["ground_truth"] for a in read_jsonl(data_dir() / "possible_answer" / name)}
    for entry in entries:
        entry["ground_truth"] = answers[entry["id"]]
    return entries


@cache
def function_docs(class_name: str) -> tuple[dict[str, Any], ...]:
    """BFCL's function docs of one class (name, description, parameters in BFCL's type names)."""
    path = data_dir() / "multi_turn_func_doc" / f"{CLASS_FILES[class_name]}.json"
    return tuple(read_jsonl(path))


def import_module(name: str) -> ModuleType:
    _isolate_writes()
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {name} from bfcl-eval: {exc} (run `make bfcl`)") from None


@cache
def api_class(class_name: str) -> type:
    if class_name not in CLASS_FILES:
        raise ConfigError(f"unknown BFCL class {class_name!r}; available: {', '.join(CLASS_FILES)}")
    return getattr(import_module(f"{SOURCE_PACKAGE}.{CLASS_FILES[class_name]}"), class_name)


def new_instance(class_name: str, config: dict[str, Any], long_context: bool) -> Any:
    """A class instance in its scenario's initial state, loaded the way BFCL's checker loads it."""
    instance = api_class(class_name)()
    if class_name not in STATELESS:
        instance._load_scenario(copy.deepcopy(config.get(class_name, {})), long_context=long_context)
    return instance
