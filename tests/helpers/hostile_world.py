"""A custom world of hostile tools, written the way users write tools (module globals, plain functions).

``write_hostile_world(dir)`` writes ``hostile_tools.py``, ``hostile.yaml`` and a JSON-array tasks file
(tasks without ``id``: the loader derives them) and returns the spec path. Each "reserve" task's gold calls
run every breaking tool, then the real ``reserve``, whose gold ticket R001 holds only when no other episode's
reservation leaked into this one. The library tools keep their
records in a module global, so a trial ``reserve`` that leaked would change what execution and later
episodes see. Every other tool breaks the process in one way: ``os._exit``, ``sys.exit``,
``KeyboardInterrupt``, a segfault, an unprintable return value, a busy loop, ``os.chdir``, an environment
variable, a file in the working directory.
"""

from __future__ import annotations

import json
from pathlib import Path

MODULE = '''
"""Hostile tools for the isolation tests."""
import ctypes
import os
import sys

COPIES = {"dune": 2}
TICKETS = []


def holding(title: str) -> int:
    """Copies of a title on the shelf."""
    return COPIES.get(title, 0)


def reserve(title: str) -> str:
    """Reserve a copy; returns the ticket."""
    if COPIES.get(title, 0) <= 0:
        raise ValueError(f"no copy of {title!r} left")
    COPIES[title] -= 1
    TICKETS.append(title)
    return f"R{len(TICKETS):03d}"


def reserve_dry(title: str, phase: str) -> str:
    """Reserve a copy outside the process; trials only say what would happen."""
    if phase == "trial":
        return f"would reserve {title}"
    return f"reserved {title}"


def exit_hard() -> str:
    """Ends its process."""
    os._exit(7)


def exit_soft() -> str:
    """Calls sys.exit."""
    sys.exit(3)


def interrupt() -> str:
    """Raises KeyboardInterrupt."""
    raise KeyboardInterrupt


def segfault() -> str:
    """Reads address 0."""
    return ctypes.string_at(0)


class Ugly:
    def __repr__(self):
        raise RuntimeError("no repr for you")

    __str__ = __repr__


def unprintable() -> dict:
    """Returns something that cannot be printed."""
    return {"value": Ugly()}


def spin(pidfile: str = "") -> str:
    """Never returns (writes its process id to ``pidfile`` first)."""
    if pidfile:
        with open(pidfile, "w") as handle:
            handle.write(str(os.getpid()))
    while True:
        pass


def burn() -> str:
    """Never returns (no timeout of its own: for the CPU limit)."""
    while True:
        pass


def wander() -> str:
    """Changes the working directory."""
    os.chdir("/")
    return os.getcwd()


def where() -> str:
    """The working directory."""
    return os.getcwd()


def set_env(value: str) -> str:
    """Sets an environment variable."""
    os.environ["HOSTILE_FLAG"] = value
    return value


def get_env() -> str:
    """Reads the environment variable."""
    return os.environ.get("HOSTILE_FLAG", "unset")


def write_note(text: str) -> str:
    """Writes a file in the working directory."""
    with open("note.txt", "w") as handle:
        handle.write(text)
    return "ok"


def read_note() -> str:
    """Reads the file back."""
    return open("note.txt").read() if os.path.exists("note.txt") else "missing"


def has_torch() -> bool:
    """Whether torch is imported in the tool's process."""
    return "torch" in sys.modules


def hog() -> int:
    """Allocates a lot of memory."""
    return len(bytearray(2 << 30))
'''

TOOLS = [
    "holding",
    "reserve",
    "reserve_dry",
    "exit_hard",
    "exit_soft",
    "interrupt",
    "segfault",
    "unprintable",
    "spin",
    "burn",
    "wander",
    "where",
    "set_env",
    "get_env",
    "write_note",
    "read_note",
    "has_torch",
    "hog",
]
TIMEOUT_S = 1.0  # the busy loop's timeout
# what each breaking tool becomes (error kind); called with no arguments
HOSTILE = {
    "exit_hard": "tool_exited",
    "exit_soft": "tool_exited",
    "interrupt": "tool_exception",
    "segfault": "tool_crashed",
    "unprintable": "unprintable_result",
    "spin": "timeout",
}


def write_hostile_world(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "hostile_tools.py").write_text(MODULE, encoding="utf-8")
    entries = "\n".join(
        f"  - function: {name}" + (f"\n    timeout_s: {TIMEOUT_S}" if name == "spin" else "")
        for name in TOOLS
    )
    spec = f"name: hostile\nmodule: ./hostile_tools.py\ntools:\n{entries}\ntasks_file: tasks.json\n"
    (directory / "hostile.yaml").write_text(spec, encoding="utf-8")
    hostile = [{"name": name, "arguments": {}} for name in HOSTILE] + [
        {"name": "reserve", "arguments": {"title": "dune"}}
    ]
    tasks = [
        {
            "query": "How many copies of dune are there?",
            "answer": "2",
            "split": split,
            "tool_names": TOOLS,
            "gold_calls": [{"name": "holding", "arguments": {"title": "dune"}}],
        }
        for split in ("train", "test")
    ] + [
        {
            "query": f"Reserve dune ({i}); what is the ticket?",
            "answer": "R001",
            "split": split,
            "tool_names": TOOLS,
            "gold_calls": hostile,
        }
        for i in range(3)
        for split in ("train", "test")
    ]
    (directory / "tasks.json").write_text(json.dumps(tasks, indent=1), encoding="utf-8")
    return directory / "hostile.yaml"
