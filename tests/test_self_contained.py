"""The repository stands on its own: no file points outside it, and every docs reference resolves.

A fresh clone has no notes beside the checkout and no build machine's folders, so a tracked file
that names either sends a reader nowhere. Facts the code relies on live in ``docs/`` (see
docs/protocols/README.md); code cites them as ``docs/<page>.md#<section>``, and this test checks
that each cited page exists and each cited section is a heading of that page.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Built from pieces so that this file does not match its own patterns.
NOTE_FILES = tuple(name + ".md" for name in ("PROTOCOLS", "MEASUREMENT", "DESIGN", "STYLE"))
OUTSIDE_PATTERNS = (
    re.compile(re.escape(".." + "/shared")),
    re.compile(re.escape("/" + "work" + "/")),
    re.compile(r"/" + "home" + r"/[A-Za-z0-9_.-]+/"),
    re.compile(r"/" + "Users" + r"/[A-Za-z0-9_.-]+/"),
    re.compile(r"/" + "root" + r"/"),
    re.compile(r"[A-Za-z]:\\" + "Users" + r"\\"),
)
#: ``docs/<page>.md`` with an optional ``#anchor``, not part of a longer path (``tasmota/docs/``)
DOCS_REFERENCE = re.compile(r"(?<![\w/.-])(docs/[\w./-]+?\.md)(?:#([\w-]+))?")
#: relative Markdown links inside docs/: ``[text](page.md#anchor)``
MARKDOWN_LINK = re.compile(r"\]\(([^)\s:]+?\.md)(?:#([\w-]+))?\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def tracked_files() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the tracked files are unknown")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [ROOT / name for name in out.decode().split("\0") if name]


def text_of(path: Path) -> str | None:
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return None  # binary (an image): scanned as bytes by the caller
    return data.decode("utf-8", errors="replace")


def slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces -> -."""
    text = re.sub(r"[`*_]", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(h) for h in HEADING.findall(page.read_text(encoding="utf-8"))}


def test_slug_matches_github_anchors():
    assert slug("Reply address at 0xF8") == "reply-address-at-0xf8"
    assert slug("Status 8 and Status 10") == "status-8-and-status-10"
    assert slug("Yokogawa WT300E family (WT310, WT310E)") == "yokogawa-wt300e-family-wt310-wt310e"


def test_no_tracked_file_points_outside_the_repository():
    files = tracked_files()
    basenames = {p.name for p in files}
    offending = []
    for path in files:
        text = text_of(path)
        if text is None:
            blob = path.read_bytes()
            hits = [p.pattern for p in OUTSIDE_PATTERNS if p.search(blob.decode("latin-1"))]
        else:
            hits = [p.pattern for p in OUTSIDE_PATTERNS if p.search(text)]
            hits += [n for n in NOTE_FILES if n in text and n not in basenames]
        if hits:
            offending.append(f"{path.relative_to(ROOT)}: {', '.join(hits)}")
    assert not offending, ("these files point outside the repository (move the facts into docs/ "
                           "and cite docs/<page>.md#<section>):\n" + "\n".join(offending))


def test_every_cited_docs_page_and_section_exists():
    files = tracked_files()
    references = 0
    missing = []
    for path in files:
        text = text_of(path)
        if text is None:
            continue
        found = [(ROOT / page, anchor) for page, anchor in DOCS_REFERENCE.findall(text)]
        if path.suffix == ".md":
            found += [((path.parent / page).resolve(), anchor)
                      for page, anchor in MARKDOWN_LINK.findall(text)
                      if not page.startswith(("http", "/"))]
        for page, anchor in found:
            references += 1
            shown = page.relative_to(ROOT) if page.is_relative_to(ROOT) else page
            where = f"{path.relative_to(ROOT)} cites {shown}"
            if not page.is_file():
                missing.append(f"{where}: no such page")
            elif anchor and anchor not in anchors(page):
                missing.append(f"{where}#{anchor}: no such heading")
    assert references > 20, f"only {references} docs references found: is the pattern still right?"
    assert not missing, "dangling docs references:\n" + "\n".join(missing)


def test_each_protocol_page_names_its_sources():
    pages = sorted((ROOT / "docs" / "protocols").glob("*.md"))
    assert len(pages) >= 9
    unsourced = [p.name for p in pages if p.name != "README.md"
                 and not re.search(r"^Sources", p.read_text(encoding="utf-8"), re.MULTILINE)]
    assert not unsourced, f"protocol pages without a Sources paragraph: {unsourced}"
