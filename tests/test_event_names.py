"""Event names live in one place, ``hwval.runfile.schema.EventName``: a quoted event name used as
one anywhere else in the package (``e.name == "mark"``, ``events.append((t, "pulse_start", ...))``)
is a second copy that a rename would miss. This test reads every module's syntax tree and names
each such use. Quoted names that are not event names are left alone: detail keys
(``detail["mark"]``, ``detail.get("mark")``, ``{"mark": ...}``), keyword values (``status="error"``),
and comparisons with anything but a ``name`` (``"error" in result``, ``key != "mark"``, a phase's
``kind == "mark"``)."""

from __future__ import annotations

import ast
from pathlib import Path

from hwval.runfile.schema import EVENT_NAMES

PACKAGE = Path(__file__).resolve().parents[1] / "hwval"
SCHEMA = PACKAGE / "runfile" / "schema.py"
KEY_METHODS = {"get", "pop", "setdefault"}


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _is_name(node: ast.AST) -> bool:
    return ((isinstance(node, ast.Attribute) and node.attr == "name")
            or (isinstance(node, ast.Name) and node.id == "name"))


def _not_an_event_name(const: ast.Constant, parents: dict[ast.AST, ast.AST]) -> bool:
    node, parent = const, parents.get(const)
    while isinstance(parent, (ast.Tuple, ast.List, ast.Set)):  # ("a", "b") in a comparison
        node, parent = parent, parents.get(parent)
    if isinstance(parent, ast.Subscript) and parent.slice is node:
        return True  # detail["mark"]
    if isinstance(parent, ast.Dict) and node in parent.keys:
        return True  # {"mark": name}
    if isinstance(parent, ast.Call) and parent.args[:1] == [node] and isinstance(parent.func, ast.Attribute) \
            and parent.func.attr in KEY_METHODS:
        return True  # detail.get("mark")
    if isinstance(parent, ast.keyword) and parent.arg != "name":
        return True  # status="error"
    if isinstance(parent, ast.Compare):
        # an event's name is compared with e.name, or a variable called name; "error" in result,
        # key != "mark" and row.kind == "mark" (a phase's kind) are other vocabularies
        return not any(_is_name(side) for side in (parent.left, *parent.comparators) if side is not node)
    if isinstance(parent, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in parent.targets):
        return True  # hwval.__all__ names the function mark()
    return False


def quoted_event_names(text: str) -> list[str]:
    """``"LINE: 'name'"`` for each quoted event name used as one in the module ``text``."""
    tree = ast.parse(text)
    parents = _parents(tree)
    nodes = sorted((n for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value in EVENT_NAMES
                    and not _not_an_event_name(n, parents)), key=lambda n: (n.lineno, n.col_offset))
    return [f"{n.lineno}: {n.value!r}" for n in nodes]


def test_the_guard_finds_quoted_event_names():
    sample = ('if e.name == "mark" or ev.name in ("gap_start", "gap_end"):\n'
              '    events.append((t, "pulse_start", {"mark": d["mark"], "s": d.get("signal")}))\n'
              'put(t, name="error", status="error")\nok = "error" in result or row.kind == "mark"\n'
              'rest = {k: v for k, v in d.items() if k != "mark"}\nfirst(events, "workload_start")\n'
              'if "reconnect" == name: pass\n')
    assert quoted_event_names(sample) == ["1: 'mark'", "1: 'gap_start'", "1: 'gap_end'", "2: 'pulse_start'",
                                          "3: 'error'", "6: 'workload_start'", "7: 'reconnect'"]


def test_no_module_but_the_schema_quotes_an_event_name():
    modules = sorted(p for p in PACKAGE.rglob("*.py") if p != SCHEMA)
    assert len(modules) > 50
    found = [f"{path.relative_to(PACKAGE.parent)}:{hit}" for path in modules
             for hit in quoted_event_names(path.read_text(encoding="utf-8"))]
    assert not found, ("use hwval.runfile.schema.EventName instead of these quoted event names:\n"
                       + "\n".join(found))
