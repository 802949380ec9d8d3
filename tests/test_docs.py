"""The documentation holds together: every relative link of the README, ``docs/`` and the experiments' records
resolves (the file exists, and a ``#fragment`` names a heading of it), and the README stays a front page."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(
    [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "experiments").rglob("*.md")],
    key=lambda p: str(p),
)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def prose(path: Path) -> list[str]:
    """The lines of a markdown file outside fenced code blocks."""
    lines, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens (repeats get -1, -2, ...)."""
    found: set[str] = set()
    for line in prose(path):
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not heading:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


def relative_links(path: Path) -> list[str]:
    return [
        target
        for line in prose(path)
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line))
        if not re.match(r"[a-z][a-z0-9+.-]*:", target)  # http:, https:, mailto: ...
    ]


def tracked_docs() -> list[Path]:
    """The pages under ``docs/`` that git tracks (all of them outside a checkout)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "docs"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return sorted((ROOT / "docs").glob("*.md"))
    return sorted(ROOT / name for name in listed if name.endswith(".md") and "/" not in name[len("docs/") :])


def test_the_pages_are_found():
    names = {str(p.relative_to(ROOT)) for p in PAGES}
    assert {"README.md", "docs/setup.md", "docs/results.md", "experiments/paper_small/README.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path):
    broken = []
    for target in relative_links(page):
        file_part, _, fragment = target.partition("#")
        linked = (page.parent / file_part).resolve() if file_part else page
        if not linked.exists():
            broken.append(f"{target} (no such file)")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            broken.append(f"{target} (no heading #{fragment} in {linked.relative_to(ROOT)})")
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"


def test_the_readme_is_a_front_page_that_links_every_docs_page():
    readme = ROOT / "README.md"
    assert readme.stat().st_size <= 12 * 1024
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in relative_links(readme)}
    unlinked = [p.name for p in tracked_docs() if p.resolve() not in linked]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"
    text = readme.read_text(encoding="utf-8")
    for needle in ("make demo", "make test", "## Config groups", "## Measured results", "experiments/"):
        assert needle in text
