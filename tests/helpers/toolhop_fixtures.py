"""ToolHop-shaped fixtures: records in the released file's layout, with real Python functions.

``write_toolhop(path)`` writes a JSON array of six records (``id``, ``question``, ``answer``, ``sub_task``,
``tools`` as a mapping sub-question -> schema, ``functions`` as source strings, some with an ``# Example usage``
tail as in the release). ``GOLD`` holds, per record id, the calls that solve it (ToolHop itself ships no
arguments; these are for replays). Several tool names recur across records (as ToolHop's generated names do), so
a held-out record can be ``test_seen``. ``write_hostile_toolhop(path, marker)`` writes one record whose
functions exit, hang, return or print huge output, and write ``marker`` when their source runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ARCHITECT = '''
def architect_finder(building: str) -> dict:
    """Finds who designed a building."""
    known = {"glass library": "Ada Lind", "tide tower": "Omar Vell"}
    if not isinstance(building, str) or not building.strip():
        return {"error": "building must be a non-empty string"}
    name = known.get(building.strip().lower())
    if name is None:
        return {"error": f"no architect on record for {building!r}; known: {sorted(known)}"}
    return {"building": building, "architect": name}

# Example usage
print(architect_finder("Glass Library"))
'''

FIRST_NAME = '''
def first_name_extractor(full_name: str) -> str:
    """The first name of a full name."""
    parts = full_name.split()
    if not parts:
        raise ValueError("full_name is empty")
    return parts[0]
'''

LETTERS = '''
def letter_counter(word: str, exclude_ends: bool = False) -> int:
    """Counts the letters of a word, optionally without its first and last letter."""
    letters = [c for c in word if c.isalpha()]
    return max(0, len(letters) - 2) if exclude_ends else len(letters)
'''

AUTHOR = '''
BOOKS = {"quiet rivers": "Mara Quell", "salt roads": "Ivo Brandt"}

def book_author_lookup(title: str) -> str:
    """The author of a book."""
    return BOOKS.get(title.lower(), "unknown title")
'''

BIRTH = '''
import datetime

def birth_year_finder(person: str) -> dict:
    """The birth year of a person."""
    years = {"Mara Quell": 1962, "Ivo Brandt": 1950}
    if person not in years:
        return {"error": "person not found", "known": sorted(years)}
    return {"person": person, "birth_year": years[person], "age_now": datetime.date.today().year - years[person]}
'''

MOUNTAIN = '''
def mountain_country_locator(mountain: str) -> str:
    """The country a mountain is in."""
    return {"mount orel": "Kestria", "mount pell": "Varnia"}.get(mountain.lower(), "unknown")
'''

CAPITAL = '''
def capital_finder(country: str) -> str:
    """The capital of a country."""
    return {"Kestria": "Velia", "Varnia": "Tolm"}[country]
'''

DAYS = '''
from datetime import date

def date_difference(start: str, end: str) -> int:
    """Whole days from start to end (ISO dates)."""
    return (date.fromisoformat(end) - date.fromisoformat(start)).days
'''

REVERSE = '''
def string_reverser(text: str) -> str:
    """The text backwards."""
    return text[::-1]
'''


def _schema(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "description": description,
        "parameters": {"type": "object", "properties": properties, "required": required},
    }


S = {"type": "string"}
TOOLS = {
    "architect_finder": _schema(
        "architect_finder", "Finds who designed a building.", {"building": S}, ["building"]
    ),
    "first_name_extractor": _schema(
        "first_name_extractor", "Extracts the first name.", {"full_name": S}, ["full_name"]
    ),
    "letter_counter": _schema(
        "letter_counter",
        "Counts letters of a word.",
        {"word": S, "exclude_ends": {"type": "boolean"}},
        ["word"],
    ),
    "book_author_lookup": _schema("book_author_lookup", "Finds a book's author.", {"title": S}, ["title"]),
    "birth_year_finder": _schema("birth_year_finder", "Finds a birth year.", {"person": S}, ["person"]),
    "mountain_country_locator": _schema(
        "mountain_country_locator", "Locates a mountain.", {"mountain": S}, ["mountain"]
    ),
    "capital_finder": _schema("capital_finder", "Finds a capital city.", {"country": S}, ["country"]),
    "date_difference": _schema(
        "date_difference", "Days between two dates.", {"start": S, "end": S}, ["start", "end"]
    ),
    "string_reverser": _schema("string_reverser", "Reverses text.", {"text": S}, ["text"]),
}
SOURCES = {
    "architect_finder": ARCHITECT,
    "first_name_extractor": FIRST_NAME,
    "letter_counter": LETTERS,
    "book_author_lookup": AUTHOR,
    "birth_year_finder": BIRTH,
    "mountain_country_locator": MOUNTAIN,
    "capital_finder": CAPITAL,
    "date_difference": DAYS,
    "string_reverser": REVERSE,
}


def _record(rid: int, question: str, answer: str, hops: list[tuple[str, str, str]]) -> dict[str, Any]:
    """``hops``: (sub-question, its answer, the tool that answers it)."""
    return {
        "id": rid,
        "question": question,
        "answer": answer,
        "sub_task": {q: a for q, a, _ in hops},
        "tools": {q: TOOLS[tool] for q, _, tool in hops},
        "functions": [SOURCES[tool] for _, _, tool in hops],
    }


RECORDS = [
    _record(
        0,
        "How many letters are in the first name of the architect of the Glass Library?",
        "3",
        [
            ("Who designed the Glass Library?", "Ada Lind", "architect_finder"),
            ("What is the first name of Ada Lind?", "Ada", "first_name_extractor"),
            ("How many letters are in Ada?", "3", "letter_counter"),
        ],
    ),
    _record(
        1,
        "In which year was the author of Quiet Rivers born?",
        "1962",
        [
            ("Who wrote Quiet Rivers?", "Mara Quell", "book_author_lookup"),
            ("When was Mara Quell born?", "1962", "birth_year_finder"),
        ],
    ),
    _record(
        2,
        "What is the capital of the country where Mount Orel is?",
        "Velia",
        [
            ("Where is Mount Orel?", "Kestria", "mountain_country_locator"),
            ("What is the capital of Kestria?", "Velia", "capital_finder"),
        ],
    ),
    _record(
        3,
        "How many days passed from 2020-01-01 to 2020-04-10?",
        "100",
        [("How many days from 2020-01-01 to 2020-04-10?", "100", "date_difference")],
    ),
    _record(
        4,
        "What is the first name of the author of Salt Roads, written backwards?",
        "ovI",
        [
            ("Who wrote Salt Roads?", "Ivo Brandt", "book_author_lookup"),
            ("What is the first name of Ivo Brandt?", "Ivo", "first_name_extractor"),
            ("What is Ivo backwards?", "ovI", "string_reverser"),
        ],
    ),
    _record(
        5,
        "How many letters, without the first and the last, are in the capital of the country of Mount Pell?",
        "2",
        [
            ("Where is Mount Pell?", "Varnia", "mountain_country_locator"),
            ("What is the capital of Varnia?", "Tolm", "capital_finder"),
            ("How many letters without the ends are in Tolm?", "2", "letter_counter"),
        ],
    ),
]

GOLD: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "0": [
        ("architect_finder", {"building": "Glass Library"}),
        ("first_name_extractor", {"full_name": "Ada Lind"}),
        ("letter_counter", {"word": "Ada"}),
    ],
    "1": [("book_author_lookup", {"title": "Quiet Rivers"}), ("birth_year_finder", {"person": "Mara Quell"})],
    "2": [
        ("mountain_country_locator", {"mountain": "Mount Orel"}),
        ("capital_finder", {"country": "Kestria"}),
    ],
    "3": [("date_difference", {"start": "2020-01-01", "end": "2020-04-10"})],
    "4": [
        ("book_author_lookup", {"title": "Salt Roads"}),
        ("first_name_extractor", {"full_name": "Ivo Brandt"}),
        ("string_reverser", {"text": "Ivo"}),
    ],
    "5": [
        ("mountain_country_locator", {"mountain": "Mount Pell"}),
        ("capital_finder", {"country": "Varnia"}),
        ("letter_counter", {"word": "Tolm", "exclude_ends": True}),
    ],
}


def write_toolhop(path: Path, records: list[dict[str, Any]] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(RECORDS if records is None else records, indent=1), encoding="utf-8")
    return path


HOSTILE_NAMES = ("exit_now", "hang", "flood", "shout", "marked")


def hostile_record(marker: Path) -> dict[str, Any]:
    """One record whose tools break their process in one way each; ``marked`` writes ``marker`` when run."""
    sources = {
        "exit_now": "import os\n\ndef exit_now() -> str:\n    os._exit(3)\n",
        "hang": "def hang() -> str:\n    while True:\n        pass\n",
        "flood": "def flood() -> str:\n    return 'x' * 5_000_000\n",
        "shout": "def shout() -> str:\n    for _ in range(20_000):\n        print('y' * 500)\n    return 'quiet now'\n",
        "marked": f"open({str(marker)!r}, 'w').write('ran')\n\ndef marked() -> str:\n    return 'marked'\n",
    }
    return {
        "id": 99,
        "question": "Break things.",
        "answer": "nothing",
        "sub_task": {f"step {name}": "" for name in sources},
        "tools": {
            f"step {name}": {
                "name": name,
                "description": f"{name}.",
                "parameters": {"type": "object", "properties": {}},
            }
            for name in sources
        },
        "functions": list(sources.values()),
    }


def write_hostile_toolhop(path: Path, marker: Path) -> Path:
    return write_toolhop(path, [*RECORDS, hostile_record(marker)])
