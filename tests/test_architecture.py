"""Import rules the architecture depends on, checked on the source with ``ast`` (no module is imported).

- ``toolmaster.algorithms`` is pure tensor math: it imports torch, the standard library and itself only;
- ``toolmaster.training`` (Lightning plumbing shared by the stages) never imports a stage;
- a stage never imports another stage, ``toolmaster.run`` or ``toolmaster.__main__``;
- only ``toolmaster.run`` imports ``toolmaster.stages`` (besides the stages themselves and the benchmarks in
  ``toolmaster.bench``, which measure the stages' modules); nothing but ``__main__`` imports ``toolmaster.run``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "toolmaster"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every module a file imports (top level, in functions or under TYPE_CHECKING), relative ones resolved."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return found


MODULES = {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def stage_of(name: str) -> str | None:
    """``toolmaster.stages.sft.run`` -> ``toolmaster.stages.sft``; None outside the stages."""
    parts = name.split(".")
    return ".".join(parts[:3]) if len(parts) >= 3 and parts[:2] == ["toolmaster", "stages"] else None


def test_the_rules_see_the_package():
    assert "toolmaster.stages.sft.run" in MODULES and "toolmaster.algorithms.losses" in MODULES
    assert "toolmaster.stages.sft.data" in MODULES["toolmaster.stages.sft.run"]
    assert any(within(i, "torch") for i in MODULES["toolmaster.algorithms.losses"])


@pytest.mark.parametrize("module", [m for m in MODULES if within(m, "toolmaster.algorithms")])
def test_algorithms_import_only_torch_and_the_standard_library(module):
    allowed = set(sys.stdlib_module_names) | {"torch", "__future__"}
    bad = {
        i
        for i in MODULES[module]
        if i.split(".")[0] not in allowed and not within(i, "toolmaster.algorithms")
    }
    assert not bad, f"{module} imports {sorted(bad)}"


@pytest.mark.parametrize("module", [m for m in MODULES if within(m, "toolmaster.training")])
def test_training_never_imports_a_stage(module):
    bad = {i for i in MODULES[module] if within(i, "toolmaster.stages")}
    assert not bad, f"{module} imports {sorted(bad)}"


@pytest.mark.parametrize("module", [m for m in MODULES if stage_of(m)])
def test_stages_import_neither_each_other_nor_the_entry_points(module):
    own = stage_of(module)
    other_stages = {i for i in MODULES[module] if stage_of(i) not in (None, own)}
    entry_points = {
        i for i in MODULES[module] if within(i, "toolmaster.run") or within(i, "toolmaster.__main__")
    }
    assert not other_stages, f"{module} imports another stage: {sorted(other_stages)}"
    assert not entry_points, f"{module} imports an entry point: {sorted(entry_points)}"


def test_only_run_imports_the_stages_and_only_main_imports_run():
    outside = {
        m: sorted(i for i in imports if within(i, "toolmaster.stages"))
        for m, imports in MODULES.items()
        if not within(m, "toolmaster.stages") and not within(m, "toolmaster.bench") and m != "toolmaster.run"
    }
    assert not {m: i for m, i in outside.items() if i}, "only toolmaster.run may import toolmaster.stages"
    importers = {m for m, imports in MODULES.items() if any(within(i, "toolmaster.run") for i in imports)}
    assert importers <= {"toolmaster.__main__"}, importers
    assert not {m for m, imports in MODULES.items() if "toolmaster.__main__" in imports}


def test_the_builders_import_no_stage():
    assert not {i for i in MODULES["toolmaster.build"] if within(i, "toolmaster.stages")}
