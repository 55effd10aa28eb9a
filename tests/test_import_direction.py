"""Data flows one way: no module under ``hwval/sources`` imports ``hwval.emulators`` (the drivers
must work, and ship, without the emulators; the bench model both use is ``hwval.benchmodel``)."""

from __future__ import annotations

import ast
from pathlib import Path

import hwval

SOURCES = Path(hwval.__file__).parent / "sources"


def imported_modules(text: str, package: str) -> set[str]:
    """Every module ``text`` (a module of ``package``) imports, as absolute names."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def package_of(path: Path) -> str:
    return ".".join(path.relative_to(SOURCES.parent.parent).with_suffix("").parts[:-1])


def into_emulators(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m == "hwval.emulators" or m.startswith("hwval.emulators."))


def test_the_check_finds_absolute_relative_and_lazy_imports():
    text = ("import hwval.emulators.pty\n"
            "from ...emulators import tasmota\n"
            "def later():\n    from hwval.emulators.wt300 import Wt300\n")
    assert into_emulators(imported_modules(text, "hwval.sources.serial")) == [
        "hwval.emulators", "hwval.emulators.pty", "hwval.emulators.tasmota", "hwval.emulators.wt300",
        "hwval.emulators.wt300.Wt300"]
    assert into_emulators(imported_modules("from hwval.benchmodel import Bench\n", "hwval.sources")) == []


def test_no_source_module_imports_the_emulators():
    files = sorted(SOURCES.rglob("*.py"))
    assert len(files) > 20  # the walk found the drivers
    offenders = {str(f.relative_to(SOURCES)): into_emulators(imported_modules(f.read_text(), package_of(f)))
                 for f in files}
    assert {f: m for f, m in offenders.items() if m} == {}
